/**
 * The workers: each takes a Service key from the queue, skips it when the pass would change
 * nothing (the watch's echo of our own write, or this node excluded from load balancers), runs
 * one pass, and schedules the next one: a renewal due before the resync, or a retry the error
 * policy times. One timer per key; never two workers on one key (the queue sees to that).
 */
import { Cause, Clock, Duration, Effect, FiberMap, HashMap, Layer, Metric, Option, Ref } from "effect"
import { ClusterState, isExcluded } from "./ClusterState.ts"
import { backoff, errorPolicy, type Requeue } from "./errorPolicy.ts"
import * as metrics from "./metrics.ts"
import { Reconciler } from "./Reconciler.ts"
import { WorkQueue } from "./WorkQueue.ts"

/** How many workers, for which node. */
export interface WorkerOptions {
  /** Services reconciled in parallel (the router's own limit applies beneath). */
  readonly workers: number
  /** The Node this controller runs on: nothing is mapped while it is excluded. */
  readonly nodeName: string | undefined
}

/** Forks the workers for as long as the layer lives. */
export const workersLayer = (options: WorkerOptions) =>
  Layer.effectDiscard(Effect.gen(function*() {
    const queue = yield* WorkQueue
    const cluster = yield* ClusterState
    const reconciler = yield* Reconciler
    const timers = yield* FiberMap.make<string>()
    // Consecutive failed passes per key, for the backoff.
    const failures = yield* Ref.make(HashMap.empty<string, number>())

    const requeueAfter = (key: string, delay: Duration.Duration) =>
      FiberMap.run(timers, key, Effect.sleep(delay).pipe(Effect.andThen(queue.add(key, { verify: true }))))

    const failed = Effect.fnUntraced(function*(key: string, decide: (failures: number) => Effect.Effect<Requeue>, reason: string) {
      const count = yield* Ref.modify(failures, (all) => {
        const next = Option.getOrElse(HashMap.get(all, key), () => 0) + 1
        return [next, HashMap.set(all, key, next)] as const
      })
      const requeue = yield* decide(count)
      yield* metrics.count(metrics.reconcileTotal, { result: "retry" })
      yield* metrics.count(metrics.reconcileErrors, { error: requeue.label, retryable: String(requeue.retryable) })
      yield* Effect.logWarning(`will retry in ${Duration.format(requeue.delay)}: ${reason}`).pipe(
        Effect.annotateLogs({ service: key })
      )
      yield* requeueAfter(key, requeue.delay)
    })

    const work = Effect.gen(function*() {
      const item = yield* queue.take
      // Checked here, not when the event arrives: by now the pass that wrote it has finished.
      const echo = item.onlyIfChanged && (yield* cluster.isEcho(item.key))
      if (echo || isExcluded(yield* cluster.snapshot, options.nodeName)) return yield* queue.done(item.key)
      const started = yield* Clock.currentTimeMillis
      yield* reconciler.reconcile(item.key, item.verify).pipe(
        Effect.matchEffect({
          onSuccess: (done) =>
            Effect.gen(function*() {
              yield* metrics.count(metrics.reconcileTotal, { result: "success" })
              yield* Ref.update(failures, HashMap.remove(item.key))
              if (done.renewAfter !== undefined) yield* requeueAfter(item.key, done.renewAfter)
              else yield* FiberMap.remove(timers, item.key)
            }),
          onFailure: (error) => failed(item.key, (count) => errorPolicy(error, count), error.message)
        }),
        // A defect in one Service's pass must not stop the worker: log it and retry with backoff.
        Effect.catchCause((cause) =>
          Cause.hasInterruptsOnly(cause) ? Effect.failCause(cause) : Effect.logError("reconcile failed unexpectedly", cause).pipe(
            Effect.annotateLogs({ service: item.key }),
            Effect.andThen(failed(item.key, (count) => defectPolicy(count), "unexpected failure"))
          )
        )
      )
      const ended = yield* Clock.currentTimeMillis
      yield* Metric.update(metrics.reconcileDuration, (ended - started) / 1000)
      yield* queue.done(item.key)
    })

    yield* Effect.forEach(Array.from({ length: options.workers }), () => Effect.forkScoped(Effect.forever(work)), {
      discard: true
    })
  }))

/** A defect (a bug) is retried with the backoff, and counted apart. */
const defectPolicy = (count: number): Effect.Effect<Requeue> =>
  Effect.map(backoff(count), (delay) => ({ delay, label: "Defect", retryable: true }))
