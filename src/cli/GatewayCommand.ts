/**
 * `edge-ccm gateway …`: our `upnpc`. Finds the LAN's Internet gateway, shows its state and
 * mapping table, and maps or unmaps a port by hand, through the same client the controller
 * uses. Every flag can also come from the environment (`EDGE_CCM_…`).
 */
import { Config, Console, Duration, Effect, Option, Result, Schema } from "effect"
import { Command, Flag } from "effect/cli"
import { NetAddress } from "effect/net"
import { externalAddressOf } from "../gateway/classifyExternalIp.ts"
import type { GatewayError } from "../gateway/GatewayError.ts"
import type { MappingEntry } from "../gateway/Mapping.ts"
import { PortMapper } from "../gateway/PortMapper.ts"
import type { DiscoveryError, DiscoveryOptions } from "../gateway/upnp/Discovery.ts"
import { type GatewayCandidate, UpnpGateway } from "../gateway/upnp/UpnpGateway.ts"
import { CommandFailed, renderTable } from "./output.ts"

// ---------------------------------------------------------------------------------------------
// Flags
// ---------------------------------------------------------------------------------------------

/** `2s`, `500ms`, `1m`, or anything `Duration` reads (`2 seconds`). */
export const parseDuration = (text: string): Option.Option<Duration.Duration> => {
  const short = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)\s*$/.exec(text)
  if (short !== null) {
    const value = Number(short[1])
    return Option.some(short[2] === "ms" ? Duration.millis(value) : short[2] === "s" ? Duration.seconds(value) : Duration.minutes(value))
  }
  return Duration.fromInput(text as Duration.Input)
}

const duration = (name: string, env: string, fallback: string, description: string) =>
  Flag.String(name).pipe(
    Flag.withDescription(`${description}, e.g. 2s or 500ms (default ${fallback}) (env ${env})`),
    Flag.withFallbackConfig(Config.String(env)),
    Flag.withDefault(fallback),
    Flag.filterMap(parseDuration, (text) => `--${name}: ${JSON.stringify(text)} is not a duration (e.g. 2s, 500ms)`)
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

const Port = Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 65535 }))

const portFlag = (name: string, description: string) =>
  Flag.Int(name).pipe(Flag.withDescription(description), Flag.withSchema(Port))

/** Flags every gateway command shares: where the gateway is, and how to find it. */
const connectionFlags = {
  gatewayUrl: optionalString(
    "gateway-url",
    "EDGE_CCM_GATEWAY_URL",
    "Root description URL of the gateway, e.g. http://192.168.1.1:49536/rootDesc.xml; skips SSDP discovery"
  ),
  soapTimeout: duration("soap-timeout", "EDGE_CCM_SOAP_TIMEOUT", "5s", "Timeout of each HTTP request to the gateway"),
  timeout: duration("timeout", "EDGE_CCM_DISCOVERY_TIMEOUT", "2s", "How long SSDP replies are collected"),
  ssdpAddress: optionalIpv4(
    "ssdp-address",
    "EDGE_CCM_SSDP_ADDRESS",
    "Where M-SEARCH is sent (default 239.255.255.250)"
  ),
  ssdpPort: Flag.Int("ssdp-port").pipe(
    Flag.withDescription("SSDP port (default 1900) (env EDGE_CCM_SSDP_PORT)"),
    Flag.withFallbackConfig(Config.Int("EDGE_CCM_SSDP_PORT")),
    Flag.withSchema(Port),
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

const json = Flag.Boolean("json").pipe(Flag.withDescription("Print JSON instead of a table"), Flag.withDefault(false))

const protocol = Flag.Literals("protocol", ["TCP", "UDP"]).pipe(Flag.withDescription("TCP or UDP"))

type ConnectionFlags = Command.Command.Config.Infer<typeof connectionFlags>

const gatewayLayer = (flags: ConnectionFlags) => {
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
    soapTimeout: flags.soapTimeout,
    discoveryTimeout: flags.timeout,
    discovery
  })
}

/**
 * Runs a command against the gateway; any failure is printed as one line on stderr
 * (what failed, against which router, the UPnP code and its meaning) and exits non-zero.
 */
const against = <A>(
  name: string,
  flags: ConnectionFlags,
  body: Effect.Effect<A, GatewayError | DiscoveryError, UpnpGateway | PortMapper>
) =>
  body.pipe(
    Effect.provide(gatewayLayer(flags)),
    Effect.catch((error) =>
      Console.error(`edge-ccm gateway ${name}: ${oneLine(error.message)}`).pipe(
        Effect.andThen(Effect.fail(new CommandFailed({ command: `gateway ${name}`, exitCode: 1 })))
      )
    )
  )

const oneLine = (text: string) => text.replace(/\s*\n\s*/g, " ").trim()

const printJson = (value: unknown) => Console.log(JSON.stringify(value, null, 2))

const orNull = <A>(value: A | undefined): A | null => value === undefined ? null : value

const seconds = (value: number | undefined) => value === undefined ? "-" : value === 0 ? "permanent" : `${value} s`

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
      flags,
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
  Command.withDescription("Find every Internet gateway on the LAN, probe it, and show which one is used and why"),
  Command.withExamples([
    { command: "edge-ccm gateway discover --timeout 3s", description: "Search for 3 seconds" },
    { command: "edge-ccm gateway discover --json", description: "Machine-readable" }
  ])
)

// ---------------------------------------------------------------------------------------------
// status
// ---------------------------------------------------------------------------------------------

const status = Command.make(
  "status",
  { ...connectionFlags, json },
  (flags) =>
    against(
      "status",
      flags,
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
          permanentLeasesOnly: leasesPermanent
        }
        if (flags.json) return yield* printJson(report)
        yield* Console.log(renderTable(
          ["FIELD", "VALUE"],
          [
            ["gateway", report.location],
            ["control URL", report.controlUrl],
            ["service", report.serviceType],
            ["status", report.status],
            ["uptime", info.uptimeSeconds === undefined ? "-" : `${info.uptimeSeconds} s`],
            ["external IP", `${report.externalIp ?? "-"} (${externalIpMeaning(report.externalIpClass)})`],
            ["local address", report.localAddress]
          ],
          { header: false }
        ))
      })
    )
).pipe(Command.withDescription("Show the selected gateway's connection status and external address"))

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
  { ...connectionFlags, json },
  (flags) =>
    against(
      "list",
      flags,
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
).pipe(Command.withDescription("List the gateway's whole port mapping table"))

// ---------------------------------------------------------------------------------------------
// map / unmap
// ---------------------------------------------------------------------------------------------

const map = Command.make(
  "map",
  {
    ...connectionFlags,
    json,
    externalPort: portFlag("external-port", "Port on the gateway's external address"),
    internalPort: portFlag("internal-port", "Port on the internal client"),
    protocol,
    internalClient: Flag.String("internal-client").pipe(
      Flag.withDescription("Address to forward to (default: our own address toward the gateway)"),
      Flag.optional
    ),
    description: Flag.String("description").pipe(
      Flag.withDescription("Mapping description, under 64 bytes (default edge-ccm)"),
      Flag.withDefault("edge-ccm")
    ),
    lease: Flag.Int("lease").pipe(
      Flag.withDescription("Lease in seconds; 0 asks for a permanent mapping (default 3600)"),
      Flag.withSchema(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))),
      Flag.withDefault(3600)
    ),
    force: Flag.Boolean("force").pipe(
      Flag.withDescription("Overwrite a mapping of this host held under another description"),
      Flag.withDefault(false)
    )
  },
  (flags) =>
    against(
      "map",
      flags,
      Effect.gen(function*() {
        const mapper = yield* PortMapper
        const granted = yield* mapper.map({
          externalPort: flags.externalPort,
          internalPort: flags.internalPort,
          protocol: flags.protocol,
          internalClient: Option.getOrUndefined(flags.internalClient),
          description: flags.description,
          leaseSeconds: flags.lease,
          force: flags.force
        })
        const external = yield* mapper.externalAddress
        if (flags.json) {
          return yield* printJson({
            externalPort: granted.externalPort,
            protocol: granted.protocol,
            internalClient: granted.internalClient,
            internalPort: granted.internalPort,
            description: granted.description,
            leaseDuration: granted.leaseSeconds,
            externalIp: orNull(external.ip),
            externalIpClass: external.class
          })
        }
        yield* Console.log(
          `mapped ${granted.protocol} ${external.ip ?? "(no external address)"}:${granted.externalPort} -> ` +
            `${granted.internalClient}:${granted.internalPort} ${JSON.stringify(granted.description)} ` +
            `(lease ${seconds(granted.leaseSeconds)})`
        )
        if (external.class !== "public") {
          yield* Console.error(`warning: the external address is ${externalIpMeaning(external.class)}`)
        }
      })
    )
).pipe(
  Command.withDescription("Create or renew a port mapping (refuses to take over another description without --force)"),
  Command.withExamples([{
    command:
      "edge-ccm gateway map --external-port 8080 --internal-port 30000 --protocol TCP --description kubernetes/default/web/http",
    description: "Forward TCP 8080 to port 30000 of this host"
  }])
)

const unmap = Command.make(
  "unmap",
  {
    ...connectionFlags,
    json,
    externalPort: portFlag("external-port", "Port on the gateway's external address"),
    protocol
  },
  (flags) =>
    against(
      "unmap",
      flags,
      Effect.gen(function*() {
        const mapper = yield* PortMapper
        yield* mapper.unmap({ externalPort: flags.externalPort, protocol: flags.protocol })
        if (flags.json) return yield* printJson({ externalPort: flags.externalPort, protocol: flags.protocol, removed: true })
        yield* Console.log(`removed ${flags.protocol} ${flags.externalPort}`)
      })
    )
).pipe(Command.withDescription("Delete a port mapping (one already gone counts as removed)"))

export const gatewayCommand = Command.make("gateway").pipe(
  Command.withDescription("Talk to the LAN's Internet gateway over UPnP IGD: discover, status, list, map, unmap"),
  Command.withSubcommands([discover, status, list, map, unmap])
)
