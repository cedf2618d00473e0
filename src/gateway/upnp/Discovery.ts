/**
 * SSDP discovery of Internet gateways: M-SEARCH on the multicast group (and unicast to the
 * default gateway), resent within a window, replies accepted from any source port, each
 * LOCATION repaired and LAN-checked, and deduplicated by LOCATION. Also the NOTIFY
 * advertisements heard on the group, whose BOOTID/CONFIGID reveal a router's reboot.
 */
import * as NodeDatagramSocket from "@effect/platform-node/NodeDatagramSocket"
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { Context, Duration, Effect, Equal, FileSystem, Layer, Option, Result, Schema, Stream } from "effect"
import { NetAddress } from "effect/net"
import type { DatagramSocket } from "effect/socket"
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
import { readDefaultGateway } from "./SsdpRoute.ts"

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
   * Also send each search unicast here; "default-route" reads the IPv4 default gateway from
   * /proc/net/route. "default-route" sends nothing when `ssdpAddress` is loopback, so a search
   * aimed at a local fake never leaves the machine. Default "default-route".
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
  unicastGateway: "default-route",
  timeout: Duration.seconds(2),
  searchTargets: GATEWAY_SEARCH_TARGETS,
  resends: 3
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
   * Every distinct gateway candidate that answered within the window, deduplicated by
   * LOCATION. Never fails: an empty array means nothing answered.
   */
  readonly search: (options?: { readonly timeout?: Duration.Input }) => Effect.Effect<ReadonlyArray<SsdpResponse>>
  /**
   * NOTIFY advertisements heard on the multicast group (ssdp:alive/byebye/update with
   * BOOTID/CONFIGID), for reboot detection. Joins the group on `multicastInterface` only.
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
  if (!Number.isInteger(options.ssdpPort) || options.ssdpPort < 1 || options.ssdpPort > 65535) {
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
  // USN → LOCATION, so that a byebye (which carries no LOCATION) can still name its device.
  const knownLocations = new Map<string, string>()
  const remember = (usn: string | undefined, location: string): void => {
    if (usn !== undefined) knownLocations.set(usn, location)
  }

  const unicastDestination: Effect.Effect<NetAddress.Ipv4Address | undefined> = Effect.gen(function*() {
    const gateway = settings.unicastGateway
    if (gateway !== "default-route") return gateway
    if (NetAddress.isLoopback(settings.ssdpAddress)) return undefined
    const found = yield* readDefaultGateway.pipe(Effect.provideService(FileSystem.FileSystem, fs))
    if (found === undefined) return undefined
    return Option.getOrUndefined(Result.getSuccess(NetAddress.ipv4FromString(found)))
  })

  const search = Effect.fn("Discovery.search")(function*(searchOptions?: { readonly timeout?: Duration.Input }) {
    const window = searchOptions?.timeout === undefined
      ? options.timeout
      : Option.getOrElse(
        Option.filter(Duration.fromInput(searchOptions.timeout), (duration) => Duration.isGreaterThan(duration, Duration.zero)),
        () => options.timeout
      )
    const subnets = localSubnets()
    const found = new Map<string, SsdpResponse>()
    const reported = new Set<string>()
    const reportOnce = (key: string, report: Effect.Effect<void>) =>
      Effect.suspend(() => {
        if (reported.has(key)) return Effect.void
        reported.add(key)
        return report
      })

    const accept = (datagram: DatagramSocket.Datagram): Effect.Effect<void> => {
      const responder = NetAddress.formatIp(datagram.address.address)
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
        found.set(response.location, existing === undefined ? response : merge(existing, response))
        remember(response.usn, response.location)
      })
    }

    const collect = Effect.gen(function*() {
      const unicast = yield* unicastDestination
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
        multicast: { ttl: 2, interface: settings.multicastInterface }
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
    return Array.from(found.values())
  })

  const target = `${options.ssdpAddress}:${options.ssdpPort}`
  const listenError = (operation: string) => (error: { readonly message: string }) =>
    new DiscoveryError({ operation, target, reason: error.message })

  const toAdvertisement = (datagram: DatagramSocket.Datagram): Effect.Effect<ReadonlyArray<SsdpAdvertisement>> => {
    const responder = NetAddress.formatIp(datagram.address.address)
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
      return Effect.as(Effect.logWarning("refused an SSDP advertisement", { responder, reason: repaired.failure.message }), [])
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

  const advertisements: Stream.Stream<SsdpAdvertisement, DiscoveryError> = Stream.unwrap(
    Effect.gen(function*() {
      const group = settings.ssdpAddress
      const socket = yield* NodeDatagramSocket.make({
        // Bound to the group itself, so only datagrams sent to the group arrive; shared with
        // any other SSDP listener on this host.
        bind: { address: NetAddress.formatIp(group), port: options.ssdpPort },
        reuseAddress: true
      })
      const reader = yield* socket.reader.pipe(Effect.mapError(listenError("listen")))
      if (NetAddress.isMulticast(group)) {
        yield* reader.joinMulticast({ group, interface: settings.multicastInterface }).pipe(
          Effect.mapError(listenError(`join on ${options.multicastInterface ?? "the default interface"}`))
        )
      }
      return Stream.fromEffectRepeat(reader.pull).pipe(
        Stream.mapError(listenError("receive")),
        Stream.mapEffect((batch) => Effect.map(Effect.forEach(batch, toAdvertisement), (lists) => lists.flat())),
        Stream.flattenIterable
      )
    })
  )

  return Discovery.of({ search, advertisements })
})

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
