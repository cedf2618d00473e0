/**
 * The probe loop: every `--gateway-probe-interval`, each router in use is asked for its state,
 * concurrently (one that does not answer must not delay noticing another's reboot). A router
 * that rebooted, changed, or answers again after failing gets a full pass; a new external
 * address requeues every Service, whose status follows it. The tick itself counts for liveness:
 * with no router in use there is nothing to probe.
 */
import { Duration, Effect, Layer, Schedule } from "effect"
import { FullPass } from "./FullPass.ts"
import { type Router, Routers } from "./Routers.ts"

/** Probes every router in use once, and does what each answer calls for. */
export const probeOnce = Effect.gen(function*() {
  const routers = yield* Routers
  const fullPass = yield* FullPass
  const probeOne = (router: Router) =>
    Effect.flatMap(routers.probe(router), (verdict) => {
      switch (verdict._tag) {
        case "Reassert":
          return Effect.logWarning(`${verdict.why}: re-asserting every mapping`).pipe(Effect.andThen(fullPass.run))
        case "AlreadyReasserted":
          return Effect.log(`${verdict.why}: already re-asserted since`)
        case "AddressChanged":
          return Effect.log(`router external address is now ${verdict.ip ?? "missing"}`).pipe(
            Effect.andThen(fullPass.enqueueAll(false))
          )
        case "Failed":
          return Effect.logWarning(`gateway probe failed: ${verdict.error.message}`)
        case "Quiet":
          return Effect.void
      }
    })
  yield* Effect.forEach(yield* routers.inUse, probeOne, { concurrency: "unbounded", discard: true }).pipe(
    Effect.ensuring(routers.probeTick)
  )
}).pipe(Effect.withSpan("probeOnce"))

/** Probes every `interval` for as long as the layer lives. */
export const probeLoopLayer = (interval: Duration.Duration) =>
  Layer.effectDiscard(probeOnce.pipe(Effect.repeat(Schedule.spaced(interval)), Effect.forkScoped))
