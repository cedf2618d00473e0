/**
 * `edge-ccm gateway …`: our `upnpc`. Finds the LAN's Internet gateway, shows its state and
 * mapping table, and maps or unmaps a port by hand, through the same clients the controller
 * uses: UPnP IGD by default, NAT-PMP or PCP with `--via` (the names of the load-balancer-type
 * annotation). Every flag can also come from the environment (`EDGE_CCM_…`).
 */
import { Config, Console, Duration, Effect, type Layer, Option, Result, Schema } from "effect"
import { Command, Flag } from "effect/cli"
import { NetAddress } from "effect/net"
import { externalAddressOf } from "../gateway/classifyExternalIp.ts"
import type { GatewayError } from "../gateway/GatewayError.ts"
import { Backend, MappablePort, type MappingEntry } from "../gateway/Mapping.ts"
import { NatPmpGateway } from "../gateway/natpmp/NatPmpGateway.ts"
import { PcpGateway } from "../gateway/pcp/PcpGateway.ts"
import { PCP_PORT } from "../gateway/pcp/PcpPacket.ts"
import { PortMapper } from "../gateway/PortMapper.ts"
import type { DiscoveryError, DiscoveryOptions } from "../gateway/upnp/Discovery.ts"
import { UpnpGateway } from "../gateway/upnp/UpnpGateway.ts"
import type { GatewayCandidate } from "../gateway/upnp/WanRanking.ts"
import { DURATION_FORMS, parseDuration } from "../controller/DurationString.ts"
import { CommandFailed, renderTable } from "./output.ts"

// ---------------------------------------------------------------------------------------------
// Flags
// ---------------------------------------------------------------------------------------------

/** A duration flag in the project's one grammar (DurationString.ts): `2s`, `500ms`, `1h30m`. */
const duration = (name: string, env: string, fallback: string, description: string) =>
  Flag.String(name).pipe(
    Flag.withDescription(`${description}, e.g. 2s or 500ms (default ${fallback}) (env ${env})`),
    Flag.withFallbackConfig(Config.String(env)),
    Flag.withDefault(fallback),
    Flag.filterMap(
      (text) => Option.fromUndefinedOr(parseDuration(text)),
      (text) => `--${name}: ${JSON.stringify(text)} is not a duration (${DURATION_FORMS})`
    )
  )

const optionalString = (name: string, env: string, description: string) =>
  Flag.String(name).pipe(
    Flag.withDescription(`${description} (env ${env})`),
    Flag.withFallbackConfig(Config.String(env)),
    Flag.optional
  )

const optionalIpv4 = (name: string, env: string, description: string) =>
  Flag.String(name).pipe(
    Flag.withDescription(`${description} (env ${env})`),
    Flag.withFallbackConfig(Config.String(env)),
    Flag.filterMap(
      (text) => Result.isSuccess(NetAddress.ipv4FromString(text)) ? Option.some(text) : Option.none(),
      (text) => `--${name}: ${JSON.stringify(text)} is not an IPv4 address`
    ),
    Flag.optional
  )

const portFlag = (name: string, description: string) =>
  Flag.Int(name).pipe(Flag.withDescription(description), Flag.withSchema(MappablePort))

/** Which router, and (UPnP IGD) where its description is and how to find it by SSDP. */
const connectionFlags = {
  gatewayAddress: Flag.String("gateway-address").pipe(
    Flag.withAlias("gateway"),
    Flag.withDescription(
      "IPv4 address of the router to use: UPnP IGD uses only this host's IGD, NAT-PMP/PCP talk to it " +
        "(default: the default route's gateway; other LAN hosts are ignored) (env EDGE_CCM_GATEWAY_ADDRESS)"
    ),
    Flag.withFallbackConfig(Config.String("EDGE_CCM_GATEWAY_ADDRESS").pipe(Config.orElse(() => Config.String("EDGE_CCM_GATEWAY")))),
    Flag.filterMap(
      (text) => Result.isSuccess(NetAddress.ipv4FromString(text)) ? Option.some(text) : Option.none(),
      (text) => `--gateway-address: ${JSON.stringify(text)} is not an IPv4 address`
    ),
    Flag.optional
  ),
  gatewayUrl: optionalString(
    "gateway-url",
    "EDGE_CCM_GATEWAY_URL",
    "UPnP IGD: root description URL of the gateway, e.g. http://192.168.1.1:49536/rootDesc.xml; skips SSDP discovery"
  ),
  soapTimeout: duration("soap-timeout", "EDGE_CCM_SOAP_TIMEOUT", "5s", "UPnP IGD: timeout of each HTTP request to the gateway"),
  timeout: duration("timeout", "EDGE_CCM_DISCOVERY_TIMEOUT", "2s", "UPnP IGD: how long SSDP replies are collected"),
  ssdpAddress: optionalIpv4(
    "ssdp-address",
    "EDGE_CCM_SSDP_ADDRESS",
    "Where M-SEARCH is sent (default 239.255.255.250)"
  ),
  ssdpPort: Flag.Int("ssdp-port").pipe(
    Flag.withDescription("SSDP port (default 1900) (env EDGE_CCM_SSDP_PORT)"),
    Flag.withFallbackConfig(Config.Int("EDGE_CCM_SSDP_PORT")),
    Flag.withSchema(MappablePort),
    Flag.optional
  ),
  multicastInterface: optionalIpv4(
    "multicast-interface",
    "EDGE_CCM_MULTICAST_INTERFACE",
    "Local IPv4 address of the interface to search on"
  ),
  unicast: Flag.Boolean("unicast").pipe(
    Flag.withDescription("Also search unicast at the default gateway; --no-unicast turns it off (env EDGE_CCM_SSDP_UNICAST)"),
    Flag.withFallbackConfig(Config.Boolean("EDGE_CCM_SSDP_UNICAST")),
    Flag.withDefault(true)
  )
}

/** The protocols `--via` names: the values of the `midokura.com/load-balancer-type` annotation. */
const VIA = Backend.literals
type Via = Backend
type PortControlVia = Exclude<Via, "upnp-igd">

const PROTOCOL_NAMES: Record<Via, string> = { "upnp-igd": "UPnP IGD", "nat-pmp": "NAT-PMP", "pcp": "PCP" }

// NAT-PMP and PCP share one port.
const NATPMP_PCP_PORT = PCP_PORT

/** NAT-PMP and PCP have no discovery: they talk to one address, the default route's gateway unless told. */
const portControlFlags = {
  via: Flag.Literals("via", VIA).pipe(
    Flag.withDescription(
      "Protocol to speak to the gateway: upnp-igd, nat-pmp or pcp, as in the load-balancer-type annotation (default upnp-igd) (env EDGE_CCM_VIA)"
    ),
    Flag.withFallbackConfig(Config.Literals(VIA, "EDGE_CCM_VIA")),
    Flag.withDefault("upnp-igd")
  ),
  gatewayPort: Flag.Int("gateway-port").pipe(
    Flag.withDescription(`NAT-PMP/PCP: the gateway's UDP port (default ${NATPMP_PCP_PORT}) (env EDGE_CCM_GATEWAY_PORT)`),
    Flag.withFallbackConfig(Config.Int("EDGE_CCM_GATEWAY_PORT")),
    Flag.withSchema(MappablePort),
    Flag.withDefault(NATPMP_PCP_PORT)
  )
}

/** A PCP nonce as `map --via pcp` prints it: 96 bits in hex. */
const nonceFlag = (description: string) =>
  Flag.String("nonce").pipe(
    Flag.withDescription(description),
    Flag.withSchema(Schema.String.check(Schema.isPattern(/^[0-9a-fA-F]{24}$/, {
      message: "a PCP nonce is 24 hex digits (96 bits), as `gateway map --via pcp` printed it"
    }))),
    Flag.map((nonce) => nonce.toLowerCase()),
    Flag.optional
  )

const json = Flag.Boolean("json").pipe(Flag.withDescription("Print JSON instead of a table"), Flag.withDefault(false))

const protocol = Flag.Literals("protocol", ["TCP", "UDP"]).pipe(Flag.withDescription("TCP or UDP"))

type ConnectionFlags = Command.Command.Config.Infer<typeof connectionFlags>
type PortControlFlags = Command.Command.Config.Infer<typeof portControlFlags>

const upnpLayer = (flags: ConnectionFlags) => {
  const discovery: Partial<DiscoveryOptions> = {
    timeout: flags.timeout,
    ...Option.match(flags.ssdpAddress, { onNone: () => ({}), onSome: (ssdpAddress) => ({ ssdpAddress }) }),
    ...Option.match(flags.ssdpPort, { onNone: () => ({}), onSome: (ssdpPort) => ({ ssdpPort }) }),
    ...Option.match(flags.multicastInterface, {
      onNone: () => ({}),
      onSome: (multicastInterface) => ({ multicastInterface })
    }),
    ...(flags.unicast ? {} : { unicastGateway: undefined })
  }
  return UpnpGateway.layer({
    gatewayUrl: Option.getOrUndefined(flags.gatewayUrl),
    gatewayAddress: Option.getOrUndefined(flags.gatewayAddress),
    soapTimeout: flags.soapTimeout,
    discoveryTimeout: flags.timeout,
    discovery
  })
}

const portControlLayer = (via: PortControlVia, flags: PortControlFlags & ConnectionFlags): Layer.Layer<PortMapper> => {
  const options = { gateway: Option.getOrUndefined(flags.gatewayAddress), port: flags.gatewayPort }
  return via === "nat-pmp" ? NatPmpGateway.layer(options) : PcpGateway.layer(options)
}

/** The `PortMapper` for `--via`. */
const mapperLayer = (flags: ConnectionFlags & PortControlFlags): Layer.Layer<PortMapper> =>
  flags.via === "upnp-igd" ? upnpLayer(flags) : portControlLayer(flags.via, flags)

/**
 * Runs a command against the gateway; any failure is printed as one line on stderr
 * (what failed, against which router, the protocol's code and its meaning) and exits non-zero.
 */
const against = <A, R>(
  name: string,
  layer: Layer.Layer<R>,
  body: Effect.Effect<A, GatewayError | DiscoveryError, R>,
  options?: { readonly suggestOtherProtocols?: boolean }
) =>
  body.pipe(
    Effect.provide(layer),
    Effect.catch((error) =>
      failWith(
        name,
        1,
        oneLine(error.message) +
          // Routers with UPnP switched off for safety often still speak NAT-PMP or PCP.
          (options?.suggestOtherProtocols === true && error._tag === "GatewayNotFound"
            ? "; a gateway with UPnP off may still answer --via pcp or --via nat-pmp"
            : "")
      )
    )
  )

/** One line on stderr, then the exit code: 1 for a failure, 2 for a usage error. */
const failWith = (name: string, exitCode: number, text: string) =>
  Console.error(`edge-ccm gateway ${name}: ${text}`).pipe(
    Effect.andThen(Effect.fail(new CommandFailed({ command: `gateway ${name}`, exitCode })))
  )

/** A usage error found after parsing (a flag that only some protocols need): nothing is sent. */
const usage = (name: string, text: string) => failWith(name, 2, text)

const oneLine = (text: string) => text.replace(/\s*\n\s*/g, " ").trim()

const printJson = (value: unknown) => Console.log(JSON.stringify(value, null, 2))

const orNull = <A>(value: A | undefined): A | null => value === undefined ? null : value

const seconds = (value: number | undefined) => value === undefined ? "-" : value === 0 ? "permanent" : `${value} s`

/** The flags that aim a NAT-PMP/PCP command at the same gateway again, as given. */
const aimedAt = (flags: PortControlFlags & ConnectionFlags): string =>
  [
    ...Option.match(flags.gatewayAddress, { onNone: () => [], onSome: (gateway) => [` --gateway-address ${gateway}`] }),
    ...(flags.gatewayPort === NATPMP_PCP_PORT ? [] : [` --gateway-port ${flags.gatewayPort}`])
  ].join("")

// ---------------------------------------------------------------------------------------------
// discover
// ---------------------------------------------------------------------------------------------

/** A discover row as JSON: the keys are part of the CLI's interface. */
export const candidateJson = (candidate: GatewayCandidate) => ({
  location: candidate.location,
  deviceType: orNull(candidate.deviceType),
  serviceType: orNull(candidate.serviceType),
  controlUrl: orNull(candidate.controlUrl),
  status: candidate.status,
  externalIp: orNull(candidate.externalIp),
  externalIpClass: orNull(candidate.externalIpClass),
  selected: candidate.selected,
  reason: candidate.reason
})

const discover = Command.make(
  "discover",
  { ...connectionFlags, json },
  (flags) =>
    against(
      "discover",
      upnpLayer(flags),
      Effect.gen(function*() {
        const gateway = yield* UpnpGateway
        const candidates = yield* gateway.discover
        if (flags.json) return yield* printJson(candidates.map(candidateJson))
        const blocks = candidates.map((candidate) =>
          [
            `${candidate.selected ? "*" : " "} ${candidate.location}`,
            `    device    ${candidate.deviceType ?? "-"}`,
            `    service   ${candidate.serviceType ?? "-"}`,
            `    control   ${candidate.controlUrl ?? "-"}`,
            `    status    ${candidate.status}`,
            `    external  ${candidate.externalIp ?? "-"}${candidate.externalIpClass ? ` (${candidate.externalIpClass})` : ""}`,
            `    ${candidate.selected ? "selected" : "skipped "}  ${candidate.reason.replace(/^(selected|not selected): /, "")}`
          ].join("\n")
        )
        yield* Console.log(blocks.join("\n\n"))
      })
    )
).pipe(
  Command.withDescription(
    "Find every UPnP IGD gateway on the LAN by SSDP, probe the default gateway's (or --gateway-address's), " +
      "and show which one is used and why; other hosts' are listed as ignored, never contacted " +
      "(UPnP only: NAT-PMP and PCP have no discovery; they talk to the same router, see status --via)"
  ),
  Command.withExamples([
    { command: "edge-ccm gateway discover --timeout 3s", description: "Search for 3 seconds" },
    { command: "edge-ccm gateway discover --json", description: "Machine-readable" }
  ])
)

// ---------------------------------------------------------------------------------------------
// status
// ---------------------------------------------------------------------------------------------

const upnpStatus = (flags: ConnectionFlags & { readonly json: boolean }) =>
  against(
    "status",
    upnpLayer(flags),
    Effect.gen(function*() {
      const gateway = yield* UpnpGateway
      const selected = yield* gateway.selected
      const [info, ip] = yield* Effect.all([selected.client.getStatusInfo, selected.client.getExternalIPAddress], {
        concurrency: 2
      })
      const external = externalAddressOf(ip)
      const leasesPermanent = yield* selected.client.permanentLeasesOnly
      const report = {
        location: selected.description.location,
        controlUrl: selected.service.controlUrl,
        serviceType: selected.service.serviceType,
        status: info.connectionStatus,
        connected: info.connected,
        uptimeSeconds: orNull(info.uptimeSeconds),
        externalIp: ip === "" ? null : ip,
        externalIpClass: external.class,
        localAddress: selected.localAddress,
        permanentLeasesOnly: leasesPermanent,
        selection: selected.selection
      }
      if (flags.json) return yield* printJson(report)
      yield* Console.log(renderTable(
        ["FIELD", "VALUE"],
        [
          ["gateway", report.location],
          ["why", report.selection],
          ["control URL", report.controlUrl],
          ["service", report.serviceType],
          ["status", report.status],
          ["uptime", info.uptimeSeconds === undefined ? "-" : `${info.uptimeSeconds} s`],
          ["external IP", `${report.externalIp ?? "-"} (${externalIpMeaning(report.externalIpClass)})`],
          ["local address", report.localAddress]
        ],
        { header: false }
      ))
    }),
    { suggestOtherProtocols: true }
  )

/** NAT-PMP/PCP status: the epoch stands where UPnP has the uptime. */
const portControlStatus = (via: PortControlVia, flags: PortControlFlags & ConnectionFlags & { readonly json: boolean }) =>
  against(
    "status",
    portControlLayer(via, flags),
    Effect.gen(function*() {
      const mapper = yield* PortMapper
      const status = yield* mapper.status
      const report = {
        router: status.router,
        protocol: status.protocol,
        connected: status.connected,
        uptimeSeconds: orNull(status.uptimeSeconds),
        externalIp: orNull(status.externalAddress.ip),
        externalIpClass: status.externalAddress.class,
        localAddress: status.localAddress,
        selection: orNull(status.selection)
      }
      if (flags.json) return yield* printJson(report)
      yield* Console.log(renderTable(
        ["FIELD", "VALUE"],
        [
          ["gateway", report.router],
          ["why", report.selection ?? "-"],
          ["protocol", PROTOCOL_NAMES[via]],
          ["status", report.connected ? "connected" : "not connected (the gateway reports a network failure)"],
          // 0 right after the router restarted, not "permanent" as a lease of 0 would read.
          ["epoch", status.uptimeSeconds === undefined ? "-" : `${status.uptimeSeconds} s`],
          ["external IP", `${report.externalIp ?? "-"} (${externalIpMeaning(report.externalIpClass)})`],
          ["local address", report.localAddress]
        ],
        { header: false }
      ))
    })
  )

const status = Command.make(
  "status",
  { ...portControlFlags, ...connectionFlags, json },
  (flags) => flags.via === "upnp-igd" ? upnpStatus(flags) : portControlStatus(flags.via, flags)
).pipe(
  Command.withDescription(
    "Show the gateway's connection status and external address (UPnP: the selected gateway and its uptime; NAT-PMP/PCP: its epoch)"
  ),
  Command.withExamples([
    { command: "edge-ccm gateway status --via pcp --json", description: "Ask the default route's gateway over PCP" }
  ])
)

const externalIpMeaning = (ipClass: string) =>
  ipClass === "public"
    ? "public"
    : ipClass === "private"
    ? "private: double NAT, not reachable from the Internet"
    : "missing: WAN down, or a private address the router hides (double NAT)"

// ---------------------------------------------------------------------------------------------
// list
// ---------------------------------------------------------------------------------------------

/** A list row as JSON: the keys are part of the CLI's interface. */
export const entryJson = (entry: MappingEntry) => ({
  externalPort: entry.externalPort,
  protocol: entry.protocol,
  internalClient: entry.internalClient,
  internalPort: entry.internalPort,
  description: entry.description,
  leaseDuration: orNull(entry.leaseDuration),
  enabled: entry.enabled,
  remoteHost: entry.remoteHost
})

const list = Command.make(
  "list",
  { ...portControlFlags, ...connectionFlags, json },
  (flags) =>
    flags.via !== "upnp-igd"
      // Neither protocol has a request that reads the table: nothing is sent.
      ? failWith(
        "list",
        1,
        `${PROTOCOL_NAMES[flags.via]} cannot list a router's mapping table (the protocol has no such request); ` +
          "only UPnP IGD can (--via upnp-igd)"
      )
      : against(
        "list",
        upnpLayer(flags),
        Effect.gen(function*() {
          const gateway = yield* UpnpGateway
          const listing = yield* gateway.listing
          if (listing.unreadable > 0) {
            yield* Console.error(`${listing.unreadable} entries could not be read and are not shown`)
          }
          if (flags.json) return yield* printJson(listing.entries.map(entryJson))
          if (listing.entries.length === 0) return yield* Console.log("no port mappings")
          yield* Console.log(renderTable(
            ["PROTOCOL", "EXTERNAL", "INTERNAL", "DESCRIPTION", "LEASE", "ENABLED", "REMOTE HOST"],
            listing.entries.map((entry) => [
              entry.protocol,
              String(entry.externalPort),
              `${entry.internalClient}:${entry.internalPort}`,
              entry.description,
              seconds(entry.leaseDuration),
              entry.enabled ? "yes" : "no",
              entry.remoteHost === "" ? "*" : entry.remoteHost
            ])
          ))
        })
      )
).pipe(
  Command.withDescription("List the gateway's whole port mapping table (UPnP IGD only: NAT-PMP and PCP cannot read it)")
)

// ---------------------------------------------------------------------------------------------
// map / unmap
// ---------------------------------------------------------------------------------------------

const map = Command.make(
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

const unmap = Command.make(
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

export const gatewayCommand = Command.make("gateway").pipe(
  Command.withDescription(
    "Talk to the LAN's Internet gateway over UPnP IGD, NAT-PMP or PCP (--via): discover, status, list, map, unmap"
  ),
  Command.withSubcommands([discover, status, list, map, unmap])
)
