/**
 * How a scenario test waits without polling. The fakes raise `changed()` after every call and
 * every change of their state, so a condition on them is checked again exactly when it may have
 * become true; each open in-memory watch says whether the controller has handled every event it
 * delivered; and each running controller says when its work queue is idle. A wait that never
 * ends is cut by a deadline on the wall clock (TestClock stands still while a test waits).
 */
import { Deferred, Effect } from "effect"
import type { Controller } from "../../src/controller/Controller.ts"

/** How long a wait may take before the test fails with what it waited for. */
const DEADLINE_MS = 4_000

let next = Deferred.makeUnsafe<void>()

/** Raised by the fakes after every call and every change of their state. */
export const changed = (): void => {
  const raised = next
  next = Deferred.makeUnsafe<void>()
  Deferred.doneUnsafe(raised, Effect.void)
}

/** The next change: taken before a condition is checked, so none is missed. */
const nextChange = () => next

/** An open watch of an in-memory apiserver: drained when its consumer has handled every event. */
interface OpenWatch {
  readonly drained: () => boolean
}

const watches = new Set<OpenWatch>()

/** Registers a watch while it is open; returns how to unregister it. */
export const openWatch = (watch: OpenWatch): () => void => {
  watches.add(watch)
  return () => void watches.delete(watch)
}

const watchesDrained = () => [...watches].every((watch) => watch.drained())

const controllers = new Set<Controller["Service"]>()

/** Counts the controller among the running ones for as long as the scope is open. */
export const running = (controller: Controller["Service"]) =>
  Effect.acquireRelease(
    Effect.sync(() => void controllers.add(controller)),
    () => Effect.sync(() => void controllers.delete(controller))
  )

/** Dies with `failure` when the wait lasts longer than the deadline. */
const withDeadline = (failure: string) => <A>(wait: Effect.Effect<A>): Effect.Effect<A> =>
  Effect.raceFirst(
    wait,
    Effect.callback<A>((resume) => {
      const timer = setTimeout(() => resume(Effect.die(new Error(failure))), DEADLINE_MS)
      return Effect.sync(() => clearTimeout(timer))
    })
  )

/** Waits until the condition on the fakes holds, checking it at each change they signal. */
export const until = (description: string, condition: () => boolean): Effect.Effect<void> =>
  Effect.gen(function*() {
    for (;;) {
      const change = nextChange()
      if (condition()) return
      yield* Deferred.await(change)
    }
  }).pipe(withDeadline(`condition never held: ${description}`))

/**
 * Waits until the controllers have nothing left to do: every watch event handled, no Service
 * queued or being reconciled, no Event due to be sent. For assertions that something did
 * NOT happen.
 */
export const settle: Effect.Effect<void> = Effect.gen(function*() {
  for (;;) {
    const change = nextChange()
    if (!watchesDrained()) {
      yield* Deferred.await(change)
      continue
    }
    let busy: { readonly controller: Controller["Service"]; readonly queued: boolean } | undefined
    for (const controller of controllers) {
      const health = yield* controller.health
      // An Event waiting its moment is a timer, like a renewal: not work left to do now.
      if (health.queueDepth > 0 || health.eventsDue > 0) {
        busy = { controller, queued: health.queueDepth > 0 }
        break
      }
    }
    if (busy === undefined) return
    // An Event being sent raises a change when the apiserver records it.
    yield* busy.queued ? busy.controller.idle : Deferred.await(change)
  }
}).pipe(withDeadline("the controller never went quiet"))
