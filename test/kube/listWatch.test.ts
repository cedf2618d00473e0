import { assert, describe, it } from "@effect/vitest"
import type { Cause } from "effect"
import { Effect, Exit, Fiber, Metric, Queue, Ref, Stream } from "effect"
import { TestClock } from "effect/testing"
import { KubeError } from "../../src/kube/KubeError.ts"
import type { KubeFailure } from "../../src/kube/KubeError.ts"
import type { Listed, ListWatchSource, RawWatchEvent, WatchEvent } from "../../src/kube/listWatch.ts"
import { backoffDelay, listWatch, watchRestarts } from "../../src/kube/listWatch.ts"

interface Obj {
  readonly metadata: { readonly name: string; readonly resourceVersion: string }
}
const obj = (name: string, resourceVersion: string): Obj => ({ metadata: { name, resourceVersion } })

interface WatchCall {
  readonly resourceVersion: string
  readonly events: Queue.Queue<RawWatchEvent<Obj>, KubeFailure | Cause.Done>
  readonly closed: Ref.Ref<boolean>
}

/** A scripted source: each list call takes the next reply; each watch call hands the test its queue. */
const makeSource = Effect.gen(function*() {
  const listReplies = yield* Queue.unbounded<Exit.Exit<Listed<Obj>, KubeFailure>>()
  const listCalls = yield* Ref.make(0)
  const watches = yield* Queue.unbounded<WatchCall>()
  const source: ListWatchSource<Obj> = {
    resource: "things",
    list: Ref.update(listCalls, (n) => n + 1).pipe(
      Effect.andThen(Queue.take(listReplies)),
      Effect.flatten
    ),
    watch: (resourceVersion) =>
      Stream.unwrap(Effect.gen(function*() {
        const events = yield* Queue.unbounded<RawWatchEvent<Obj>, KubeFailure | Cause.Done>()
        const closed = yield* Ref.make(false)
        yield* Queue.offer(watches, { resourceVersion, events, closed })
        return Stream.fromQueue(events).pipe(Stream.ensuring(Ref.set(closed, true)))
      }))
  }
  const out = yield* Queue.unbounded<WatchEvent<Obj>>()
  const fiber = yield* listWatch(source, { jitter: 0 }).pipe(
    Stream.runForEach((event) => Queue.offer(out, event)),
    Effect.forkChild
  )
  return { listReplies, listCalls, watches, out, fiber }
})

type Harness = Effect.Success<typeof makeSource>

const listOk = (h: Harness, items: ReadonlyArray<Obj>, resourceVersion: string) =>
  Queue.offer(h.listReplies, Exit.succeed({ items, resourceVersion }))

const networkError = new KubeError({
  verb: "watch",
  resource: "things",
  reason: "ECONNRESET",
  message: "cannot watch things: socket hang up"
})

/** Lets forked fibers run until they block (on a queue or on the test clock). */
const settle = Effect.gen(function*() {
  for (let i = 0; i < 20; i++) yield* Effect.yieldNow
})

const pending = <A, E>(queue: Queue.Queue<A, E>) => Queue.size(queue)

const restarts = (reason: string) =>
  Metric.value(Metric.withAttributes(watchRestarts, { resource: "things", reason })).pipe(
    Effect.map((state) => state.count)
  )

describe("listWatch", () => {
  it.effect("lists first and emits the complete set as Synced, then watches from the list's resourceVersion", () =>
    Effect.gen(function*() {
      const h = yield* makeSource
      yield* listOk(h, [obj("a", "5"), obj("b", "7")], "10")
      const synced = yield* Queue.take(h.out)
      assert.deepStrictEqual(synced, { _tag: "Synced", items: [obj("a", "5"), obj("b", "7")] })
      const watch = yield* Queue.take(h.watches)
      assert.strictEqual(watch.resourceVersion, "10")
      yield* Fiber.interrupt(h.fiber)
    }))

  it.effect("turns ADDED/MODIFIED into Upserted and DELETED into Deleted, following each resourceVersion", () =>
    Effect.gen(function*() {
      const h = yield* makeSource
      yield* listOk(h, [], "10")
      yield* Queue.take(h.out)
      const first = yield* Queue.take(h.watches)
      yield* Queue.offer(first.events, { type: "ADDED", object: obj("a", "11") })
      yield* Queue.offer(first.events, { type: "MODIFIED", object: obj("a", "12") })
      yield* Queue.offer(first.events, { type: "DELETED", object: obj("a", "13") })
      assert.deepStrictEqual(yield* Queue.take(h.out), { _tag: "Upserted", object: obj("a", "11") })
      assert.deepStrictEqual(yield* Queue.take(h.out), { _tag: "Upserted", object: obj("a", "12") })
      assert.deepStrictEqual(yield* Queue.take(h.out), { _tag: "Deleted", object: obj("a", "13") })
      // The server's timeoutSeconds ends the watch normally: resume from the last RV, no relist.
      yield* TestClock.adjust("2 seconds")
      yield* Queue.end(first.events)
      const second = yield* Queue.take(h.watches)
      assert.strictEqual(second.resourceVersion, "13")
      assert.strictEqual(yield* Ref.get(h.listCalls), 1)
      assert.isTrue(yield* Ref.get(first.closed))
      yield* Fiber.interrupt(h.fiber)
    }))

  it.effect("keeps the resourceVersion fresh from bookmarks without emitting anything", () =>
    Effect.gen(function*() {
      const h = yield* makeSource
      yield* listOk(h, [], "10")
      yield* Queue.take(h.out)
      const first = yield* Queue.take(h.watches)
      yield* Queue.offer(first.events, { type: "BOOKMARK", resourceVersion: "42" })
      yield* Queue.end(first.events)
      const second = yield* Queue.take(h.watches)
      assert.strictEqual(second.resourceVersion, "42")
      assert.strictEqual(yield* pending(h.out), 0)
      yield* Fiber.interrupt(h.fiber)
    }))

  it.effect("relists on a 410 ERROR event and emits Synced again", () =>
    Effect.gen(function*() {
      const h = yield* makeSource
      const before = yield* restarts("expired")
      yield* listOk(h, [obj("a", "5")], "10")
      yield* Queue.take(h.out)
      const first = yield* Queue.take(h.watches)
      yield* Queue.offer(first.events, {
        type: "ERROR",
        status: { kind: "Status", code: 410, reason: "Expired", message: "too old resource version: 10 (50)" }
      })
      yield* settle
      assert.strictEqual(yield* Ref.get(h.listCalls), 2)
      yield* listOk(h, [obj("b", "55")], "60")
      assert.deepStrictEqual(yield* Queue.take(h.out), { _tag: "Synced", items: [obj("b", "55")] })
      const second = yield* Queue.take(h.watches)
      assert.strictEqual(second.resourceVersion, "60")
      assert.isTrue(yield* Ref.get(first.closed))
      assert.strictEqual((yield* restarts("expired")) - before, 1)
      yield* Fiber.interrupt(h.fiber)
    }))

  it.effect("relists on an HTTP 410 from the watch request as well", () =>
    Effect.gen(function*() {
      const h = yield* makeSource
      yield* listOk(h, [], "10")
      yield* Queue.take(h.out)
      const first = yield* Queue.take(h.watches)
      yield* Queue.fail(
        first.events,
        new KubeError({ verb: "watch", resource: "things", status: 410, reason: "Gone", message: "gone" })
      )
      yield* listOk(h, [], "70")
      assert.deepStrictEqual(yield* Queue.take(h.out), { _tag: "Synced", items: [] })
      assert.strictEqual((yield* Queue.take(h.watches)).resourceVersion, "70")
      yield* Fiber.interrupt(h.fiber)
    }))

  it.effect("backs off after a dropped connection, then resumes from the last resourceVersion", () =>
    Effect.gen(function*() {
      const h = yield* makeSource
      const before = yield* restarts("watch_error")
      yield* listOk(h, [], "10")
      yield* Queue.take(h.out)
      const first = yield* Queue.take(h.watches)
      yield* Queue.offer(first.events, { type: "ADDED", object: obj("a", "11") })
      yield* Queue.take(h.out)
      yield* Queue.fail(first.events, networkError)
      yield* settle
      yield* TestClock.adjust("999 millis")
      assert.strictEqual(yield* pending(h.watches), 0, "no reconnect before the backoff elapsed")
      yield* TestClock.adjust("1 millis")
      const second = yield* Queue.take(h.watches)
      assert.strictEqual(second.resourceVersion, "11")
      assert.strictEqual(yield* Ref.get(h.listCalls), 1, "a dropped connection does not relist")
      assert.strictEqual((yield* restarts("watch_error")) - before, 1)
      yield* Fiber.interrupt(h.fiber)
    }))

  it.effect("doubles the backoff on consecutive failures up to the cap", () =>
    Effect.gen(function*() {
      const h = yield* makeSource
      yield* listOk(h, [], "10")
      yield* Queue.take(h.out)
      const delays: Array<number> = []
      let watch = yield* Queue.take(h.watches)
      for (let attempt = 0; attempt < 7; attempt++) {
        yield* Queue.fail(watch.events, networkError)
        yield* settle
        let waited = 0
        while ((yield* pending(h.watches)) === 0) {
          yield* TestClock.adjust("500 millis")
          waited += 500
          yield* settle
        }
        delays.push(waited)
        watch = yield* Queue.take(h.watches)
      }
      assert.deepStrictEqual(delays, [1000, 2000, 4000, 8000, 16000, 30000, 30000])
      yield* Fiber.interrupt(h.fiber)
    }))

  it.effect("backs off when the list fails, and retries the list", () =>
    Effect.gen(function*() {
      const h = yield* makeSource
      const before = yield* restarts("list_error")
      yield* Queue.offer(
        h.listReplies,
        Exit.fail(new KubeError({ verb: "list", resource: "things", status: 503, reason: "ServiceUnavailable", message: "x" }))
      )
      yield* settle
      assert.strictEqual(yield* Ref.get(h.listCalls), 1)
      yield* TestClock.adjust("999 millis")
      assert.strictEqual(yield* Ref.get(h.listCalls), 1, "no relist before the backoff elapsed")
      yield* TestClock.adjust("1 millis")
      yield* settle
      assert.strictEqual(yield* Ref.get(h.listCalls), 2)
      yield* listOk(h, [obj("a", "1")], "3")
      assert.deepStrictEqual(yield* Queue.take(h.out), { _tag: "Synced", items: [obj("a", "1")] })
      assert.strictEqual((yield* restarts("list_error")) - before, 1)
      yield* Fiber.interrupt(h.fiber)
    }))

  it.effect("treats a relist that fails after a 410 like any list failure", () =>
    Effect.gen(function*() {
      const h = yield* makeSource
      yield* listOk(h, [], "10")
      yield* Queue.take(h.out)
      const first = yield* Queue.take(h.watches)
      yield* Queue.offer(first.events, { type: "ERROR", status: { code: 410, reason: "Expired" } })
      yield* Queue.offer(
        h.listReplies,
        Exit.fail(new KubeError({ verb: "list", resource: "things", reason: "ECONNREFUSED", message: "refused" }))
      )
      yield* settle
      assert.strictEqual(yield* Ref.get(h.listCalls), 2)
      // The failed relist is the second failure in a row: 2 s.
      yield* TestClock.adjust("1999 millis")
      assert.strictEqual(yield* Ref.get(h.listCalls), 2)
      yield* TestClock.adjust("1 millis")
      yield* settle
      assert.strictEqual(yield* Ref.get(h.listCalls), 3)
      yield* listOk(h, [], "80")
      assert.deepStrictEqual(yield* Queue.take(h.out), { _tag: "Synced", items: [] })
      assert.strictEqual((yield* Queue.take(h.watches)).resourceVersion, "80")
      yield* Fiber.interrupt(h.fiber)
    }))

  it.effect("backs off when a watch closes at once without any event, instead of spinning", () =>
    Effect.gen(function*() {
      const h = yield* makeSource
      yield* listOk(h, [], "10")
      yield* Queue.take(h.out)
      const first = yield* Queue.take(h.watches)
      yield* Queue.end(first.events)
      yield* settle
      assert.strictEqual(yield* pending(h.watches), 0)
      yield* TestClock.adjust("1 second")
      assert.strictEqual((yield* Queue.take(h.watches)).resourceVersion, "10")
      yield* Fiber.interrupt(h.fiber)
    }))

  it.effect("other ERROR events back off and resume from the same resourceVersion", () =>
    Effect.gen(function*() {
      const h = yield* makeSource
      yield* listOk(h, [], "10")
      yield* Queue.take(h.out)
      const first = yield* Queue.take(h.watches)
      yield* Queue.offer(first.events, { type: "ERROR", status: { code: 500, reason: "InternalError", message: "etcd" } })
      yield* settle
      assert.strictEqual(yield* pending(h.watches), 0)
      yield* TestClock.adjust("1 second")
      assert.strictEqual((yield* Queue.take(h.watches)).resourceVersion, "10")
      assert.strictEqual(yield* Ref.get(h.listCalls), 1)
      yield* Fiber.interrupt(h.fiber)
    }))

  it.effect("interrupting the consumer closes the watch", () =>
    Effect.gen(function*() {
      const h = yield* makeSource
      yield* listOk(h, [], "10")
      yield* Queue.take(h.out)
      const watch = yield* Queue.take(h.watches)
      assert.isFalse(yield* Ref.get(watch.closed))
      yield* Fiber.interrupt(h.fiber)
      assert.isTrue(yield* Ref.get(watch.closed))
    }))

  it("computes capped exponential delays", () => {
    assert.deepStrictEqual(
      [0, 1, 2, 3, 4, 5, 6, 40].map((n) => backoffDelay(n, "1 second", "30 seconds")),
      [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
    )
  })

  it.effect("jitter keeps each delay within [d·(1−jitter), d]", () =>
    Effect.gen(function*() {
      const listReplies = yield* Queue.unbounded<Exit.Exit<Listed<Obj>, KubeFailure>>()
      const calls = yield* Ref.make(0)
      const source: ListWatchSource<Obj> = {
        resource: "things",
        list: Ref.update(calls, (n) => n + 1).pipe(Effect.andThen(Queue.take(listReplies)), Effect.flatten),
        watch: () => Stream.empty
      }
      const fiber = yield* listWatch(source, { jitter: 0.5 }).pipe(Stream.runDrain, Effect.forkChild)
      yield* Queue.offer(listReplies, Exit.fail(networkError))
      yield* settle
      // First delay is drawn from [500 ms, 1000 ms].
      yield* TestClock.adjust("499 millis")
      yield* settle
      assert.strictEqual(yield* Ref.get(calls), 1)
      yield* TestClock.adjust("501 millis")
      yield* settle
      assert.strictEqual(yield* Ref.get(calls), 2)
      yield* Fiber.interrupt(fiber)
    }))
})
