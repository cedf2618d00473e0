/**
 * Events leave the reconcile's path: one background fiber sends them, in the order they were
 * raised, so mapping a Service never waits for the apiserver to store its Event. They also
 * yield to the work: while Services are being reconciled (`idle` has not completed), one Event
 * goes out per `busyInterval` at most and the rest follow once the burst is over, so a burst of
 * Services does not share the apiserver's (and the controller's) CPU with its own Events. An
 * Event not yet sent when a later one about the same Service says it all (`supersedes`: the
 * EnsuredLoadBalancer of a Service whose EnsuringLoadBalancer is still unsent) is dropped, and a
 * progress Event may wait a moment for that (`unlessSupersededWithin`): a Service ensured within
 * a second costs the apiserver one Event, not two.
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
  readonly record: (event: EventSpec, serviceKey: string, options?: RecordOptions) => Effect.Effect<void>
  /** Events waiting to be sent, those waiting their moment (`unlessSupersededWithin`) included. */
  readonly queued: Effect.Effect<number>
  /** Events that would be sent now, were the work done: `queued` less those waiting their moment. */
  readonly due: Effect.Effect<number>
}

/** How one Event relates to the others about its Service. */
export interface RecordOptions {
  /** An unsent Event of this reason about the same Service is dropped: this one says all it said. */
  readonly supersedes?: string
  /**
   * Sent only once this long has passed without a later Event superseding it (a progress Event);
   * one still waiting its moment at shutdown is not sent.
   */
  readonly unlessSupersededWithin?: Duration.Input
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
  /** Taken from the queue and not sent yet (waiting for the work, or for its moment). */
  readonly heldBack: Queued | undefined
  /** The Events in the queue (not yet taken), by Service key and reason. */
  readonly waiting: HashMap.HashMap<string, number>
  /** Ids of unsent Events a later one superseded. */
  readonly superseded: HashSet.HashSet<number>
  /** Progress Events still waiting their moment before they join the queue, by slot. */
  readonly pending: HashMap.HashMap<string, number>
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
      heldBack: undefined,
      waiting: HashMap.empty(),
      superseded: HashSet.empty(),
      pending: HashMap.empty()
    })
    const scope = yield* Effect.scope

    const send = ({ event, serviceKey }: Queued) =>
      kube.recordEvent(event).pipe(
        Effect.andThen(Effect.log(`event ${event.type} ${event.reason}: ${event.note}`)),
        Effect.catch((error) => Effect.logWarning(`could not record event ${event.reason}: ${error.message}`)),
        Effect.annotateLogs({ service: serviceKey })
      )

    /** Takes an Event out of the waiting set (and holds it, with `hold`); false when it was superseded. */
    const take = (item: Queued, hold: boolean) =>
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
          heldBack: hold && live ? item : now.heldBack
        }]
      })

    /** Lets go of the held Event; false when it was superseded while held. */
    const release = (item: Queued) =>
      Ref.modify(state, (now): readonly [boolean, SinkState] => [
        !HashSet.has(now.superseded, item.id),
        { ...now, heldBack: undefined, superseded: HashSet.remove(now.superseded, item.id) }
      ])

    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        const left = yield* Queue.clear(queue)
        const held = (yield* Ref.get(state)).heldBack
        const heldLive = held === undefined ? [] : (yield* release(held)) ? [held] : []
        const live = yield* Effect.filter(left, (item) => take(item, false))
        yield* Effect.forEach([...heldLive, ...live], send, { discard: true })
      }).pipe(Effect.timeout(options.shutdownGrace ?? Duration.seconds(2)), Effect.ignore)
    )
    const untilIdle = (options.idle ?? Effect.void).pipe(Effect.timeoutOption(options.busyInterval ?? Duration.seconds(1)))
    yield* Queue.take(queue).pipe(
      Effect.flatMap((item) =>
        Effect.flatMap(take(item, true), (live) =>
          live
            ? untilIdle.pipe(
              Effect.andThen(release(item)),
              Effect.flatMap((stillLive) => stillLive ? send(item) : Effect.void)
            )
            : Effect.void)
      ),
      Effect.forever,
      Effect.forkScoped
    )

    const enqueue = (item: Queued) =>
      Effect.gen(function*() {
        if (yield* Queue.offer(queue, item)) return
        yield* take(item, false)
        yield* Effect.logWarning(`event ${item.event.reason} dropped: more than ${capacity} are waiting`).pipe(
          Effect.annotateLogs({ service: item.serviceKey })
        )
      })

    const record = Effect.fn("EventSink.record")(
      function*(event: EventSpec, serviceKey: string, recordOptions?: RecordOptions) {
        const key = slot(serviceKey, event.reason)
        const wait = recordOptions?.unlessSupersededWithin
        const item = yield* Ref.modify(state, (now): readonly [Queued, SinkState] => {
          const item: Queued = { id: now.nextId, event, serviceKey }
          const supersedes = recordOptions?.supersedes === undefined ? undefined : slot(serviceKey, recordOptions.supersedes)
          const held = now.heldBack !== undefined && slot(now.heldBack.serviceKey, now.heldBack.event.reason) === supersedes
            ? now.heldBack.id
            : undefined
          const earlier = supersedes === undefined ? undefined : Option.getOrUndefined(HashMap.get(now.waiting, supersedes)) ?? held
          return [item, {
            ...now,
            nextId: now.nextId + 1,
            waiting: wait === undefined ? HashMap.set(now.waiting, key, item.id) : now.waiting,
            pending: wait === undefined
              ? supersedes === undefined ? now.pending : HashMap.remove(now.pending, supersedes)
              : HashMap.set(now.pending, key, item.id),
            superseded: earlier === undefined ? now.superseded : HashSet.add(now.superseded, earlier)
          }]
        })
        if (wait === undefined) return yield* enqueue(item)
        // Joins the queue after its moment, unless a later Event superseded it meanwhile.
        const due = Ref.modify(state, (now): readonly [boolean, SinkState] => {
          const mine = Option.getOrUndefined(HashMap.get(now.pending, key)) === item.id
          return [mine, mine ? { ...now, pending: HashMap.remove(now.pending, key), waiting: HashMap.set(now.waiting, key, item.id) } : now]
        })
        yield* Effect.sleep(wait).pipe(
          Effect.andThen(due),
          Effect.flatMap((mine) => mine ? enqueue(item) : Effect.void),
          Effect.forkIn(scope)
        )
      }
    )

    const counts = Effect.map(Effect.all([Queue.size(queue), Ref.get(state)]), ([size, now]) => ({
      due: size + (now.heldBack === undefined ? 0 : 1),
      pending: HashMap.size(now.pending)
    }))
    return {
      queued: Effect.map(counts, ({ due, pending }) => due + pending),
      due: Effect.map(counts, ({ due }) => due),
      record
    }
  })
