/**
 * A keyed work queue in the style of client-go's: a key waits at most once however many
 * events arrive for it (bursts coalesce), a key is never processed by two workers at once,
 * and a key that changes while being processed is processed again afterwards.
 */
import { Effect, Latch, Queue } from "effect"

export interface WorkItem {
  readonly key: string
  /** Read this key's ports from the router itself, rather than trusting the cached table. */
  readonly verify: boolean
  /** Only a watch event asked: the pass may be skipped if the object is as we last wrote it. */
  readonly onlyIfChanged: boolean
}

export interface AddOptions {
  readonly verify?: boolean
  readonly onlyIfChanged?: boolean
}

export interface WorkQueue {
  readonly add: (key: string, options?: AddOptions) => Effect.Effect<void>
  /** Waits for the next key and marks it in progress; pair every take with `done`. */
  readonly take: Effect.Effect<WorkItem>
  readonly done: (key: string) => Effect.Effect<void>
  /** Keys waiting or in progress. */
  readonly depth: Effect.Effect<number>
  /** Waits until no key is waiting or in progress. */
  readonly idle: Effect.Effect<void>
}

export const makeWorkQueue: Effect.Effect<WorkQueue> = Effect.gen(function*() {
  const ready = yield* Queue.unbounded<string>()
  // key → what the coalesced requests asked for: verification if any did, a sure pass if any did
  const pending = new Map<string, { verify: boolean; onlyIfChanged: boolean }>()
  const processing = new Set<string>()
  const idleLatch = Latch.makeUnsafe(true)
  const noteDepth = () => {
    if (pending.size === 0 && processing.size === 0) idleLatch.openUnsafe()
    else idleLatch.closeUnsafe()
  }

  const add = (key: string, options?: AddOptions) =>
    Effect.suspend(() => {
      const verify = options?.verify ?? true
      const onlyIfChanged = options?.onlyIfChanged ?? false
      const waiting = pending.get(key)
      if (waiting !== undefined) {
        pending.set(key, { verify: waiting.verify || verify, onlyIfChanged: waiting.onlyIfChanged && onlyIfChanged })
        return Effect.void
      }
      pending.set(key, { verify, onlyIfChanged })
      noteDepth()
      return processing.has(key) ? Effect.void : Queue.offer(ready, key).pipe(Effect.asVoid)
    })

  const take = Queue.take(ready).pipe(
    Effect.map((key): WorkItem => {
      const requested = pending.get(key) ?? { verify: true, onlyIfChanged: false }
      pending.delete(key)
      processing.add(key)
      return { key, ...requested }
    })
  )

  const done = (key: string) =>
    Effect.suspend(() => {
      processing.delete(key)
      noteDepth()
      return pending.has(key) ? Queue.offer(ready, key).pipe(Effect.asVoid) : Effect.void
    })

  const depth = Effect.sync(() => new Set([...pending.keys(), ...processing]).size)

  return { add, take, done, depth, idle: idleLatch.await }
})
