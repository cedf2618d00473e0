/**
 * The list-then-watch state machine behind every `Kube.watch*` stream, kept apart from
 * HTTP so it can be driven by a test source under `TestClock`.
 *
 * - no resourceVersion: list, emit `Synced` with the complete set, remember the list's RV;
 * - with a resourceVersion: watch from it, emit `Upserted` / `Deleted`, follow every
 *   event's and bookmark's RV;
 * - 410 Gone (an `ERROR` event or an HTTP 410): forget the RV and relist;
 * - the server ending the watch normally (its `timeoutSeconds`): resume from the last RV;
 * - any other failure, or a watch that closes at once without news: jittered
 *   exponential backoff, then resume (or relist if we never listed).
 *
 * The stream never ends and never fails; every restart is logged and counted.
 */
import { Clock, Duration, Effect, Metric, Predicate, Random, Ref, Stream } from "effect"
import type { KubeFailure, KubeStatus } from "./KubeError.ts"
import { fromStatus } from "./KubeError.ts"

/** What a consumer of a watch sees. */
export type WatchEvent<T> =
  /** After every (re)list: the complete current set, replacing whatever the consumer held. */
  | { readonly _tag: "Synced"; readonly items: ReadonlyArray<T> }
  | { readonly _tag: "Upserted"; readonly object: T }
  | { readonly _tag: "Deleted"; readonly object: T }

/** One line of the apiserver's watch stream. */
export type RawWatchEvent<T> =
  | { readonly type: "ADDED" | "MODIFIED" | "DELETED"; readonly object: T }
  | { readonly type: "BOOKMARK"; readonly resourceVersion: string | undefined }
  | { readonly type: "ERROR"; readonly status: KubeStatus | undefined }

/** A complete list and the resourceVersion to watch from. */
export interface Listed<T> {
  readonly items: ReadonlyArray<T>
  readonly resourceVersion: string
}

/** The two calls the state machine needs; the real one speaks HTTP (see `httpSource.ts`). */
export interface ListWatchSource<T> {
  /** Plural resource name, for logs and metrics: `services`, `nodes`, `endpointslices`. */
  readonly resource: string
  readonly list: Effect.Effect<Listed<T>, KubeFailure>
  /** Ends when the server closes the watch normally; fails on a broken connection. */
  readonly watch: (resourceVersion: string) => Stream.Stream<RawWatchEvent<T>, KubeFailure>
}

export interface ListWatchOptions {
  /** First backoff delay (default 1 s), doubled per consecutive failure. */
  readonly initialBackoff?: Duration.Input | undefined
  /** Backoff cap (default 30 s). */
  readonly maxBackoff?: Duration.Input | undefined
  /** Fraction of each delay that is random (default 0.5): the delay is drawn from [d·(1−jitter), d]. */
  readonly jitter?: number | undefined
  /** Failures further apart than this (default 2 min) start the backoff from the beginning again. */
  readonly backoffResetAfter?: Duration.Input | undefined
  /** A watch that ends normally sooner than this (default 1 s) without any event counts as a failure. */
  readonly minWatchDuration?: Duration.Input | undefined
}

/** Why a watch was restarted: the `reason` attribute of `edge_ccm_watch_restarts_total`. */
export type RestartReason = "expired" | "closed" | "watch_error" | "list_error"

/** `edge_ccm_watch_restarts_total{resource,reason}`: every relist or reconnect after the first list. */
export const watchRestarts = Metric.counter("edge_ccm_watch_restarts_total", {
  description: "Kubernetes list/watch restarts, by resource and reason (expired, closed, watch_error, list_error)",
  incremental: true
})

interface State {
  readonly resourceVersion: string | undefined
  /** Consecutive failures, the exponent of the next backoff. */
  readonly failures: number
  readonly lastFailureAt: number
}

/** The delay before retry number `failures` (0-based), before jitter. */
export const backoffDelay = (failures: number, initial: Duration.Input, max: Duration.Input): number =>
  Math.min(Duration.toMillis(max), Duration.toMillis(initial) * 2 ** Math.min(failures, 30))

/** `metadata.resourceVersion` of a watched object, when it has one. */
export const resourceVersionOf = (object: unknown): string | undefined => {
  const metadata = Predicate.isObject(object) ? object["metadata"] : undefined
  const rv = Predicate.isObject(metadata) ? metadata["resourceVersion"] : undefined
  return Predicate.isString(rv) && rv !== "" ? rv : undefined
}

/** Turns a source into the never-ending `WatchEvent` stream described above. */
export const listWatch = <T>(
  source: ListWatchSource<T>,
  options: ListWatchOptions = {}
): Stream.Stream<WatchEvent<T>> =>
  Stream.unwrap(Effect.gen(function*() {
    const initial = options.initialBackoff ?? Duration.seconds(1)
    const max = options.maxBackoff ?? Duration.seconds(30)
    const jitter = Math.min(1, Math.max(0, options.jitter ?? 0.5))
    const resetAfter = Duration.toMillis(options.backoffResetAfter ?? Duration.minutes(2))
    const minWatch = Duration.toMillis(options.minWatchDuration ?? Duration.seconds(1))
    const state = yield* Ref.make<State>({ resourceVersion: undefined, failures: 0, lastFailureAt: 0 })
    const counter = (reason: RestartReason) =>
      Metric.withAttributes(watchRestarts, { resource: source.resource, reason })

    // Records a restart and waits out its backoff. `expired` is retried at once the first
    // time (a relist is the cure), but repeated expiries back off like any failure.
    const restart = Effect.fnUntraced(function*(reason: RestartReason, error: KubeFailure | undefined) {
      yield* Metric.update(counter(reason), 1)
      if (reason === "closed" && error === undefined) {
        yield* Effect.logDebug("watch closed by the server; resuming from the last resourceVersion").pipe(
          Effect.annotateLogs({ resource: source.resource })
        )
        return
      }
      const now = yield* Clock.currentTimeMillis
      const current = yield* Ref.get(state)
      const failures = now - current.lastFailureAt > resetAfter ? 0 : current.failures
      yield* Ref.set(state, { ...current, failures: failures + 1, lastFailureAt: now })
      const nominal = reason === "expired" && failures === 0 ? 0 : backoffDelay(failures, initial, max)
      const delay = nominal === 0 ? 0 : Math.round(nominal * (1 - jitter * (yield* Random.next)))
      yield* Effect.logWarning(
        reason === "expired"
          ? "watch resourceVersion expired; relisting"
          : `${reason === "list_error" ? "list" : "watch"} failed; retrying`
      ).pipe(Effect.annotateLogs({
        resource: source.resource,
        retryInMillis: delay,
        consecutiveFailures: failures + 1,
        ...(error !== undefined ? { error: error.message } : {})
      }))
      if (delay > 0) yield* Effect.sleep(Duration.millis(delay))
    })

    const relist: Stream.Stream<WatchEvent<T>> = Stream.unwrap(source.list.pipe(
      Effect.matchEffect({
        onFailure: (error) => restart("list_error", error).pipe(Effect.as(Stream.empty)),
        onSuccess: (listed) =>
          Ref.update(state, (s) => ({ ...s, resourceVersion: listed.resourceVersion })).pipe(
            Effect.as(Stream.succeed<WatchEvent<T>>({ _tag: "Synced", items: listed.items }))
          )
      })
    ))

    const watchFrom = (resourceVersion: string): Stream.Stream<WatchEvent<T>> =>
      Stream.unwrap(Effect.gen(function*() {
        const startedAt = yield* Clock.currentTimeMillis
        const progressed = yield* Ref.make(false)
        const advance = (rv: string | undefined) =>
          Ref.set(progressed, true).pipe(
            Effect.andThen(Ref.update(state, (s) => rv === undefined ? s : { ...s, resourceVersion: rv }))
          )
        const handle = (event: RawWatchEvent<T>): Effect.Effect<ReadonlyArray<WatchEvent<T>>, KubeFailure> => {
          switch (event.type) {
            case "ADDED":
            case "MODIFIED":
              return advance(resourceVersionOf(event.object)).pipe(
                Effect.as([{ _tag: "Upserted", object: event.object }])
              )
            case "DELETED":
              return advance(resourceVersionOf(event.object)).pipe(
                Effect.as([{ _tag: "Deleted", object: event.object }])
              )
            case "BOOKMARK":
              return advance(event.resourceVersion).pipe(Effect.as([]))
            case "ERROR":
              return Effect.fail(
                fromStatus(
                  { verb: "watch", resource: source.resource },
                  event.status?.code ?? 500,
                  event.status
                )
              )
          }
        }
        const ended = Effect.gen(function*() {
          const now = yield* Clock.currentTimeMillis
          const news = yield* Ref.get(progressed)
          if (news || now - startedAt >= minWatch) return yield* restart("closed", undefined)
          // Closing at once with nothing to say is a failure in disguise: do not spin.
          return yield* restart(
            "closed",
            fromStatus({ verb: "watch", resource: source.resource }, 500, {
              reason: "ClosedEarly",
              message: "the apiserver closed the watch immediately"
            })
          )
        })
        return source.watch(resourceVersion).pipe(
          Stream.mapEffect(handle),
          Stream.flattenIterable,
          Stream.concat(Stream.fromEffectDrain(ended)),
          Stream.catch((error) =>
            Stream.fromEffectDrain(
              error._tag === "KubeError" && error.isGone
                ? Ref.update(state, (s) => ({ ...s, resourceVersion: undefined })).pipe(
                  Effect.andThen(restart("expired", error))
                )
                : restart("watch_error", error)
            )
          )
        )
      }))

    const cycle: Stream.Stream<WatchEvent<T>> = Stream.unwrap(
      Ref.get(state).pipe(Effect.map((s) => s.resourceVersion === undefined ? relist : watchFrom(s.resourceVersion)))
    )
    return Stream.forever(cycle)
  }))
