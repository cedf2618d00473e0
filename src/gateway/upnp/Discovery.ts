/**
 * SSDP discovery of Internet gateways: M-SEARCH on the multicast group (and unicast to the
 * trusted router), resent within a window, replies accepted from any source port, each
 * LOCATION repaired and LAN-checked, and deduplicated by LOCATION. Also the NOTIFY
 * advertisements heard on the group, whose BOOTID/CONFIGID reveal a router's reboot.
 *
 * Only the trusted router is heard (see TrustedRouter.ts): a datagram from any other source is
 * dropped before anything is decoded into a table or fetched. What is kept is bounded, so an
 * SSDP flood costs constant memory: at most MAX_SEARCH_CANDIDATES LOCATIONs per search, and
 * MAX_KNOWN_DEVICES remembered USNs.
 */
import * as NodeDatagramSocket from "@effect/platform-node/NodeDatagramSocket"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { Clock, Context, Duration, Effect, Equal, FileSystem, Layer, Option, Result, Schema, Stream } from "effect"
import { NetAddress } from "effect/net"
import type { DatagramSocket } from "effect/socket"
import { BoundedMap } from "../BoundedMap.ts"
import { isMappablePort } from "../Mapping.ts"
import { describeTrustedRouter, resolveTrustedRouter, type TrustedRouter } from "../TrustedRouter.ts"
import { localSubnets, repairLocation } from "./LanGuard.ts"
import {
  clampMx,
  decodeMessage,
  encodeMSearch,
  GATEWAY_SEARCH_TARGETS,
  isGatewaySearchTarget,
  searchTargetRank,
  SSDP_MULTICAST_ADDRESS,
  SSDP_PORT,
  type SsdpNotifyKind
} from "./Ssdp.ts"

export interface SsdpResponse {
  /** Absolute http URL of the root description; host already repaired and LAN-checked. */
  readonly location: string
  /** ST of a search reply, NT of a NOTIFY. */
  readonly searchTarget: string
  readonly usn: string | undefined
  readonly server: string | undefined
  /** BOOTID.UPNP.ORG */
  readonly bootId: number | undefined
  /** CONFIGID.UPNP.ORG */
  readonly configId: number | undefined
  /** Source IPv4 address of the datagram. */
  readonly responder: string
}

export interface SsdpAdvertisement extends SsdpResponse {
  readonly kind: SsdpNotifyKind
  /** NEXTBOOTID.UPNP.ORG of an ssdp:update: the BOOTID the device announces from now on. */
  readonly nextBootId: number | undefined
}

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

/** Distinct LOCATIONs one search keeps (the rest are dropped): a router has one or two. */
export const MAX_SEARCH_CANDIDATES = 8

/** Warnings one search logs at most (refused LOCATIONs, failed sends); the rest go unsaid. */
export const MAX_REPORTS_PER_SEARCH = 8

/** USNs remembered (to name a byebye's device), least recently heard forgotten first. */
export const MAX_KNOWN_DEVICES = 64

/**
 * Datagrams queued on a search or advertisement socket while its reader is busy; more are
 * dropped by the socket. A UDP datagram is at most 64 KiB, so a queue holds at most 16 MiB
 * (only for as long as a flood outpaces the reader); SSDP's own are a few hundred bytes.
 */
export const SOCKET_QUEUE_DATAGRAMS = 256

/** How long the default route read for advertisements is reused (a DHCP change is seen after this). */
const TRUSTED_ROUTER_REREAD = Duration.seconds(5)

/** Drops of other hosts' advertisements are logged (at debug level) at most this often. */
const DROP_LOG_INTERVAL = Duration.minutes(1)

/** A gateway that answered from another host than the trusted router: shown, never used. */
export interface IgnoredResponder {
  readonly responder: string
  /** The LOCATION as it was sent (never fetched), cut at 256 characters. */
  readonly location: string
  readonly searchTarget: string
}

/** What one search heard. */
export interface SearchResult {
  /** The trusted router; undefined when there is none (no default route and no address given). */
  readonly router: TrustedRouter | undefined
  /** The trusted router's distinct candidates, by LOCATION (at most MAX_SEARCH_CANDIDATES). */
  readonly responses: ReadonlyArray<SsdpResponse>
  /** Gateways of other hosts, one per host (at most MAX_SEARCH_CANDIDATES hosts). */
  readonly ignored: ReadonlyArray<IgnoredResponder>
}

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

export class Discovery extends Context.Service<Discovery, {
  /**
   * Every distinct candidate of the trusted router that answered within the window,
   * deduplicated by LOCATION, and the other hosts that answered. Never fails: empty
   * `responses` mean the router did not answer.
   */
  readonly search: (options?: { readonly timeout?: Duration.Input }) => Effect.Effect<SearchResult>
  /**
   * The trusted router's NOTIFY advertisements on the multicast group (ssdp:alive/byebye/update
   * with BOOTID/CONFIGID), for reboot detection. Joins the group on `multicastInterface` only.
   */
  readonly advertisements: Stream.Stream<SsdpAdvertisement, DiscoveryError>
}>()("edge-ccm/gateway/upnp/Discovery") {
  /** Discovery over real UDP sockets; needs nothing beyond Node itself. */
  static layer(options?: Partial<DiscoveryOptions>): Layer.Layer<Discovery> {
    return Layer.effect(Discovery, make(options).pipe(Effect.orDie)).pipe(Layer.provide(NodeFileSystem.layer))
  }
}

interface Settings {
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

const validate = Effect.fnUntraced(function*(input: Partial<DiscoveryOptions> | undefined) {
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
  const settings: Settings = {
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

/** Builds the service; fails only on invalid options. */
export const make = Effect.fnUntraced(function*(input?: Partial<DiscoveryOptions>) {
  const settings = yield* validate(input)
  const { options } = settings
  const fs = yield* FileSystem.FileSystem
  const devices = makeAdvertisementReader()

  const configuredRouter = settings.gatewayAddress === undefined ? undefined : NetAddress.formatIp(settings.gatewayAddress)
  const trustedRouter = resolveTrustedRouter(configuredRouter).pipe(Effect.provideService(FileSystem.FileSystem, fs))
  // Per datagram under a flood: the route table is not read for each one.
  const trustedRouterForAdvertisements = yield* Effect.cachedWithTTL(trustedRouter, TRUSTED_ROUTER_REREAD)

  const unicastDestination = (router: TrustedRouter | undefined): NetAddress.Ipv4Address | undefined => {
    const gateway = settings.unicastGateway
    if (gateway !== "default-route") return gateway
    if (router === undefined) return undefined
    const address = Option.getOrUndefined(Result.getSuccess(NetAddress.ipv4FromString(router.address)))
    if (address === undefined) return undefined
    // A search aimed at a local fake unicasts only to a loopback router named in the options.
    const stayLocal = NetAddress.isLoopback(settings.ssdpAddress) &&
      (router.source === "default-route" || !NetAddress.isLoopback(address))
    return stayLocal ? undefined : address
  }

  const search = Effect.fn("Discovery.search")(function*(searchOptions?: { readonly timeout?: Duration.Input }) {
    const window = searchOptions?.timeout === undefined
      ? options.timeout
      : Option.getOrElse(
        Option.filter(Duration.fromInput(searchOptions.timeout), (duration) => Duration.isGreaterThan(duration, Duration.zero)),
        () => options.timeout
      )
    const subnets = localSubnets()
    const router = yield* trustedRouter
    const found = new Map<string, SsdpResponse>()
    const ignored = new Map<string, IgnoredResponder>()
    const dropped = { foreign: 0, beyondCap: 0 }
    // Each problem is reported once, and only the first few: a flood must not fill the log.
    const reported = new Set<string>()
    const reportOnce = (key: string, report: Effect.Effect<void>) =>
      Effect.suspend(() => {
        if (reported.has(key) || reported.size >= MAX_REPORTS_PER_SEARCH) return Effect.void
        reported.add(key)
        return report
      })

    /**
     * Another host's datagram: counted, and for display only one line per host (of the first
     * MAX_SEARCH_CANDIDATES hosts), with the reply that says most about a gateway.
     */
    const ignore = (datagram: DatagramSocket.Datagram, responder: string): void => {
      dropped.foreign += 1
      const known = ignored.get(responder)
      if (known === undefined && ignored.size >= MAX_SEARCH_CANDIDATES) return
      const decoded = decodeMessage(datagram.payload, responder)
      if (Result.isFailure(decoded) || decoded.success._tag !== "SearchReply") return
      const reply = decoded.success
      if (!isGatewaySearchTarget(reply.searchTarget)) return
      if (known !== undefined && searchTargetRank(reply.searchTarget) <= searchTargetRank(known.searchTarget)) return
      ignored.set(responder, { responder, location: reply.location.slice(0, 256), searchTarget: reply.searchTarget })
    }

    const accept = (datagram: DatagramSocket.Datagram): Effect.Effect<void> => {
      const responder = NetAddress.formatIp(datagram.address.address)
      if (router === undefined || responder !== router.address) return Effect.sync(() => ignore(datagram, responder))
      const decoded = decodeMessage(datagram.payload, responder)
      if (Result.isFailure(decoded)) {
        return Effect.logDebug("skipped an unusable SSDP datagram", { responder, reason: decoded.failure.message })
      }
      const message = decoded.success
      if (message._tag !== "SearchReply") return Effect.void
      if (!isGatewaySearchTarget(message.searchTarget)) return Effect.void
      const repaired = repairLocation(message.location, responder, subnets)
      if (Result.isFailure(repaired)) {
        return reportOnce(
          `${responder} ${message.location}`,
          Effect.logWarning("refused an SSDP reply", { responder, reason: repaired.failure.message })
        )
      }
      return Effect.sync(() => {
        const response: SsdpResponse = {
          location: repaired.success,
          searchTarget: message.searchTarget,
          usn: message.usn,
          server: message.server,
          bootId: message.bootId,
          configId: message.configId,
          responder
        }
        const existing = found.get(response.location)
        if (existing === undefined && found.size >= MAX_SEARCH_CANDIDATES) {
          dropped.beyondCap += 1
          return
        }
        found.set(response.location, existing === undefined ? response : merge(existing, response))
        devices.remember(response.usn, response.location)
      })
    }

    const collect = Effect.gen(function*() {
      const unicast = unicastDestination(router)
      const destinations = [settings.ssdpAddress]
      if (unicast !== undefined && !Equal.equals(unicast, settings.ssdpAddress)) {
        destinations.push(unicast)
      }
      const mx = clampMx(Duration.toSeconds(window))
      const datagrams = destinations.flatMap((host) =>
        options.searchTargets.map((searchTarget) => ({
          address: NetAddress.inetAddressUnsafe(host, options.ssdpPort),
          payload: encodeMSearch({ host: NetAddress.formatIp(host), port: options.ssdpPort, searchTarget, mx })
        }))
      )
      const socket = yield* NodeDatagramSocket.make({
        // A search aimed at a local fake stays on loopback, even for its replies.
        bind: { address: NetAddress.isLoopback(settings.ssdpAddress) ? "127.0.0.1" : "0.0.0.0" },
        // TTL 2 as the field guide says: the router is one hop, and the search must not roam.
        multicast: { ttl: 2, interface: settings.multicastInterface },
        receiveBuffer: { capacity: SOCKET_QUEUE_DATAGRAMS, strategy: "dropping" }
      })
      const reader = yield* socket.reader
      const writer = yield* socket.writer
      const send = Effect.forEach(
        datagrams,
        (datagram) =>
          writer.write(datagram).pipe(
            Effect.catch((error) => {
              const target = NetAddress.formatInet(datagram.address)
              return reportOnce(
                `send ${target}`,
                Effect.logWarning("could not send M-SEARCH", { target, reason: error.message })
              )
            })
          ),
        { discard: true }
      )
      const interval = Duration.divideUnsafe(window, options.resends)
      const rounds = Array.from({ length: options.resends }, (_, round) => round)
      yield* Effect.forkScoped(
        Effect.forEach(
          rounds,
          (round) => round === 0 ? send : Effect.andThen(Effect.sleep(interval), send),
          { discard: true }
        )
      )
      yield* reader.pull.pipe(
        Effect.flatMap((batch) => Effect.forEach(batch, accept, { discard: true })),
        Effect.forever,
        Effect.timeoutOption(window)
      )
    })

    // Never fails: a socket that will not open or breaks off ends the search with what it has.
    yield* collect.pipe(
      Effect.scoped,
      Effect.catch((error) => Effect.logWarning("SSDP search ended early", { reason: error.message, found: found.size }))
    )
    if (dropped.foreign > 0 || dropped.beyondCap > 0) {
      yield* Effect.logDebug("SSDP search: dropped replies", {
        router: router === undefined ? "none (no default route)" : describeTrustedRouter(router),
        fromOtherHosts: dropped.foreign,
        otherHosts: Array.from(ignored.keys()),
        beyondCandidateCap: dropped.beyondCap
      })
    }
    return { router, responses: Array.from(found.values()), ignored: Array.from(ignored.values()) } satisfies SearchResult
  })

  const target = `${options.ssdpAddress}:${options.ssdpPort}`
  const listenError = (operation: string) => (error: { readonly message: string }) =>
    new DiscoveryError({ operation, target, reason: error.message })

  const advertisements: Stream.Stream<SsdpAdvertisement, DiscoveryError> = Stream.unwrap(
    Effect.gen(function*() {
      const group = settings.ssdpAddress
      const socket = yield* NodeDatagramSocket.make({
        // Bound to the group itself, so only datagrams sent to the group arrive; shared with
        // any other SSDP listener on this host.
        bind: { address: NetAddress.formatIp(group), port: options.ssdpPort },
        reuseAddress: true,
        receiveBuffer: { capacity: SOCKET_QUEUE_DATAGRAMS, strategy: "dropping" }
      })
      const reader = yield* socket.reader.pipe(Effect.mapError(listenError("listen")))
      if (NetAddress.isMulticast(group)) {
        yield* reader.joinMulticast({ group, interface: settings.multicastInterface }).pipe(
          Effect.mapError(listenError(`join on ${options.multicastInterface ?? "the default interface"}`))
        )
      }
      return Stream.fromEffectRepeat(reader.pull).pipe(
        Stream.mapError(listenError("receive")),
        Stream.mapEffect((batch) =>
          Effect.flatMap(trustedRouterForAdvertisements, (router) =>
            Effect.map(Effect.forEach(batch, (datagram) => devices.read(datagram, router)), (lists) => lists.flat()))
        ),
        Stream.flattenIterable
      )
    })
  )

  return Discovery.of({ search, advertisements })
})

/** Turns datagrams heard on the multicast group into the trusted router's advertisements. */
export interface AdvertisementReader {
  /** The advertisement a datagram carries; none for another host's, garbage or a non-gateway. */
  readonly read: (
    datagram: DatagramSocket.Datagram,
    router: TrustedRouter | undefined
  ) => Effect.Effect<ReadonlyArray<SsdpAdvertisement>>
  /** Notes a device's LOCATION by USN (a search reply's too), so its byebye can be named. */
  readonly remember: (usn: string | undefined, location: string) => void
  /** Devices remembered now: never more than MAX_KNOWN_DEVICES. */
  readonly remembered: () => number
}

/** A reader with its own bounded memory of devices; other hosts' datagrams are only counted. */
export const makeAdvertisementReader = (): AdvertisementReader => {
  // USN → LOCATION, so that a byebye (which carries no LOCATION) can still name its device.
  const knownLocations = new BoundedMap<string, string>(MAX_KNOWN_DEVICES)
  const remember = (usn: string | undefined, location: string): void => {
    if (usn !== undefined) knownLocations.set(usn, location)
  }

// Other hosts' advertisements are counted, and logged at debug level at most once a minute.
const foreign = { dropped: 0, loggedAt: Number.NEGATIVE_INFINITY }
const dropForeign = (responder: string, router: TrustedRouter | undefined) =>
  Effect.flatMap(Clock.currentTimeMillis, (now) => {
    foreign.dropped += 1
    if (now - foreign.loggedAt < Duration.toMillis(DROP_LOG_INTERVAL)) return Effect.succeed([])
    const dropped = foreign.dropped
    foreign.dropped = 0
    foreign.loggedAt = now
    return Effect.as(
      Effect.logDebug("dropped SSDP advertisements from hosts other than the trusted router", {
        router: router === undefined ? "none (no default route)" : describeTrustedRouter(router),
        latest: responder,
        dropped
      }),
      []
    )
  })

const read = (
  datagram: DatagramSocket.Datagram,
  router: TrustedRouter | undefined
): Effect.Effect<ReadonlyArray<SsdpAdvertisement>> => {
  const responder = NetAddress.formatIp(datagram.address.address)
  if (router === undefined || responder !== router.address) return dropForeign(responder, router)
  const decoded = decodeMessage(datagram.payload, responder)
  if (Result.isFailure(decoded)) {
    return Effect.as(
      Effect.logDebug("skipped an unusable SSDP datagram", { responder, reason: decoded.failure.message }),
      []
    )
  }
  const message = decoded.success
  if (message._tag !== "Notify" || !isGatewaySearchTarget(message.notificationType)) return Effect.succeed([])
  const raw = message.location ?? (message.usn === undefined ? undefined : knownLocations.get(message.usn))
  if (raw === undefined) {
    return Effect.as(
      Effect.logDebug("skipped a NOTIFY of an unknown device without LOCATION", { responder, usn: message.usn }),
      []
    )
  }
  const repaired = repairLocation(raw, responder)
  if (Result.isFailure(repaired)) {
    // Debug only: one line per datagram must not be a warning a flood can fill the log with.
    return Effect.as(Effect.logDebug("refused an SSDP advertisement", { responder, reason: repaired.failure.message }), [])
  }
  return Effect.sync(() => {
    if (message.kind !== "byebye") remember(message.usn, repaired.success)
    return [{
      kind: message.kind,
      location: repaired.success,
      searchTarget: message.notificationType,
      usn: message.usn,
      server: message.server,
      bootId: message.bootId,
      configId: message.configId,
      nextBootId: message.nextBootId,
      responder
    }]
  })
}

  return { read, remember, remembered: () => knownLocations.size }
}

/** Two replies for one LOCATION: keep the ST that says most about a gateway, and its USN. */
const merge = (existing: SsdpResponse, next: SsdpResponse): SsdpResponse => {
  const better = searchTargetRank(next.searchTarget) > searchTargetRank(existing.searchTarget) ? next : existing
  return {
    ...existing,
    searchTarget: better.searchTarget,
    usn: better.usn ?? existing.usn ?? next.usn,
    server: existing.server ?? next.server,
    bootId: existing.bootId ?? next.bootId,
    configId: existing.configId ?? next.configId
  }
}
