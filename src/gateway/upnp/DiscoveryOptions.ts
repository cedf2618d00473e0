/**
 * What SSDP discovery is told (where to search, which router to trust, how long), checked once
 * when the service is built, and the error it fails with when an option is bad or the
 * advertisement socket will not open.
 */
import { Duration, Effect, Result, Schema } from "effect"
import { NetAddress } from "effect/net"
import { isMappablePort } from "../Mapping.ts"
import { GATEWAY_SEARCH_TARGETS, SSDP_MULTICAST_ADDRESS, SSDP_PORT } from "./Ssdp.ts"

/** Where SSDP searches go, whom they trust, and how long they listen. */
export interface DiscoveryOptions {
  /** Where M-SEARCH goes, and the group advertisements are heard on. Default 239.255.255.250. */
  readonly ssdpAddress: string
  /** Default 1900. */
  readonly ssdpPort: number
  /** Local IPv4 address of the interface to send multicast on (and join the group on). */
  readonly multicastInterface: string | undefined
  /**
   * The trusted router: only SSDP replies and NOTIFYs whose source is this IPv4 address are
   * used; every other source is dropped before anything is stored or fetched. Default: the
   * node's IPv4 default gateway, read from /proc/net/route at each search (and at most every
   * 5 s for advertisements).
   */
  readonly gatewayAddress: string | undefined
  /**
   * Also send each search unicast here; "default-route" sends it to the trusted router
   * (`gatewayAddress`, else the default route's gateway). A search aimed at a loopback
   * `ssdpAddress` unicasts only to a loopback `gatewayAddress`, never to the default route, so a
   * search aimed at a local fake never leaves the machine. Default "default-route".
   */
  readonly unicastGateway: string | "default-route" | undefined
  /** How long replies are collected. Default 2 s. */
  readonly timeout: Duration.Duration
  /** Default: IGD:1, IGD:2, WANIPConnection:1, :2, WANPPPConnection:1, ssdp:all. */
  readonly searchTargets: ReadonlyArray<string>
  /** How many times the whole search is sent, spread evenly over the window. Default 3. */
  readonly resends: number
}

/** The defaults: the standard group and port, the default route's router, 2 s, three sends. */
export const defaultDiscoveryOptions: DiscoveryOptions = {
  ssdpAddress: SSDP_MULTICAST_ADDRESS,
  ssdpPort: SSDP_PORT,
  multicastInterface: undefined,
  gatewayAddress: undefined,
  unicastGateway: "default-route",
  timeout: Duration.seconds(2),
  searchTargets: GATEWAY_SEARCH_TARGETS,
  resends: 3
}

/**
 * Datagrams queued on a search or advertisement socket while its reader is busy; more are
 * dropped by the socket. A UDP datagram is at most 64 KiB, so a queue holds at most 16 MiB
 * (only for as long as a flood outpaces the reader); SSDP's own are a few hundred bytes.
 */
export const SOCKET_QUEUE_DATAGRAMS = 256

/** Discovery could not be set up: a bad option, or the advertisement socket would not open. */
export class DiscoveryError extends Schema.TaggedError<DiscoveryError>()("DiscoveryError", {
  operation: Schema.String,
  /** The option or address involved, e.g. `multicastInterface` or `239.255.255.250:1900`. */
  target: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `SSDP ${this.operation} (${this.target}) failed: ${this.reason}`
  }
}

/** The options, checked, with their addresses parsed. */
export interface DiscoverySettings {
  readonly options: DiscoveryOptions
  readonly ssdpAddress: NetAddress.Ipv4Address
  readonly multicastInterface: NetAddress.Ipv4Address | undefined
  readonly gatewayAddress: NetAddress.Ipv4Address | undefined
  readonly unicastGateway: NetAddress.Ipv4Address | "default-route" | undefined
}

const ipv4Option = (name: string, value: string): Effect.Effect<NetAddress.Ipv4Address, DiscoveryError> => {
  const parsed = NetAddress.ipv4FromString(value)
  return Result.isSuccess(parsed)
    ? Effect.succeed(parsed.success)
    : Effect.fail(new DiscoveryError({ operation: "configuration", target: name, reason: parsed.failure.message }))
}

/** Checks the options; a bad one is a `DiscoveryError` naming it. */
export const validateDiscoveryOptions = Effect.fnUntraced(function*(input: Partial<DiscoveryOptions> | undefined) {
  const options: DiscoveryOptions = { ...defaultDiscoveryOptions, ...input }
  const invalid = (target: string, reason: string) => new DiscoveryError({ operation: "configuration", target, reason })
  if (!isMappablePort(options.ssdpPort)) {
    return yield* invalid("ssdpPort", `${options.ssdpPort} is not a port number`)
  }
  if (!Number.isInteger(options.resends) || options.resends < 1) {
    return yield* invalid("resends", `${options.resends} is not a positive integer`)
  }
  if (options.searchTargets.length === 0) return yield* invalid("searchTargets", "empty")
  if (options.searchTargets.some((target) => /[\r\n]/.test(target) || target.trim() === "")) {
    return yield* invalid("searchTargets", "a target is empty or contains a line break")
  }
  if (!Duration.isGreaterThan(options.timeout, Duration.zero)) return yield* invalid("timeout", "must be positive")
  const settings: DiscoverySettings = {
    options,
    ssdpAddress: yield* ipv4Option("ssdpAddress", options.ssdpAddress),
    multicastInterface: options.multicastInterface === undefined
      ? undefined
      : yield* ipv4Option("multicastInterface", options.multicastInterface),
    gatewayAddress: options.gatewayAddress === undefined
      ? undefined
      : yield* ipv4Option("gatewayAddress", options.gatewayAddress),
    unicastGateway: options.unicastGateway === undefined || options.unicastGateway === "default-route"
      ? options.unicastGateway
      : yield* ipv4Option("unicastGateway", options.unicastGateway)
  }
  return settings
})
