import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber } from "effect"
import { makeWorkQueue } from "../../src/controller/WorkQueue.ts"

/** Whether `effect` has completed after every fiber that can run has run. */
const completes = <A>(fiber: Fiber.Fiber<A>) =>
  Effect.gen(function*() {
    for (let round = 0; round < 20; round++) yield* Effect.yieldNow
    return fiber.pollUnsafe() !== undefined
  })

describe("WorkQueue", () => {
  it.effect("coalesces a key added many times while it waits, merging what was asked", () =>
    Effect.gen(function*() {
      const queue = yield* makeWorkQueue
      yield* queue.add("a", { verify: false, onlyIfChanged: true })
      yield* queue.add("a", { verify: true, onlyIfChanged: true })
      yield* queue.add("b", { verify: false })
      assert.strictEqual(yield* queue.depth, 2)
      assert.deepStrictEqual(yield* queue.take, { key: "a", verify: true, onlyIfChanged: true })
      assert.deepStrictEqual(yield* queue.take, { key: "b", verify: false, onlyIfChanged: false })
    }))

  it.effect("holds a key changed while in progress until it is done, then hands it out again", () =>
    Effect.gen(function*() {
      const queue = yield* makeWorkQueue
      yield* queue.add("a")
      const first = yield* queue.take
      yield* queue.add("a")
      const second = yield* Effect.forkChild(queue.take)
      assert.isFalse(yield* completes(second), "a key is never handed to two workers at once")
      yield* queue.done(first.key)
      assert.strictEqual((yield* Fiber.join(second)).key, "a")
    }))

  it.effect("is idle only when no key waits and none is in progress", () =>
    Effect.gen(function*() {
      const queue = yield* makeWorkQueue
      assert.isTrue(yield* completes(yield* Effect.forkChild(queue.idle)), "an empty queue is idle")
      yield* queue.add("a")
      const waiting = yield* Effect.forkChild(queue.idle)
      assert.isFalse(yield* completes(waiting), "a key waits")
      const item = yield* queue.take
      assert.isFalse(yield* completes(waiting), "a key is in progress")
      yield* queue.done(item.key)
      assert.isTrue(yield* completes(waiting), "done, nothing left")
    }))
})
