/**
 * A keyed work queue in the style of client-go's: a key waits at most once however many
 * events arrive for it (bursts coalesce), a key is never processed by two workers at once,
 * and a key that changes while being processed is processed again afterwards.
 */
import { Context, Effect, HashMap, HashSet, Layer, Option, Queue, Stream, SubscriptionRef } from "effect"

/** One key handed to a worker, with what the requests for it asked. */
export interface WorkItem {
  readonly key: string
  /** Read this key's ports from the router itself, rather than trusting the cached table. */
  readonly verify: boolean
  /** Only a watch event asked: the pass may be skipped if the object is as we last wrote it. */
  readonly onlyIfChanged: boolean
}

/** What one request for a key asks (default: verify, and a sure pass). */
export interface AddOptions {
  readonly verify?: boolean
  readonly onlyIfChanged?: boolean
}

/** The queue's operations. */
export interface WorkQueueShape {
  readonly add: (key: string, options?: AddOptions) => Effect.Effect<void>
  /** Waits for the next key and marks it in progress; pair every take with `done`. */
  readonly take: Effect.Effect<WorkItem>
  readonly done: (key: string) => Effect.Effect<void>
  /** Keys waiting or in progress. */
  readonly depth: Effect.Effect<number>
  /** Waits until no key is waiting or in progress. */
  readonly idle: Effect.Effect<void>
}

interface Requested {
  readonly verify: boolean
  readonly onlyIfChanged: boolean
}

interface State {
  /** key → what the coalesced requests asked for: verification if any did, a sure pass if any did. */
  readonly pending: HashMap.HashMap<string, Requested>
  readonly processing: HashSet.HashSet<string>
}

const isIdle = (state: State) => HashMap.size(state.pending) === 0 && HashSet.size(state.processing) === 0

/**
 * Builds a queue; its state is one `SubscriptionRef` (so `idle` waits on the state itself), its
 * order a `Queue` of keys.
 */
export const makeWorkQueue: Effect.Effect<WorkQueueShape> = Effect.gen(function*() {
  const ready = yield* Queue.unbounded<string>()
  const state = yield* SubscriptionRef.make<State>({ pending: HashMap.empty(), processing: HashSet.empty() })

  const add = Effect.fn("WorkQueue.add")(function*(key: string, options?: AddOptions) {
    const asked: Requested = { verify: options?.verify ?? true, onlyIfChanged: options?.onlyIfChanged ?? false }
    const hand = yield* SubscriptionRef.modify(state, (before) => {
      const waiting = HashMap.get(before.pending, key)
      const merged = Option.isSome(waiting)
        ? { verify: waiting.value.verify || asked.verify, onlyIfChanged: waiting.value.onlyIfChanged && asked.onlyIfChanged }
        : asked
      // A key already waiting is in `ready` once; one in progress is handed out again by `done`.
      return [
        Option.isNone(waiting) && !HashSet.has(before.processing, key),
        { ...before, pending: HashMap.set(before.pending, key, merged) }
      ]
    })
    if (hand) yield* Queue.offer(ready, key)
  })

  const take = Queue.take(ready).pipe(
    Effect.flatMap((key) =>
      SubscriptionRef.modify(state, (before): readonly [WorkItem, State] => {
        const requested = Option.getOrElse(HashMap.get(before.pending, key), () => ({ verify: true, onlyIfChanged: false }))
        return [
          { key, ...requested },
          { pending: HashMap.remove(before.pending, key), processing: HashSet.add(before.processing, key) }
        ]
      })
    ),
    Effect.withSpan("WorkQueue.take")
  )

  const done = Effect.fn("WorkQueue.done")(function*(key: string) {
    const now = yield* SubscriptionRef.updateAndGet(state, (before) => ({
      ...before,
      processing: HashSet.remove(before.processing, key)
    }))
    if (HashMap.has(now.pending, key)) yield* Queue.offer(ready, key)
  })

  const depth = Effect.map(SubscriptionRef.get(state), (now) => {
    let count = HashSet.size(now.processing)
    for (const key of HashMap.keys(now.pending)) if (!HashSet.has(now.processing, key)) count++
    return count
  })

  const idle = SubscriptionRef.changes(state).pipe(Stream.filter(isIdle), Stream.take(1), Stream.runDrain)

  return { add, take, done, depth, idle }
})

/** The controller's one work queue of Service keys. */
export class WorkQueue extends Context.Service<WorkQueue, WorkQueueShape>()("edge-ccm/controller/WorkQueue") {
  /** A fresh, empty queue. */
  static readonly layer: Layer.Layer<WorkQueue> = Layer.effect(WorkQueue, makeWorkQueue)
}
