/**
 * Which WAN service to use, by miniupnpc's ranking, and the rows `edge-ccm gateway discover`
 * prints: every service probed (chosen, or why not), every description or control URL that
 * could not be used, and the other hosts that answered (shown, never fetched). Pure: the
 * fetching and probing are UpnpGateway's.
 */
import { Result } from "effect"
import { externalAddressOf } from "../classifyExternalIp.ts"
import { type GatewayError, GatewayNotFound, GatewayProtocolError } from "../GatewayError.ts"
import type { ExternalIpClass } from "../Mapping.ts"
import { notTrustedReason, type TrustedRouter } from "../TrustedRouter.ts"
import type { RootDescription, WanService } from "./Description.ts"
import type { IgnoredResponder } from "./Discovery.ts"
import type * as IgdClient from "./IgdClient.ts"

/** One WAN service found, probed and ranked: a row of `edge-ccm gateway discover`. */
export interface GatewayCandidate {
  readonly location: string
  readonly deviceType: string | undefined
  readonly serviceType: string | undefined
  readonly controlUrl: string | undefined
  /** GetStatusInfo's ConnectionStatus, or why there is none (unreachable, refused, …). */
  readonly status: string
  readonly connected: boolean
  readonly externalIp: string | undefined
  readonly externalIpClass: ExternalIpClass | undefined
  readonly uptimeSeconds: number | undefined
  readonly selected: boolean
  /** Why it was chosen, or why not. */
  readonly reason: string
}

/** A WAN service of a fetched description, with a client for it and what its two probes answered. */
export interface Probed {
  readonly service: WanService
  readonly description: RootDescription
  readonly client: IgdClient.IgdClient
  readonly status: Result.Result<IgdClient.StatusInfo, GatewayError>
  readonly externalIp: Result.Result<string, GatewayError>
}

/** A probed service in the ranking, with its tier (0 best, 3 unreachable) and its order of discovery. */
export interface Ranked {
  readonly entry: Probed
  readonly order: number
  readonly tier: number
}

const reachable = (probed: Probed) =>
  !(Result.isFailure(probed.status) && probed.status.failure._tag === "GatewayUnreachable" &&
    Result.isFailure(probed.externalIp) && probed.externalIp.failure._tag === "GatewayUnreachable")

const ipClassOf = (probed: Probed): ExternalIpClass =>
  Result.isSuccess(probed.externalIp) ? externalAddressOf(probed.externalIp.success).class : "missing"

const isConnected = (probed: Probed) => Result.isSuccess(probed.status) && probed.status.success.connected

/**
 * miniupnpc: connected with a public address, then connected with a private (or no)
 * address, then any; unreachable ones are never chosen.
 */
const tierOf = (probed: Probed): number => {
  if (!reachable(probed)) return 3
  if (!isConnected(probed)) return 2
  return ipClassOf(probed) === "public" ? 0 : 1
}

const tierReason = (probed: Probed): string => {
  switch (tierOf(probed)) {
    case 0:
      return "connected with a public external address"
    case 1:
      return ipClassOf(probed) === "private"
        ? "connected, but the external address is private (double NAT)"
        : "connected, but no external address reported (a private WAN address hidden by the router: double NAT)"
    case 2:
      return Result.isSuccess(probed.status)
        ? `not connected (${probed.status.success.connectionStatus})`
        : `connection status unknown (${probed.status.failure.message})`
    default:
      return "unreachable"
  }
}

/**
 * The probed services best first (tier, then the service's own preference, then the order
 * found), and the best reachable one, if any.
 */
export const rank = (probed: ReadonlyArray<Probed>): { readonly ranked: ReadonlyArray<Ranked>; readonly best: Ranked | undefined } => {
  const ranked = probed
    .map((entry, order) => ({ entry, order, tier: tierOf(entry) }))
    .sort((a, b) => a.tier - b.tier || a.entry.service.preference - b.entry.service.preference || a.order - b.order)
  return { ranked, best: ranked.find((candidate) => candidate.tier < 3) }
}

/** What one discovery found, for its rows. */
export interface Findings {
  readonly ranked: ReadonlyArray<Ranked>
  readonly best: Ranked | undefined
  /** The description locations fetched, and what each fetch gave (same order). */
  readonly found: ReadonlyArray<string>
  readonly fetched: ReadonlyArray<Result.Result<RootDescription, GatewayError>>
  /** Other hosts that answered the search. */
  readonly ignored: ReadonlyArray<IgnoredResponder>
  readonly router: TrustedRouter | undefined
}

/** Every row of `edge-ccm gateway discover`: ranked services first, then what could not be used. */
export const candidateRows = ({ best, fetched, found, ignored, ranked, router }: Findings): Array<GatewayCandidate> => {
  const rows: Array<GatewayCandidate> = ranked.map(({ entry, tier }) => {
    const status = Result.isSuccess(entry.status)
      ? entry.status.success.connectionStatus
      : entry.status.failure._tag === "GatewayUnreachable" ? "unreachable" : "unknown"
    const address = Result.isSuccess(entry.externalIp) ? externalAddressOf(entry.externalIp.success) : undefined
    const selected = best !== undefined && best.entry === entry
    return {
      location: entry.description.location,
      deviceType: entry.description.deviceType,
      serviceType: entry.service.serviceType,
      controlUrl: entry.service.controlUrl,
      status,
      connected: Result.isSuccess(entry.status) && entry.status.success.connected,
      externalIp: address?.ip,
      externalIpClass: address?.class,
      uptimeSeconds: Result.isSuccess(entry.status) ? entry.status.success.uptimeSeconds : undefined,
      selected,
      reason: selected
        ? `selected: ${tierReason(entry)}, ${entry.service.kind}`
        : best === undefined
        ? tierReason(entry)
        : tier > best.tier
        ? `not selected: ${tierReason(entry)}`
        : `not selected: ${best.entry.service.kind} at ${best.entry.service.controlUrl} ranks first`
    }
  })
  fetched.forEach((result, index) => {
    const location = found[index]!
    if (Result.isFailure(result)) {
      rows.push(unusableRow(location, "unreachable", `description unusable: ${result.failure.message}`))
      return
    }
    for (const refused of result.success.refused) {
      rows.push({
        ...unusableRow(location, "refused", `control URL refused: ${refused.reason}`),
        deviceType: result.success.deviceType,
        serviceType: refused.serviceType,
        controlUrl: refused.controlUrl
      })
    }
    if (result.success.wanServices.length === 0 && result.success.refused.length === 0) {
      rows.push({
        ...unusableRow(location, "not a gateway", "no WANIPConnection or WANPPPConnection service"),
        deviceType: result.success.deviceType
      })
    }
  })
  // Gateways of other hosts: shown, never fetched or used.
  for (const other of ignored) {
    // What it answered as: a device type (IGD) or a service type (WANIPConnection).
    const isDevice = other.searchTarget.includes(":device:")
    rows.push({
      ...unusableRow(other.location, "ignored", notTrustedReason(router)),
      ...(isDevice ? { deviceType: other.searchTarget } : { serviceType: other.searchTarget })
    })
  }
  return rows
}

/** Why no service was chosen, as the one error that says it best. */
export const noGateway = (
  rows: ReadonlyArray<GatewayCandidate>,
  found: ReadonlyArray<string>,
  failures: ReadonlyArray<GatewayError>,
  selection: string,
  ignored: ReadonlyArray<IgnoredResponder>
): GatewayError => {
  // One gateway, and its description could not be read: that error says it best.
  if (found.length === 1 && failures.length === 1) return failures[0]!
  if (found.length === 0) {
    return new GatewayNotFound({
      reason: `the router (${selection}) did not answer the SSDP search; other hosts did (${
        ignored.map((other) => other.responder).join(", ")
      }) and are not used: name one with --gateway-address to use it`,
      candidates: ignored.map((other) => other.location)
    })
  }
  const refused = rows.find((row) => row.status === "refused")
  if (refused !== undefined && rows.every((row) => row.status === "refused" || row.status === "not a gateway")) {
    return new GatewayProtocolError({
      router: refused.location,
      action: "root description",
      field: "controlURL",
      reason: refused.reason
    })
  }
  return new GatewayNotFound({
    reason: rows.length === 0
      ? "no WAN connection service found"
      : `no usable WAN connection service (${rows.map((row) => row.reason).join("; ")})`,
    candidates: [...found]
  })
}

const unusableRow = (location: string, status: string, reason: string): GatewayCandidate => ({
  location,
  deviceType: undefined,
  serviceType: undefined,
  controlUrl: undefined,
  status,
  connected: false,
  externalIp: undefined,
  externalIpClass: undefined,
  uptimeSeconds: undefined,
  selected: false,
  reason
})
