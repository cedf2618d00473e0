/**
 * Hearing the router: while a router in use offers events (UPnP GENA), the controller subscribes
 * and takes every NOTIFY of a new external address or connection status as a cue to read the
 * address at once, and once more `recheckDelay` later: miniupnpd sends no NOTIFY for a change
 * made while its previous one is in flight, so the NOTIFY is a cue, not the last word
 * (docs/upnp-eventing-field-notes.md). What a read finds goes the probe's way (`actOnVerdict`):
 * a new address requeues every Service, whose status follows it.
 *
 * A router without an event URL, or one refusing to subscribe, is probed as before: one log line
 * says so, and subscribing is tried again every `retryAfter` in silence. While a subscription is
 * alive the probe loop relaxes (`subscribed`); a restart seen by the probe or an SSDP
 * announcement makes the subscription afresh at once (`resubscribe`). The subscriptions are
 * cancelled (UNSUBSCRIBE) when the controller stops.
 */
import { Context, Duration, Effect, FiberHandle, FiberMap, Layer, Metric, Queue, Ref, Stream } from "effect"
import type { GatewayError } from "../gateway/GatewayError.ts"
import type { Backend } from "../gateway/Mapping.ts"
import type { EventSubscriptionFailed, WanEvent } from "../gateway/upnp/Eventing.ts"
import { forEachNewRouter } from "./followRouters.ts"
import { FullPass } from "./FullPass.ts"
import * as metrics from "./metrics.ts"
import { type Router, Routers } from "./Routers.ts"
import { actOnVerdict } from "./verdicts.ts"

/** How the router's events are used. */
export interface RouterEventsOptions {
  /** Subscribe to the router's events at all (`--upnp-events`). */
  readonly upnpEvents: boolean
  /** The second read of the address after a NOTIFY. */
  readonly eventRecheckDelay: Duration.Duration
  /** After a refused or failed subscription, the next try (in silence). */
  readonly eventRetryAfter: Duration.Duration
  /** For the log: how often the router is probed without events, and with them. */
  readonly probeInterval: Duration.Duration
  readonly probeIntervalSubscribed: Duration.Duration
}

/** The defaults of `edge-ccm run`. */
export const defaultRouterEventsOptions: RouterEventsOptions = {
  upnpEvents: true,
  // A change that raced a NOTIFY happened within the NOTIFY's own delivery (milliseconds on a
  // LAN): 1.5 s later it is on the router, with a wide margin for a busy one.
  eventRecheckDelay: Duration.millis(1500),
  eventRetryAfter: Duration.minutes(10),
  probeInterval: Duration.seconds(2),
  probeIntervalSubscribed: Duration.seconds(30)
}

/** The routers' event subscriptions. */
export class RouterEvents extends Context.Service<RouterEvents, {
  /** Whether the router's events are heard now (a subscription alive): its probe may relax. */
  readonly subscribed: (router: Router) => Effect.Effect<boolean>
  /** The router restarted or was replaced (`why`): its subscription is made afresh now. */
  readonly resubscribe: (router: Router, why: string) => Effect.Effect<void>
}>()("edge-ccm/controller/RouterEvents") {
  /** Subscribes to every router in use that offers events, for as long as the layer lives. */
  static layer(options: Partial<RouterEventsOptions> = {}): Layer.Layer<RouterEvents, never, Routers | FullPass> {
    return Layer.effect(RouterEvents, make({ ...defaultRouterEventsOptions, ...options }))
  }
}

/** What a subscription's stream ended with: a failure, or a wake-up to subscribe afresh. */
type Ended =
  | { readonly _tag: "Failed"; readonly error: EventSubscriptionFailed | GatewayError }
  | { readonly _tag: "Woken"; readonly why: string }

/** The NOTIFY an event came in, for the log. */
const notifyOf = (event: Extract<WanEvent, { readonly seq: number }>): string => {
  const what = event._tag === "ExternalIPAddressChanged"
    ? `ExternalIPAddress ${event.externalIp || "(none)"}`
    : `ConnectionStatus ${event.status}`
  return `NOTIFY SID ${event.sid} SEQ ${event.seq}: ${what}`
}

const make = (options: RouterEventsOptions) =>
  Effect.gen(function*() {
    const routers = yield* Routers
    const fullPass = yield* FullPass
    const heard = yield* Ref.make<ReadonlyMap<Backend, boolean>>(new Map())
    const wakeups = yield* Ref.make<ReadonlyMap<Backend, Queue.Queue<string>>>(new Map())
    const runners = yield* FiberMap.make<Backend>()
    const normally = Duration.format(options.probeInterval)

    const setHeard = (router: Router, value: boolean) =>
      Ref.update(heard, (all) => new Map(all).set(router.backend, value)).pipe(
        Effect.andThen(Metric.update(Metric.withAttributes(metrics.eventSubscription, { protocol: router.backend }), value ? 1 : 0))
      )

    /**
     * Reads the address and does what a new one calls for, as the probe does. At the NOTIFY
     * itself no address is a passing state (a renumbering's removal, a reconnect: the new
     * address follows within milliseconds): the status is withdrawn only if the second read
     * still finds none, so a DNS record fed from it does not flap.
     */
    const reread = (router: Router, holdMissing: boolean) =>
      Effect.flatMap(routers.reread(router, { holdMissing }), actOnVerdict).pipe(Effect.provideService(FullPass, fullPass))

    const follow = (router: Router, events: NonNullable<Router["mapper"]["events"]>) =>
      Effect.gen(function*() {
        const wake = yield* Queue.sliding<string>(1)
        yield* Ref.update(wakeups, (all) => new Map(all).set(router.backend, wake))
        // The second read after the latest NOTIFY; a newer NOTIFY restarts its wait.
        const recheck = yield* FiberHandle.make()
        let lastCue = ""
        let fellBack = false

        const onEvent = (event: WanEvent) =>
          Effect.gen(function*() {
            switch (event._tag) {
              case "Subscribed":
                yield* setHeard(router, true)
                fellBack = false
                return yield* Effect.log(
                  `UPnP events from the ${router.backend} router: subscribed (SID ${event.sid}, ${event.timeoutSeconds} s); ` +
                    `probing it every ${Duration.format(options.probeIntervalSubscribed)} while this lasts`
                )
              case "Renewed":
                return yield* Effect.logDebug(`UPnP event subscription ${event.sid} renewed for ${event.timeoutSeconds} s`)
              case "SubscriptionLost":
                yield* setHeard(router, false)
                return yield* Effect.logWarning(
                  `UPnP event subscription ${event.sid || "-"} lost (${event.reason}): probing every ${normally} until subscribed again`
                )
              case "ExternalIPAddressChanged":
              case "ConnectionStatusChanged": {
                // One NOTIFY may change both variables: one cue.
                const cue = `${event.sid}/${event.seq}`
                if (cue === lastCue) return
                lastCue = cue
                yield* Effect.log(`${notifyOf(event)}; reading the router's external address now and in ${Duration.format(options.eventRecheckDelay)}`)
                yield* reread(router, true)
                yield* FiberHandle.run(recheck, Effect.delay(reread(router, false), options.eventRecheckDelay))
              }
            }
          })

        const subscription = Stream.runForEach(events, onEvent).pipe(
          Effect.matchEffect({
            onFailure: (error) => Effect.succeed<Ended>({ _tag: "Failed", error }),
            // The stream ends only when it fails: treat an end like a failure, and try again.
            onSuccess: () => Effect.never
          })
        )
        const woken = Effect.map(Queue.take(wake), (why): Ended => ({ _tag: "Woken", why }))

        yield* Effect.forever(Effect.gen(function*() {
          const ended = yield* Effect.raceFirst(subscription, woken)
          yield* setHeard(router, false)
          if (ended._tag === "Woken") {
            return yield* Effect.log(`${ended.why}: subscribing to the ${router.backend} router's events afresh`)
          }
          const reason = ended.error._tag === "EventSubscriptionFailed" ? ended.error.reason : ended.error.message
          if (!fellBack) {
            fellBack = true
            yield* Effect.log(`UPnP events from the ${router.backend} router unavailable (${reason}): probing it every ${normally} instead`)
          } else {
            yield* Effect.logDebug(`UPnP events still unavailable: ${reason}`)
          }
          const retried = yield* Effect.raceFirst(Effect.as(Effect.sleep(options.eventRetryAfter), undefined), woken)
          if (retried?._tag === "Woken") yield* Effect.log(`${retried.why}: subscribing to the ${router.backend} router's events afresh`)
        }))
      })

    yield* forEachNewRouter((router) => {
      const events = router.mapper.events
      if (events === undefined) return Effect.void
      if (!options.upnpEvents) {
        return Effect.log(`UPnP events are off (--upnp-events=false): probing the ${router.backend} router every ${normally}`)
      }
      return Effect.asVoid(FiberMap.run(runners, router.backend, Effect.scoped(follow(router, events))))
    })

    return RouterEvents.of({
      subscribed: (router) => Effect.map(Ref.get(heard), (all) => all.get(router.backend) === true),
      resubscribe: (router, why) =>
        Effect.flatMap(Ref.get(wakeups), (all) => {
          const wake = all.get(router.backend)
          return wake === undefined ? Effect.void : Effect.asVoid(Queue.offer(wake, why))
        })
    })
  })
