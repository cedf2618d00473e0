/**
 * One SSDP search: M-SEARCH on the multicast group (and unicast to the trusted router), resent
 * within a window, replies accepted from any source port, each LOCATION repaired and
 * LAN-checked, and deduplicated by LOCATION. Only the trusted router's replies are kept; other
 * hosts' are counted and, for display, named once each. What is kept is bounded.
 */
import * as NodeDatagramSocket from "@effect/platform-node/NodeDatagramSocket"
import { Duration, Effect, Equal, Option, Result } from "effect"
import { NetAddress } from "effect/net"
import type { DatagramSocket } from "effect/socket"
import { describeTrustedRouter, type TrustedRouter } from "../TrustedRouter.ts"
import { type DiscoverySettings, SOCKET_QUEUE_DATAGRAMS } from "./DiscoveryOptions.ts"
import { localSubnets, repairLocation } from "./LanGuard.ts"
import { clampMx, decodeMessage, encodeMSearch, isGatewaySearchTarget, searchTargetRank } from "./Ssdp.ts"

/** A root device of the trusted router that answered a search. */
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

/** Distinct LOCATIONs one search keeps (the rest are dropped): a router has one or two. */
export const MAX_SEARCH_CANDIDATES = 8

/** Warnings one search logs at most (refused LOCATIONs, failed sends); the rest go unsaid. */
export const MAX_REPORTS_PER_SEARCH = 8

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

/**
 * The search of a Discovery service: `trustedRouter` is read at each search, and every reply
 * kept is passed to `remember` (so a later byebye can name its device).
 */
export const makeSearch = (
  settings: DiscoverySettings,
  trustedRouter: Effect.Effect<TrustedRouter | undefined>,
  remember: (usn: string | undefined, location: string) => void
) => {
  const { options } = settings

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
        remember(response.usn, response.location)
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

  return search
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
