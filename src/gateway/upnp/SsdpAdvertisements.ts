/**
 * The NOTIFY advertisements heard on the SSDP group, whose BOOTID/CONFIGID reveal a router's
 * reboot. Only the trusted router is heard: a datagram from any other source is dropped before
 * anything is decoded, and only counted; the devices remembered (to name a byebye's) are bounded.
 */
import * as NodeDatagramSocket from "@effect/platform-node/NodeDatagramSocket"
import { Clock, Duration, Effect, Result, Stream } from "effect"
import { NetAddress } from "effect/net"
import type { DatagramSocket } from "effect/socket"
import { BoundedMap } from "../BoundedMap.ts"
import { describeTrustedRouter, type TrustedRouter } from "../TrustedRouter.ts"
import { DiscoveryError, type DiscoverySettings, SOCKET_QUEUE_DATAGRAMS } from "./DiscoveryOptions.ts"
import { repairLocation } from "./LanGuard.ts"
import { decodeMessage, isGatewaySearchTarget, type SsdpNotifyKind } from "./Ssdp.ts"
import type { SsdpResponse } from "./SsdpSearch.ts"

/** A NOTIFY of the trusted router: alive, byebye or update. */
export interface SsdpAdvertisement extends SsdpResponse {
  readonly kind: SsdpNotifyKind
  /** NEXTBOOTID.UPNP.ORG of an ssdp:update: the BOOTID the device announces from now on. */
  readonly nextBootId: number | undefined
}

/** USNs remembered (to name a byebye's device), least recently heard forgotten first. */
export const MAX_KNOWN_DEVICES = 64

/** Drops of other hosts' advertisements are logged (at debug level) at most this often. */
const DROP_LOG_INTERVAL = Duration.minutes(1)

/**
 * The trusted router's advertisements on the group, read by `devices`; `trustedRouter` is
 * asked per batch of datagrams (so it should be cached).
 */
export const listenForAdvertisements = (
  settings: DiscoverySettings,
  trustedRouter: Effect.Effect<TrustedRouter | undefined>,
  devices: AdvertisementReader
): Stream.Stream<SsdpAdvertisement, DiscoveryError> => {
  const { options } = settings
  const target = `${options.ssdpAddress}:${options.ssdpPort}`
  const listenError = (operation: string) => (error: { readonly message: string }) =>
    new DiscoveryError({ operation, target, reason: error.message })

  return Stream.unwrap(
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
          Effect.flatMap(trustedRouter, (router) =>
            Effect.map(Effect.forEach(batch, (datagram) => devices.read(datagram, router)), (lists) => lists.flat()))
        ),
        Stream.flattenIterable
      )
    })
  )
}

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
