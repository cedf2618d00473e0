/**
 * How announced router restarts are turned into full passes: at once, but at most once per
 * window per router, the rest coalesced into one pass at the window's end.
 */
import { Clock, Duration, Effect, Ref, type Scope } from "effect"

/**
 * Reboot announcements of one router start at most one full pass per this window; more within
 * it coalesce into one pass at its end. A router reboots far less often, and anyone on the LAN
 * can send announcements (alternating BOOTIDs would otherwise start a pass each).
 */
export const RESTART_PASS_WINDOW = Duration.seconds(10)

/**
 * Runs `run` for the first item at once and then at most once per `window`: items that come
 * within the window wait for its end, and only the latest of them runs then. Never blocks the
 * caller (runs are forked into the caller's scope), so a stream feeding it keeps draining.
 */
export const atMostOncePer = <A>(
  window: Duration.Duration,
  run: (item: A) => Effect.Effect<void>
): Effect.Effect<(item: A) => Effect.Effect<void>, never, Scope.Scope> =>
  Effect.gen(function*() {
    const scope = yield* Effect.scope
    // When the last run started, and the latest item waiting for the window's end.
    const state = yield* Ref.make<{ readonly startedAt: number | undefined; readonly waiting: { readonly item: A } | undefined }>({
      startedAt: undefined,
      waiting: undefined
    })
    const windowMillis = Duration.toMillis(window)
    const start = (item: A) => Effect.asVoid(Effect.forkIn(run(item), scope))
    const atWindowEnd = (delay: Duration.Duration) =>
      Effect.sleep(delay).pipe(
        Effect.andThen(Clock.currentTimeMillis),
        Effect.flatMap((at) =>
          Ref.modify(state, (now) => [now.waiting, { startedAt: now.waiting === undefined ? now.startedAt : at, waiting: undefined }] as const)
        ),
        Effect.flatMap((latest) => latest === undefined ? Effect.void : start(latest.item))
      )
    return (item: A) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Ref.modify(state, (current) => {
          // Already one waiting for the window's end: this one replaces it.
          if (current.waiting !== undefined) return [Effect.void, { ...current, waiting: { item } }] as const
          if (current.startedAt === undefined || now - current.startedAt >= windowMillis) {
            return [start(item), { startedAt: now, waiting: undefined }] as const
          }
          const delay = Duration.millis(current.startedAt + windowMillis - now)
          return [Effect.asVoid(Effect.forkIn(atWindowEnd(delay), scope)), { ...current, waiting: { item } }] as const
        }).pipe(Effect.flatten))
  })
