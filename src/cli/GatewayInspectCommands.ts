/**
 * The subcommands of `edge-ccm gateway` that only read: `discover` (UPnP gateways by SSDP, and
 * which one is used and why), `status` (connection, external address, uptime or epoch) and
 * `list` (UPnP's whole mapping table).
 */
import { Console, Effect } from "effect"
import { Command } from "effect/cli"
import { externalAddressOf } from "../gateway/classifyExternalIp.ts"
import type { MappingEntry } from "../gateway/Mapping.ts"
import { PortMapper } from "../gateway/PortMapper.ts"
import { UpnpGateway } from "../gateway/upnp/UpnpGateway.ts"
import type { GatewayCandidate } from "../gateway/upnp/WanRanking.ts"
import {
  against,
  externalIpMeaning,
  failWith,
  orNull,
  portControlLayer,
  printJson,
  seconds,
  upnpLayer
} from "./gatewayConnection.ts"
import {
  connectionFlags,
  type ConnectionFlags,
  json,
  PROTOCOL_NAMES,
  portControlFlags,
  type PortControlFlags,
  type PortControlVia
} from "./gatewayFlags.ts"
import { renderTable } from "./output.ts"

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

/** `gateway discover`. */
export const discover = Command.make(
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

/** UPnP status: the selected gateway, its uptime, and whether it grants only permanent leases. */
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

/** `gateway status`. */
export const status = Command.make(
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

/** `gateway list`. */
export const list = Command.make(
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
