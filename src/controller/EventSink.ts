/**
 * Events leave the reconcile's path: one background fiber sends them, in the order they were
 * raised, so mapping a Service never waits for the apiserver to store its Event. They also
 * yield to the work: while Services are being reconciled (`idle` has not completed), one Event
 * goes out per `busyInterval` at most and the rest follow once the burst is over, so a burst of
 * Services does not share the apiserver's (and the controller's) CPU with its own Events. An
 * Event held back behind others when a later one about the same Service says it all
 * (`supersedes`: the EnsuredLoadBalancer of a Service whose EnsuringLoadBalancer still waits
 * behind a burst's Events) is dropped; one next in line is sent as it is.
 * As with client-go's recorder, a flood past `capacity` is dropped (and logged) rather than
 * slowing the controller down; what is still queued at shutdown gets a short grace to be sent.
 */
import { Duration, Effect, HashMap, HashSet, Option, Queue, Ref, type Scope } from "effect"
import type { Kube } from "../kube/Kube.ts"
import type { EventSpec } from "../kube/requests.ts"

/** The queue of Events to send. */
export interface EventSink {
  /**
   * Queues an Event about the Service `serviceKey` (namespace/name); never waits for the
   * apiserver. With `supersedes`, an Event of that reason about the same Service that still
   * waits behind others is not sent: this one says all it said.
   */
  readonly record: (event: EventSpec, serviceKey: string, options?: { readonly supersedes?: string }) => Effect.Effect<void>
  /** Events waiting to be sent. */
  readonly queued: Effect.Effect<number>
}

interface Queued {
  readonly id: number
  readonly event: EventSpec
  readonly serviceKey: string
}

/** How the sink paces itself. */
export interface EventSinkOptions {
  /**
   * Events that may wait (default 4096; still a bound): a burst of 500 new Services
   * raises 1,500 (GatewaySelected, EnsuringLoadBalancer, EnsuredLoadBalancer), and 1,000 lost
   * a third of them.
   */
  readonly capacity?: number
  readonly shutdownGrace?: Duration.Input
  /** Completes when no reconcile is under way; by default at once. */
  readonly idle?: Effect.Effect<void>
  /** While busy, the longest an Event waits (default 1 s). */
  readonly busyInterval?: Duration.Input
}

interface SinkState {
  readonly nextId: number
  /** The id of the Event the sender took last: the one after it is next in line. */
  readonly lastTaken: number
  /** Taken from the queue and waiting for the work to be done: sent at shutdown with the rest. */
  readonly heldBack: Queued | undefined
  /** The Events in the queue (not yet taken), by Service key and reason. */
  readonly waiting: HashMap.HashMap<string, number>
  /** Ids of queued Events a later one superseded. */
  readonly superseded: HashSet.HashSet<number>
}

const slot = (serviceKey: string, reason: string) => `${serviceKey}\u0000${reason}`

/** Starts the sender fiber in the caller's scope and returns the sink. */
export const makeEventSink = (
  kube: Kube["Service"],
  options: EventSinkOptions = {}
): Effect.Effect<EventSink, never, Scope.Scope> =>
  Effect.gen(function*() {
    const capacity = options.capacity ?? 4096
    const queue = yield* Queue.dropping<Queued>(capacity)
    const state = yield* Ref.make<SinkState>({
      nextId: 0,
      lastTaken: -1,
      heldBack: undefined,
      waiting: HashMap.empty(),
      superseded: HashSet.empty()
    })

    const send = ({ event, serviceKey }: Queued) =>
      kube.recordEvent(event).pipe(
        Effect.andThen(Effect.log(`event ${event.type} ${event.reason}: ${event.note}`)),
        Effect.catch((error) => Effect.logWarning(`could not record event ${event.reason}: ${error.message}`)),
        Effect.annotateLogs({ service: serviceKey })
      )

    /** Takes an Event out of the waiting set; false when it was superseded meanwhile. */
    const claim = (item: Queued, hold: boolean) =>
      Ref.modify(state, (now): readonly [boolean, SinkState] => {
        const key = slot(item.serviceKey, item.event.reason)
        const waiting = Option.getOrUndefined(HashMap.get(now.waiting, key)) === item.id
          ? HashMap.remove(now.waiting, key)
          : now.waiting
        const live = !HashSet.has(now.superseded, item.id)
        return [live, {
          ...now,
          waiting,
          superseded: HashSet.remove(now.superseded, item.id),
          heldBack: hold && live ? item : now.heldBack,
          lastTaken: hold ? item.id : now.lastTaken
        }]
      })

    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        const left = yield* Queue.clear(queue)
        const held = (yield* Ref.get(state)).heldBack
        const live = yield* Effect.filter(left, (item) => claim(item, false))
        yield* Effect.forEach(held === undefined ? live : [held, ...live], send, { discard: true })
      }).pipe(Effect.timeout(options.shutdownGrace ?? Duration.seconds(2)), Effect.ignore)
    )
    const untilIdle = (options.idle ?? Effect.void).pipe(Effect.timeoutOption(options.busyInterval ?? Duration.seconds(1)))
    yield* Queue.take(queue).pipe(
      Effect.flatMap((item) =>
        Effect.flatMap(claim(item, true), (live) =>
          live
            ? untilIdle.pipe(
              Effect.andThen(Ref.update(state, (now) => ({ ...now, heldBack: undefined }))),
              Effect.andThen(send(item))
            )
            : Effect.void)
      ),
      Effect.forever,
      Effect.forkScoped
    )

    const record = Effect.fn("EventSink.record")(
      function*(event: EventSpec, serviceKey: string, recordOptions?: { readonly supersedes?: string }) {
        const item = yield* Ref.modify(state, (now): readonly [Queued, SinkState] => {
          const item: Queued = { id: now.nextId, event, serviceKey }
          const earlier = recordOptions?.supersedes === undefined
            ? Option.none<number>()
            : Option.filter(
              HashMap.get(now.waiting, slot(serviceKey, recordOptions.supersedes)),
              // Next in line (nothing held back, nothing before it): it goes out as it is.
              (id) => now.heldBack !== undefined || id !== now.lastTaken + 1
            )
          return [item, {
            ...now,
            nextId: now.nextId + 1,
            waiting: HashMap.set(now.waiting, slot(serviceKey, event.reason), item.id),
            superseded: Option.isSome(earlier) ? HashSet.add(now.superseded, earlier.value) : now.superseded
          }]
        })
        if (yield* Queue.offer(queue, item)) return
        yield* claim(item, false)
        yield* Effect.logWarning(`event ${event.reason} dropped: more than ${capacity} are waiting`).pipe(
          Effect.annotateLogs({ service: serviceKey })
        )
      }
    )

    return { queued: Queue.size(queue), record }
  })
