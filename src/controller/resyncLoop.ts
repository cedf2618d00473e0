/**
 * The resync: every `--resync-interval`, once the Services are listed, the routers are probed
 * and a full pass lists every readable table and reconciles every Service from it, so anything
 * lost or changed behind our back is repaired (`MappingRepaired`).
 */
import { Duration, Effect, Layer } from "effect"
import { ClusterState } from "./ClusterState.ts"
import { FullPass } from "./FullPass.ts"
import { probeOnce } from "./probeLoop.ts"

/** Resyncs every `interval` for as long as the layer lives. */
export const resyncLoopLayer = (interval: Duration.Duration) =>
  Layer.effectDiscard(Effect.gen(function*() {
    const cluster = yield* ClusterState
    const fullPass = yield* FullPass
    yield* Effect.sleep(interval).pipe(
      Effect.andThen(Effect.gen(function*() {
        if (!(yield* cluster.snapshot).synced.services) return
        yield* probeOnce
        yield* fullPass.run
      })),
      Effect.forever,
      Effect.forkScoped
    )
  }))
