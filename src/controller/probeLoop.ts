/**
 * The probe loop: every `--gateway-probe-interval`, each router in use is asked for its state,
 * concurrently (one that does not answer must not delay noticing another's reboot). A router
 * that rebooted, changed, or answers again after failing gets a full pass; a new external
 * address requeues every Service, whose status follows it. A router whose events are heard (a
 * GENA subscription alive, routerEvents.ts) and whose restarts are announced (SSDP) is probed
 * only every `--gateway-probe-interval-subscribed`: the probe then only stands behind them. The
 * tick itself counts for liveness: with no router in use there is nothing to probe.
 */
import { Clock, Duration, Effect, Layer, Schedule } from "effect"
import { RouterEvents } from "./routerEvents.ts"
import { type Router, Routers } from "./Routers.ts"
import { actOnVerdict } from "./verdicts.ts"

/** Probes the routers in use that `due` says (all by default) once, and does what each answer calls for. */
const probeRouters = (due: (router: Router) => Effect.Effect<boolean> = () => Effect.succeed(true)) =>
  Effect.gen(function*() {
    const routers = yield* Routers
    const events = yield* RouterEvents
    const probeOne = (router: Router) =>
      Effect.flatMap(routers.probe(router), (verdict) =>
        Effect.andThen(
          // A router that restarted or was replaced forgot our subscription: make it again now.
          verdict._tag === "Reassert" || verdict._tag === "AlreadyReasserted" ? events.resubscribe(router, verdict.why) : Effect.void,
          actOnVerdict(verdict)
        ))
    const inUse = yield* Effect.filter(yield* routers.inUse, due)
    yield* Effect.forEach(inUse, probeOne, { concurrency: "unbounded", discard: true }).pipe(
      Effect.ensuring(routers.probeTick)
    )
  }).pipe(Effect.withSpan("probeOnce"))

/** Probes every router in use once, and does what each answer calls for. */
export const probeOnce = probeRouters()

/**
 * Probes every `interval` for as long as the layer lives; a router whose events are heard, only
 * every `subscribedInterval` (and at once when its subscription is lost).
 */
export const probeLoopLayer = (interval: Duration.Duration, subscribedInterval: Duration.Duration) =>
  Layer.effectDiscard(Effect.gen(function*() {
    const events = yield* RouterEvents
    const routers = yield* Routers
    const relaxed = Duration.toMillis(subscribedInterval)
    // Any probe counts (the resync's too): subscribed, a router is asked once per relaxed interval.
    const due = (router: Router) =>
      Effect.gen(function*() {
        // Events say nothing of a restart (the router forgets the subscription in silence): a
        // router whose restarts are not announced over SSDP has the probe as its only sign of one.
        if (router.mapper.restarts === undefined || !(yield* events.subscribed(router))) return true
        const last = yield* routers.probedAt(router)
        return last === undefined || (yield* Clock.currentTimeMillis) - last >= relaxed
      })
    yield* probeRouters(due).pipe(Effect.repeat(Schedule.spaced(interval)), Effect.forkScoped)
  }))
