/**
 * Events leave the reconcile's path: one background fiber sends them, in the order they were
 * raised, so mapping a Service never waits for the apiserver to store its Event. They also
 * yield to the work: while Services are being reconciled (`idle` has not completed), one Event
 * goes out per `busyInterval` at most and the rest follow once the burst is over, so a burst of
 * Services does not share the apiserver's (and the controller's) CPU with its own Events. As with
 * client-go's recorder, a flood past `capacity` is dropped (and logged) rather than slowing the
 * controller down; what is still queued at shutdown gets a short grace to be sent.
 */
import { Duration, Effect, Queue, type Scope } from "effect"
import type { Kube } from "../kube/Kube.ts"
import type { EventSpec } from "../kube/requests.ts"

export interface EventSink {
  /** Queues an Event about the Service `serviceKey` (namespace/name); never waits for the apiserver. */
  readonly record: (event: EventSpec, serviceKey: string) => Effect.Effect<void>
  /** Events waiting to be sent. */
  readonly queued: Effect.Effect<number>
}

interface Queued {
  readonly event: EventSpec
  readonly serviceKey: string
}

export interface EventSinkOptions {
  readonly capacity?: number
  readonly shutdownGrace?: Duration.Input
  /** Completes when no reconcile is under way; by default at once. */
  readonly idle?: Effect.Effect<void>
  /** While busy, the longest an Event waits (default 1 s). */
  readonly busyInterval?: Duration.Input
}

export const makeEventSink = (
  kube: Kube["Service"],
  options: EventSinkOptions = {}
): Effect.Effect<EventSink, never, Scope.Scope> =>
  Effect.gen(function*() {
    const queue = yield* Queue.dropping<Queued>(options.capacity ?? 1000)

    const send = ({ event, serviceKey }: Queued) =>
      kube.recordEvent(event).pipe(
        Effect.andThen(Effect.log(`event ${event.type} ${event.reason}: ${event.note}`)),
        Effect.catch((error) => Effect.logWarning(`could not record event ${event.reason}: ${error.message}`)),
        Effect.annotateLogs({ service: serviceKey })
      )

    // Taken from the queue and waiting for the work to be done: sent at shutdown with the rest.
    let heldBack: Queued | undefined
    yield* Effect.addFinalizer(() =>
      Queue.clear(queue).pipe(
        Effect.flatMap((left) => Effect.forEach(heldBack === undefined ? left : [heldBack, ...left], send, { discard: true })),
        Effect.timeout(options.shutdownGrace ?? Duration.seconds(2)),
        Effect.ignore
      )
    )
    const untilIdle = (options.idle ?? Effect.void).pipe(Effect.timeoutOption(options.busyInterval ?? Duration.seconds(1)))
    yield* Queue.take(queue).pipe(
      Effect.tap((item) => Effect.sync(() => void (heldBack = item))),
      Effect.tap(() => untilIdle),
      Effect.flatMap((item) => Effect.suspend(() => {
        heldBack = undefined
        return send(item)
      })),
      Effect.forever,
      Effect.forkScoped
    )

    return {
      queued: Queue.size(queue),
      record: (event, serviceKey) =>
        Queue.offer(queue, { event, serviceKey }).pipe(
          Effect.flatMap((queued) =>
            queued
              ? Effect.void
              : Effect.logWarning(`event ${event.reason} dropped: more than ${options.capacity ?? 1000} are waiting`).pipe(
                Effect.annotateLogs({ service: serviceKey })
              )
          )
        )
    }
  })
