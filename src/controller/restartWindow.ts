/**
 * How announced router restarts are turned into full passes: at once, but at most once per
 * window per router, the rest coalesced into one pass at the window's end.
 */
import { Clock, Duration, Effect, type Scope } from "effect"

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
    const state: { startedAt: number | undefined; waiting: { item: A } | undefined } = {
      startedAt: undefined,
      waiting: undefined
    }
    const windowMillis = Duration.toMillis(window)
    const start = (item: A, now: number) => {
      state.startedAt = now
      return Effect.asVoid(Effect.forkIn(run(item), scope))
    }
    return (item: A) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) => {
        if (state.waiting !== undefined) {
          state.waiting = { item }
          return Effect.void
        }
        if (state.startedAt === undefined || now - state.startedAt >= windowMillis) return start(item, now)
        state.waiting = { item }
        const delay = Duration.millis(state.startedAt + windowMillis - now)
        return Effect.asVoid(Effect.forkIn(
          Effect.sleep(delay).pipe(
            Effect.andThen(Clock.currentTimeMillis),
            Effect.flatMap((at) => {
              const latest = state.waiting
              state.waiting = undefined
              return latest === undefined ? Effect.void : start(latest.item, at)
            })
          ),
          scope
        ))
      })
  })

