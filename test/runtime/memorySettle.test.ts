import { assert, describe, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Exit, Fiber } from "effect"
import { TestClock } from "effect/testing"
import { settleMemory } from "../../src/runtime/memorySettle.ts"

const MiB = 1024 * 1024
const options = { checkEvery: Duration.seconds(15), growth: 4 * MiB, minInterval: Duration.minutes(5) }

/** A heap whose size the test sets, and a collection that brings it back to `floor`. */
const fakeHeap = (floor: number) => {
  const heap = { size: floor, collections: 0 }
  return {
    heap,
    deps: {
      heapSize: () => heap.size,
      collect: () => {
        heap.collections += 1
        heap.size = floor
      }
    }
  }
}

describe("settleMemory", () => {
  it.effect("collects once after the heap grew by a burst and the controller is quiet, not again until it grows again and five minutes passed", () =>
    Effect.gen(function*() {
      const { deps, heap } = fakeHeap(20 * MiB)
      const fiber = yield* Effect.forkChild(settleMemory({ ...deps, idle: Effect.void }, options))
      yield* TestClock.adjust(Duration.seconds(60))
      assert.strictEqual(heap.collections, 0, "no growth, no collection")
      heap.size = 23 * MiB
      yield* TestClock.adjust(Duration.seconds(30))
      assert.strictEqual(heap.collections, 0, "3 MiB of growth is below the threshold")
      heap.size = 40 * MiB
      yield* TestClock.adjust(Duration.seconds(15))
      assert.strictEqual(heap.collections, 1)
      assert.strictEqual(heap.size, 20 * MiB)
      yield* TestClock.adjust(Duration.seconds(60))
      assert.strictEqual(heap.collections, 1, "back at its size: nothing more to give back")
      heap.size = 30 * MiB
      yield* TestClock.adjust(Duration.seconds(15))
      assert.strictEqual(heap.collections, 1, "grown again, but within five minutes of the last")
      yield* TestClock.adjust(Duration.minutes(4))
      assert.strictEqual(heap.collections, 2)
      yield* Fiber.interrupt(fiber)
    }))

  it.effect("waits while Services are queued or being reconciled", () =>
    Effect.gen(function*() {
      const { deps, heap } = fakeHeap(20 * MiB)
      const done = yield* Deferred.make<void>()
      const collected = yield* Deferred.make<void>()
      const collect = () => {
        deps.collect()
        Deferred.doneUnsafe(collected, Exit.void)
      }
      const fiber = yield* Effect.forkChild(settleMemory({ ...deps, collect, idle: Deferred.await(done) }, options))
      yield* TestClock.adjust(Duration.seconds(1))
      heap.size = 60 * MiB
      yield* TestClock.adjust(Duration.seconds(120))
      assert.strictEqual(heap.collections, 0, "busy: no collection")
      yield* Deferred.succeed(done, undefined)
      yield* Deferred.await(collected)
      assert.strictEqual(heap.collections, 1, "collected once the work ended")
      yield* Fiber.interrupt(fiber)
    }))
})
