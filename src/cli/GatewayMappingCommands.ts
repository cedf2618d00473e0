/**
 * The subcommands of `edge-ccm gateway` that change the router: `map` (create or renew a
 * mapping) and `unmap` (delete one), over UPnP IGD, NAT-PMP or PCP.
 */
import { Console, Duration, Effect, Option } from "effect"
import { Command, Flag } from "effect/cli"
import { PortMapper } from "../gateway/PortMapper.ts"
import { against, externalIpMeaning, mapperLayer, orNull, printJson, seconds, usage } from "./gatewayConnection.ts"
import {
  aimedAt,
  connectionFlags,
  duration,
  json,
  nonceFlag,
  portControlFlags,
  portFlag,
  protocol,
  PROTOCOL_NAMES,
  type Via
} from "./gatewayFlags.ts"

/** `gateway map`. */
export const map = Command.make(
  "map",
  {
    ...portControlFlags,
    ...connectionFlags,
    json,
    externalPort: portFlag("external-port", "Port on the gateway's external address"),
    internalPort: portFlag("internal-port", "Port on the internal client"),
    protocol,
    internalClient: Flag.String("internal-client").pipe(
      Flag.withDescription(
        "Address to forward to (default: our own address toward the gateway; NAT-PMP and PCP forward only to it)"
      ),
      Flag.optional
    ),
    description: Flag.String("description").pipe(
      Flag.withDescription("UPnP IGD: mapping description, under 64 bytes (default edge-ccm); NAT-PMP and PCP carry none"),
      Flag.withDefault("edge-ccm")
    ),
    lease: duration(
      "lease",
      "EDGE_CCM_MAPPING_LEASE",
      "1h",
      "Lease of the mapping; 0 asks for a permanent one (NAT-PMP and PCP have none: 2h)"
    ),
    force: Flag.Boolean("force").pipe(
      Flag.withDescription("UPnP IGD: overwrite a mapping of this host held under another description"),
      Flag.withDefault(false)
    ),
    nonce: nonceFlag("PCP: renew the mapping this nonce owns (default: a new nonce, i.e. a new mapping)")
  },
  (flags) =>
    Option.isSome(flags.nonce) && flags.via !== "pcp"
      ? usage("map", `--nonce is PCP's: use it with --via pcp (this is --via ${flags.via})`)
      : against(
        "map",
        mapperLayer(flags),
        Effect.gen(function*() {
          const mapper = yield* PortMapper
          const granted = yield* mapper.map({
            externalPort: flags.externalPort,
            internalPort: flags.internalPort,
            protocol: flags.protocol,
            internalClient: Option.getOrUndefined(flags.internalClient),
            description: flags.description,
            leaseSeconds: Math.round(Duration.toSeconds(flags.lease)),
            force: flags.force,
            nonce: Option.getOrUndefined(flags.nonce)
          })
          const external = yield* mapper.externalAddress
          // NAT-PMP and PCP carry no description: the router holds none to report.
          const description = flags.via === "upnp-igd" ? granted.description : undefined
          if (flags.json) {
            return yield* printJson({
              externalPort: granted.externalPort,
              protocol: granted.protocol,
              internalClient: granted.internalClient,
              internalPort: granted.internalPort,
              description: orNull(description),
              leaseDuration: granted.leaseSeconds,
              externalIp: orNull(external.ip),
              externalIpClass: external.class,
              ...(flags.via === "pcp" ? { nonce: orNull(granted.nonce) } : {})
            })
          }
          const where = `${external.ip ?? "(no external address)"}:${granted.externalPort} -> ` +
            `${granted.internalClient}:${granted.internalPort}`
          if (flags.via === "upnp-igd") {
            yield* Console.log(
              `mapped ${granted.protocol} ${where} ${JSON.stringify(description)} (lease ${seconds(granted.leaseSeconds)})`
            )
          } else {
            const nonce = flags.via === "pcp" && granted.nonce !== undefined ? `, nonce ${granted.nonce}` : ""
            yield* Console.log(
              `mapped ${granted.protocol} ${where} over ${PROTOCOL_NAMES[flags.via]} (lease ${seconds(granted.leaseSeconds)}${nonce})`
            )
            // Neither protocol can read the mapping back: the way to delete it is printed now.
            yield* Console.log(
              `remove with: edge-ccm gateway unmap --via ${flags.via}${aimedAt(flags)} --external-port ${granted.externalPort} ` +
                `--protocol ${granted.protocol} --internal-port ${granted.internalPort}` +
                (flags.via === "pcp" && granted.nonce !== undefined ? ` --nonce ${granted.nonce}` : "")
            )
          }
          if (external.class !== "public") {
            yield* Console.error(`warning: the external address is ${externalIpMeaning(external.class)}`)
          }
        }),
        { suggestOtherProtocols: flags.via === "upnp-igd" }
      )
).pipe(
  Command.withDescription(
    "Create or renew a port mapping (UPnP: refuses to take over another description without --force; PCP: prints the nonce that unmap needs)"
  ),
  Command.withExamples([
    {
      command:
        "edge-ccm gateway map --external-port 8080 --internal-port 30000 --protocol TCP --description kubernetes/default/web/http",
      description: "Forward TCP 8080 to port 30000 of this host"
    },
    {
      command: "edge-ccm gateway map --via pcp --external-port 8080 --internal-port 30000 --protocol TCP --json",
      description: "The same over PCP; the JSON carries the nonce"
    }
  ])
)

/** What NAT-PMP and PCP need to delete a mapping, which UPnP finds by its external port alone. */
const missingForUnmap = (
  via: Via,
  flags: { readonly internalPort: Option.Option<number>; readonly nonce: Option.Option<string> }
): string | undefined => {
  if (via === "upnp-igd") {
    if (Option.isSome(flags.nonce)) return "--nonce is PCP's: use it with --via pcp"
    if (Option.isSome(flags.internalPort)) return "--internal-port is for --via nat-pmp or pcp: UPnP IGD deletes by external port"
    return undefined
  }
  if (via === "nat-pmp" && Option.isSome(flags.nonce)) return "--nonce is PCP's: use it with --via pcp"
  if (via === "pcp" && Option.isNone(flags.nonce)) {
    return "--nonce is required with --via pcp: PCP deletes a mapping only with the nonce that gateway map --via pcp printed"
  }
  if (Option.isNone(flags.internalPort)) {
    return `--internal-port is required with --via ${via}: ${PROTOCOL_NAMES[via]} deletes by internal port`
  }
  return undefined
}

/** `gateway unmap`. */
export const unmap = Command.make(
  "unmap",
  {
    ...portControlFlags,
    ...connectionFlags,
    json,
    externalPort: portFlag("external-port", "Port on the gateway's external address"),
    protocol,
    internalPort: portFlag(
      "internal-port",
      "NAT-PMP/PCP (required): the mapping's internal port; NAT-PMP removes every mapping of this host to it"
    ).pipe(Flag.optional),
    nonce: nonceFlag("PCP (required): the mapping's nonce, as gateway map --via pcp printed it")
  },
  (flags) => {
    const missing = missingForUnmap(flags.via, flags)
    if (missing !== undefined) return usage("unmap", missing)
    const internalPort = Option.getOrUndefined(flags.internalPort)
    return against(
      "unmap",
      mapperLayer(flags),
      Effect.gen(function*() {
        const mapper = yield* PortMapper
        yield* mapper.unmap({
          externalPort: flags.externalPort,
          protocol: flags.protocol,
          internalPort,
          nonce: Option.getOrUndefined(flags.nonce)
        })
        if (flags.json) {
          return yield* printJson({
            externalPort: flags.externalPort,
            protocol: flags.protocol,
            ...(internalPort === undefined ? {} : { internalPort }),
            removed: true
          })
        }
        yield* Console.log(
          flags.via === "nat-pmp"
            ? `removed ${flags.protocol} ${flags.externalPort} (NAT-PMP: every ${flags.protocol} mapping of this host to internal port ${internalPort})`
            : `removed ${flags.protocol} ${flags.externalPort}`
        )
      }),
      { suggestOtherProtocols: flags.via === "upnp-igd" }
    )
  }
).pipe(
  Command.withDescription(
    "Delete a port mapping (one already gone counts as removed); NAT-PMP needs --internal-port, PCP also --nonce"
  ),
  Command.withExamples([
    {
      command: "edge-ccm gateway unmap --via pcp --external-port 8080 --protocol TCP --internal-port 30000 --nonce <24 hex digits>",
      description: "Delete a mapping made with gateway map --via pcp"
    }
  ])
)
