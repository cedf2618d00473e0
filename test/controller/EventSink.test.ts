import { assert, describe, it } from "@effect/vitest"
import { Deferred, type Duration, Effect, Latch, Scope } from "effect"
import { TestClock } from "effect/testing"
import { makeEventSink } from "../../src/controller/EventSink.ts"
import { type EventSpec, Kube } from "../../src/kube/Kube.ts"
import { makeInMemoryKube } from "../support/InMemoryKube.ts"
import { until } from "../support/quiescence.ts"

const event = (reason: string, name = "web"): EventSpec => ({
  regarding: { namespace: "default", name, kind: "Service", apiVersion: "v1" },
  type: "Normal",
  reason,
  action: "Ensure",
  note: reason
})

const serviceOf = (kube: ReturnType<typeof makeInMemoryKube>) =>
  Effect.provide(
    Effect.gen(function*() {
      return yield* Kube
    }),
    kube.layer
  )

/** The in-memory apiserver, with every recordEvent held until `release` completes. */
const slowKube = Effect.gen(function*() {
  const kube = makeInMemoryKube()
  const service = yield* serviceOf(kube)
  const release = yield* Deferred.make<void>()
  const held = { ...service, recordEvent: (spec: EventSpec) => Deferred.await(release).pipe(Effect.andThen(service.recordEvent(spec))) }
  return { kube, held, release }
})

/** A sink whose work stays under way until `idle` opens. */
const busySink = (busyInterval: Duration.Input) =>
  Effect.gen(function*() {
    const kube = makeInMemoryKube()
    const idle = yield* Latch.make(false)
    const sink = yield* makeEventSink(yield* serviceOf(kube), { idle: idle.await, busyInterval })
    return { kube, idle, sink }
  })

describe("EventSink", () => {
  it.effect("returns at once and sends in the order raised", () =>
    Effect.gen(function*() {
      const { kube, held, release } = yield* slowKube
      const sink = yield* makeEventSink(held)
      for (const reason of ["A", "B", "C"]) yield* sink.record(event(reason), "default/web")
      // Nothing stored yet: the apiserver is held, and record did not wait for it.
      assert.deepStrictEqual(kube.events, [])
      yield* Deferred.succeed(release, undefined)
      yield* until("three Events stored", () => kube.events.length >= 3)
      assert.deepStrictEqual(kube.events.map((e) => e.reason), ["A", "B", "C"])
    }).pipe(Effect.scoped))

  it.effect("drops what exceeds its capacity instead of waiting", () =>
    Effect.gen(function*() {
      const { kube, held, release } = yield* slowKube
      const sink = yield* makeEventSink(held, { capacity: 2 })
      // Let the sender start waiting for work: it takes A, and holds it until released.
      for (let round = 0; round < 10; round++) yield* Effect.yieldNow
      yield* sink.record(event("A"), "default/web")
      for (let round = 0; round < 10; round++) yield* Effect.yieldNow
      for (const reason of ["B", "C", "D", "E"]) yield* sink.record(event(reason), "default/web")
      yield* Deferred.succeed(release, undefined)
      for (let round = 0; round < 200; round++) yield* Effect.yieldNow
      // One was taken by the sender before the queue filled; two waited; the rest were dropped.
      assert.deepStrictEqual(kube.events.map((e) => e.reason), ["A", "B", "C"])
    }).pipe(Effect.scoped))

  it.effect("yields to the work: one Event per interval while busy, the rest once idle", () =>
    Effect.gen(function*() {
      const { idle, kube, sink } = yield* busySink("1 second")
      for (const reason of ["A", "B", "C"]) yield* sink.record(event(reason), "default/web")
      yield* TestClock.adjust("900 millis")
      assert.deepStrictEqual(kube.events, [], "nothing goes out within the interval while busy")
      yield* TestClock.adjust("200 millis")
      assert.deepStrictEqual(kube.events.map((e) => e.reason), ["A"], "one Event per interval while busy")
      yield* idle.open
      for (let round = 0; round < 50; round++) yield* Effect.yieldNow
      assert.deepStrictEqual(kube.events.map((e) => e.reason), ["A", "B", "C"], "the rest as soon as the work is done")
    }).pipe(Effect.scoped))

  it.effect("sends the Event it was holding back for the work when it shuts down", () =>
    Effect.gen(function*() {
      const scope = yield* Scope.make()
      const { kube, sink } = yield* busySink("1 minute").pipe(Scope.provide(scope))
      for (const reason of ["A", "B"]) yield* sink.record(event(reason), "default/web")
      // A is taken and held back (the work is not done); B waits in the queue.
      for (let round = 0; round < 20; round++) yield* Effect.yieldNow
      yield* Scope.close(scope, undefined as never)
      assert.deepStrictEqual(kube.events.map((e) => e.reason), ["A", "B"])
    }))

  it.effect("sends what is still queued when it shuts down", () =>
    Effect.gen(function*() {
      const { kube, held, release } = yield* slowKube
      const scope = yield* Scope.make()
      const sink = yield* makeEventSink(held).pipe(Scope.provide(scope))
      for (const reason of ["A", "B"]) yield* sink.record(event(reason), "default/web")
      yield* Deferred.succeed(release, undefined)
      yield* Scope.close(scope, undefined as never)
      assert.includeMembers(kube.events.map((e) => e.reason), ["B"])
    }))

  it.effect("drops a progress Event that a later one supersedes within its moment", () =>
    Effect.gen(function*() {
      const kube = makeInMemoryKube()
      const sink = yield* makeEventSink(yield* serviceOf(kube))
      yield* sink.record(event("EnsuringLoadBalancer"), "default/web", { unlessSupersededWithin: "1 second" })
      yield* TestClock.adjust("500 millis")
      assert.deepStrictEqual(kube.events, [], "a progress Event waits its moment")
      assert.strictEqual(yield* sink.queued, 1, "and is counted as queued meanwhile")
      yield* sink.record(event("EnsuredLoadBalancer"), "default/web", { supersedes: "EnsuringLoadBalancer" })
      yield* TestClock.adjust("600 millis")
      yield* until("an Event stored", () => kube.events.length >= 1)
      // Nothing left to send: no other Event can follow.
      assert.strictEqual(yield* sink.queued, 0)
      assert.deepStrictEqual(kube.events.map((e) => e.reason), ["EnsuredLoadBalancer"])
    }).pipe(Effect.scoped))

  it.effect("sends a progress Event nothing superseded within its moment, then the later one", () =>
    Effect.gen(function*() {
      const kube = makeInMemoryKube()
      const sink = yield* makeEventSink(yield* serviceOf(kube))
      yield* sink.record(event("EnsuringLoadBalancer"), "default/web", { unlessSupersededWithin: "1 second" })
      yield* sink.record(event("EnsuringLoadBalancer", "other"), "default/other", { unlessSupersededWithin: "1 second" })
      yield* TestClock.adjust("1100 millis")
      yield* until("both progress Events stored", () => kube.events.length >= 2)
      yield* sink.record(event("EnsuredLoadBalancer"), "default/web", { supersedes: "EnsuringLoadBalancer" })
      yield* until("the third Event stored", () => kube.events.length >= 3)
      assert.deepStrictEqual(kube.events.map((e) => `${e.regarding.name} ${e.reason}`), [
        "web EnsuringLoadBalancer",
        "other EnsuringLoadBalancer",
        "web EnsuredLoadBalancer"
      ])
    }).pipe(Effect.scoped))

  it.effect("drops an Event superseded while it was held back for the work", () =>
    Effect.gen(function*() {
      const { idle, kube, sink } = yield* busySink("1 minute")
      yield* sink.record(event("EnsuringLoadBalancer"), "default/web")
      // Taken and held back: the work is not done.
      for (let round = 0; round < 20; round++) yield* Effect.yieldNow
      yield* sink.record(event("EnsuredLoadBalancer"), "default/web", { supersedes: "EnsuringLoadBalancer" })
      yield* idle.open
      yield* until("an Event stored", () => kube.events.length >= 1)
      assert.strictEqual(yield* sink.queued, 0)
      assert.deepStrictEqual(kube.events.map((e) => e.reason), ["EnsuredLoadBalancer"])
    }).pipe(Effect.scoped))

  it.effect("keeps every Event of a 500-Service burst with its default capacity", () =>
    Effect.gen(function*() {
      const { idle, kube, sink } = yield* busySink("1 minute")
      // Each new Service raises three (GatewaySelected, EnsuringLoadBalancer, EnsuredLoadBalancer)
      // while the burst is under way, with distinct reasons so none supersedes another.
      for (let i = 0; i < 500; i++) {
        for (const reason of ["GatewaySelected", "EnsuringLoadBalancer", "EnsuredLoadBalancer"]) {
          yield* sink.record(event(reason), `default/web-${i}`)
        }
      }
      yield* idle.open
      // A queue that dropped some never gets there: the wait fails, naming what it waited for.
      yield* until("all 1,500 Events stored", () => kube.events.length >= 1500)
      assert.strictEqual(kube.events.length, 1500)
      assert.strictEqual(yield* sink.queued, 0)
    }).pipe(Effect.scoped))
})
