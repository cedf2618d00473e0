import { assert, describe, it } from "@effect/vitest"
import type { Lease } from "../../src/kube/objects.ts"
import { Effect, Exit, Fiber, Metric, Ref, SubscriptionRef } from "effect"
import { PrometheusMetrics } from "effect/observability"
import { TestClock } from "effect/testing"
import { KubeError } from "../../src/kube/KubeError.ts"
import type { LeaseStoreService } from "../../src/runtime/LeaderElection.ts"
import { leaderGauge, LeaseStore, make } from "../../src/runtime/LeaderElection.ts"
import { memoryLeaseStore, MemoryLeases } from "../support/MemoryLeases.ts"

const NAMESPACE = "kube-system"
const NAME = "edge-cloud-controller-manager"

/** Lets forked fibers run until they block on the test clock or a ref. */
const settle = Effect.gen(function*() {
  for (let i = 0; i < 50; i++) yield* Effect.yieldNow
})

/** Advances the test clock in 100 ms steps until `condition` holds; returns the time it took. */
const advanceUntil = (condition: Effect.Effect<boolean>, limitMillis: number) =>
  Effect.gen(function*() {
    let elapsed = 0
    yield* settle
    while (!(yield* condition)) {
      if (elapsed >= limitMillis) return assert.fail(`condition not reached within ${limitMillis} ms`)
      yield* TestClock.adjust("100 millis")
      yield* settle
      elapsed += 100
    }
    return elapsed
  })

const lease = Effect.gen(function*() {
  const { leases } = yield* MemoryLeases
  return (yield* Ref.get(leases)).get(`${NAMESPACE}/${NAME}`)
})

const holder = Effect.map(lease, (l) => l?.spec?.holderIdentity)

/**
 * A candidate with its own view of the shared store: `partitioned` cuts only this
 * candidate off the apiserver, as when its node loses the network.
 */
const candidate = (identity: string, shared: { readonly running: Ref.Ref<ReadonlyArray<string>>; readonly overlaps: Ref.Ref<number> }) =>
  Effect.gen(function*() {
    const base = yield* LeaseStore
    const partitioned = yield* Ref.make(false)
    const cut = (verb: string) =>
      Effect.flatMap(Ref.get(partitioned), (down) =>
        down
          ? Effect.fail(new KubeError({ verb, resource: "leases", reason: "ETIMEDOUT", message: `${identity} cut off` }))
          : Effect.void)
    const store: LeaseStoreService = {
      get: (namespace, name) => Effect.andThen(cut("get"), base.get(namespace, name)),
      create: (l) => Effect.andThen(cut("create"), base.create(l)),
      replace: (l) => Effect.andThen(cut("update"), base.replace(l))
    }
    const election = yield* make({ namespace: NAMESPACE, name: NAME, identity }).pipe(
      Effect.provideService(LeaseStore, store)
    )
    const starts = yield* Ref.make(0)
    const interruptions = yield* Ref.make(0)
    // The controller stand-in: records when it runs, and whether anyone else ran meanwhile.
    const workload = Effect.acquireRelease(
      Effect.gen(function*() {
        yield* Ref.update(starts, (n) => n + 1)
        const others = yield* Ref.get(shared.running)
        if (others.length > 0) yield* Ref.update(shared.overlaps, (n) => n + 1)
        yield* Ref.update(shared.running, (r) => [...r, identity])
      }),
      () =>
        Ref.update(shared.running, (r) => r.filter((x) => x !== identity)).pipe(
          Effect.andThen(Ref.update(interruptions, (n) => n + 1))
        )
    ).pipe(Effect.andThen(Effect.never), Effect.scoped)
    const running = Effect.map(Ref.get(shared.running), (r) => r.includes(identity))
    return { election, partitioned, starts, interruptions, workload, running }
  })

const world = Effect.gen(function*() {
  const running = yield* Ref.make<ReadonlyArray<string>>([])
  const overlaps = yield* Ref.make(0)
  return { running, overlaps }
})

describe("LeaderElection", () => {
  it.effect("acquires a free Lease at once and runs the effect while leading", () =>
    Effect.gen(function*() {
      const shared = yield* world
      const a = yield* candidate("pod-a", shared)
      const fiber = yield* Effect.forkChild(a.election.run(a.workload))
      yield* settle
      assert.isTrue(yield* a.running)
      assert.isTrue(yield* SubscriptionRef.get(a.election.isLeader))
      const l = yield* lease
      assert.strictEqual(l?.spec?.holderIdentity, "pod-a")
      assert.strictEqual(l?.spec?.leaseDurationSeconds, 15)
      assert.strictEqual(l?.spec?.leaseTransitions, 0)
      assert.match(String(l?.spec?.renewTime), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/)
      const gauge = yield* Metric.value(Metric.withAttributes(leaderGauge, { lease: `${NAMESPACE}/${NAME}` }))
      assert.strictEqual(gauge.value, 1)
      yield* Fiber.interrupt(fiber)
    }).pipe(Effect.provide(memoryLeaseStore)))

  it.effect("says 0 on /metrics from the start, so a standby is told from a process that says nothing", () =>
    Effect.gen(function*() {
      const shared = yield* world
      yield* candidate("pod-b", shared)
      const text = yield* PrometheusMetrics.format()
      assert.include(text.split("\n"), `edge_ccm_leader{lease="${NAMESPACE}/${NAME}"} 0`)
    }).pipe(
      Effect.provide(memoryLeaseStore),
      // A registry of its own: what earlier tests recorded must not answer for this one.
      Effect.provideService(Metric.MetricRegistry, new Map())
    ))

  it.effect("renews every retry period, and a second candidate waits as long as renewals continue", () =>
    Effect.gen(function*() {
      const shared = yield* world
      const a = yield* candidate("pod-a", shared)
      const b = yield* candidate("pod-b", shared)
      const fa = yield* Effect.forkChild(a.election.run(a.workload))
      yield* settle
      const fb = yield* Effect.forkChild(b.election.run(b.workload))
      const renewTimes = new Set<string>()
      for (let i = 0; i < 30; i++) {
        yield* TestClock.adjust("1 second")
        yield* settle
        renewTimes.add(String((yield* lease)?.spec?.renewTime))
      }
      assert.isAtLeast(renewTimes.size, 14, "about one renewal per 2 s")
      assert.strictEqual(yield* holder, "pod-a")
      assert.isFalse(yield* b.running)
      assert.isFalse(yield* SubscriptionRef.get(b.election.isLeader))
      assert.strictEqual(yield* b.election.observedHolder, "pod-a")
      yield* Fiber.interrupt(fb)
      yield* Fiber.interrupt(fa)
    }).pipe(Effect.provide(memoryLeaseStore)))

  it.effect("interrupts the effect once renewal has failed for the renew deadline, not before", () =>
    Effect.gen(function*() {
      const shared = yield* world
      const a = yield* candidate("pod-a", shared)
      const fiber = yield* Effect.forkChild(a.election.run(a.workload))
      yield* settle
      // Let one renewal happen, then cut the candidate off right after it.
      yield* TestClock.adjust("2 seconds")
      yield* settle
      yield* Ref.set(a.partitioned, true)
      const took = yield* advanceUntil(Effect.map(a.running, (r) => !r), 20_000)
      // Next renewal round starts 2 s after the last success and gives up 10 s later.
      assert.isAtLeast(took, 11_900)
      assert.isAtMost(took, 12_100)
      assert.strictEqual(yield* Ref.get(a.interruptions), 1)
      assert.isFalse(yield* SubscriptionRef.get(a.election.isLeader))
      const gauge = yield* Metric.value(Metric.withAttributes(leaderGauge, { lease: `${NAMESPACE}/${NAME}` }))
      assert.strictEqual(gauge.value, 0)
      // Reconnected, and with nobody else around, it wins again and restarts the effect.
      yield* Ref.set(a.partitioned, false)
      yield* advanceUntil(a.running, 5_000)
      assert.strictEqual(yield* Ref.get(a.starts), 2)
      yield* Fiber.interrupt(fiber)
    }).pipe(Effect.provide(memoryLeaseStore)))

  it.effect("fails over: the cut-off leader stops before the other takes over after the lease duration", () =>
    Effect.gen(function*() {
      const shared = yield* world
      const a = yield* candidate("pod-a", shared)
      const b = yield* candidate("pod-b", shared)
      const fa = yield* Effect.forkChild(a.election.run(a.workload))
      yield* settle
      const fb = yield* Effect.forkChild(b.election.run(b.workload))
      yield* TestClock.adjust("4 seconds")
      yield* settle
      const lastRenewal = String((yield* lease)?.spec?.renewTime)
      yield* Ref.set(a.partitioned, true)
      const bTook = yield* advanceUntil(b.running, 30_000)
      assert.isFalse(yield* a.running, "a stopped before b started")
      assert.strictEqual(yield* Ref.get(shared.overlaps), 0, "never two leaders at once")
      // b notices a's last renewal at its next poll (at most one jittered retry period, 2.4 s,
      // after it), waits the full 15 s from then, and acquires at the poll after that (at most
      // 2.4 s more). a's last renewal was at most 2 s before the partition.
      assert.isAtLeast(bTook, 13_000)
      assert.isAtMost(bTook, 19_800)
      const l = yield* lease
      assert.strictEqual(l?.spec?.holderIdentity, "pod-b")
      assert.strictEqual(l?.spec?.leaseTransitions, 1)
      assert.notStrictEqual(String(l?.spec?.renewTime), lastRenewal)
      yield* Fiber.interrupt(fa)
      yield* Fiber.interrupt(fb)
    }).pipe(Effect.provide(memoryLeaseStore)))

  it.effect("a graceful shutdown releases the Lease, so the other candidate takes over within a retry period", () =>
    Effect.gen(function*() {
      const shared = yield* world
      const a = yield* candidate("pod-a", shared)
      const b = yield* candidate("pod-b", shared)
      const fa = yield* Effect.forkChild(a.election.run(a.workload))
      yield* settle
      const fb = yield* Effect.forkChild(b.election.run(b.workload))
      yield* TestClock.adjust("6 seconds")
      yield* settle
      yield* Fiber.interrupt(fa)
      const released = yield* lease
      assert.strictEqual(released?.spec?.holderIdentity, "")
      assert.strictEqual(released?.spec?.leaseDurationSeconds, 1)
      assert.isFalse(yield* SubscriptionRef.get(a.election.isLeader))
      const took = yield* advanceUntil(b.running, 10_000)
      assert.isAtMost(took, 2_400)
      assert.strictEqual(yield* holder, "pod-b")
      assert.strictEqual(yield* Ref.get(shared.overlaps), 0)
      yield* Fiber.interrupt(fb)
    }).pipe(Effect.provide(memoryLeaseStore)))

  it.effect("releases the Lease on shutdown even when a renewal it did not see has moved its resourceVersion", () =>
    Effect.gen(function*() {
      const shared = yield* world
      const a = yield* candidate("pod-a", shared)
      const fa = yield* Effect.forkChild(a.election.run(a.workload))
      yield* advanceUntil(a.running, 5_000)
      // A renewal that landed while the shutdown interrupted it: the Lease still names pod-a,
      // under a resourceVersion pod-a never saw.
      const { leases } = yield* MemoryLeases
      yield* Ref.update(leases, (all) => {
        const current = all.get(`${NAMESPACE}/${NAME}`)!
        return new Map(all).set(`${NAMESPACE}/${NAME}`, { ...current, metadata: { ...current.metadata, resourceVersion: "9999" } })
      })
      yield* Fiber.interrupt(fa)
      assert.strictEqual(yield* holder, "")
    }).pipe(Effect.provide(memoryLeaseStore)))

  it.effect("of two candidates racing for a free Lease exactly one wins", () =>
    Effect.gen(function*() {
      const shared = yield* world
      const a = yield* candidate("pod-a", shared)
      const b = yield* candidate("pod-b", shared)
      const fa = yield* Effect.forkChild(a.election.run(a.workload))
      const fb = yield* Effect.forkChild(b.election.run(b.workload))
      for (let i = 0; i < 20; i++) {
        yield* TestClock.adjust("1 second")
        yield* settle
      }
      const leaders = [yield* a.running, yield* b.running].filter(Boolean)
      assert.strictEqual(leaders.length, 1)
      assert.strictEqual(yield* Ref.get(shared.overlaps), 0)
      yield* Fiber.interrupt(fa)
      yield* Fiber.interrupt(fb)
    }).pipe(Effect.provide(memoryLeaseStore)))

  it.effect("takes over a Lease left by a crashed holder only after observing it unchanged for its duration", () =>
    Effect.gen(function*() {
      const { leases } = yield* MemoryLeases
      const stale: Lease = {
        metadata: { namespace: NAMESPACE, name: NAME, resourceVersion: "7" },
        spec: { holderIdentity: "pod-dead", leaseDurationSeconds: 15, leaseTransitions: 3, renewTime: new Date(0) }
      }
      yield* Ref.set(leases, new Map([[`${NAMESPACE}/${NAME}`, stale]]))
      const shared = yield* world
      const b = yield* candidate("pod-b", shared)
      const fb = yield* Effect.forkChild(b.election.run(b.workload))
      const took = yield* advanceUntil(b.running, 30_000)
      // The record's renewTime is ancient, but another node's clock is not to be trusted.
      assert.isAtLeast(took, 15_000)
      assert.isAtMost(took, 17_500)
      assert.strictEqual((yield* lease)?.spec?.leaseTransitions, 4)
      yield* Fiber.interrupt(fb)
    }).pipe(Effect.provide(memoryLeaseStore)))

  it.effect("an effect that fails while leading releases the Lease and fails run", () =>
    Effect.gen(function*() {
      const shared = yield* world
      const a = yield* candidate("pod-a", shared)
      const exit = yield* a.election.run(Effect.fail("boom" as const)).pipe(Effect.exit)
      assert.deepStrictEqual(exit, Exit.fail("boom"))
      assert.strictEqual(yield* holder, "")
    }).pipe(Effect.provide(memoryLeaseStore)))

  it.effect("an effect that completes while leading returns its value", () =>
    Effect.gen(function*() {
      const shared = yield* world
      const a = yield* candidate("pod-a", shared)
      assert.strictEqual(yield* a.election.run(Effect.succeed(42)), 42)
    }).pipe(Effect.provide(memoryLeaseStore)))

  it.effect("rejects a renew deadline that is not shorter than the lease duration", () =>
    Effect.gen(function*() {
      const exit = yield* make({
        namespace: NAMESPACE,
        name: NAME,
        identity: "x",
        leaseDuration: "10 seconds",
        renewDeadline: "10 seconds"
      }).pipe(Effect.exit)
      assert.isTrue(Exit.hasDies(exit))
    }).pipe(Effect.provide(memoryLeaseStore)))

  it.effect("the memory store enforces resourceVersion preconditions like the apiserver", () =>
    Effect.gen(function*() {
      const store = yield* LeaseStore
      const created = yield* store.create({ metadata: { namespace: NAMESPACE, name: NAME }, spec: {} })
      const version = created.metadata?.resourceVersion ?? ""
      const again = yield* store.create({ metadata: { namespace: NAMESPACE, name: NAME } }).pipe(Effect.flip)
      assert.strictEqual(again._tag, "KubeConflict")
      yield* store.replace({ metadata: { namespace: NAMESPACE, name: NAME, resourceVersion: version } })
      const stale = yield* store.replace({ metadata: { namespace: NAMESPACE, name: NAME, resourceVersion: version } })
        .pipe(Effect.flip)
      assert.strictEqual(stale._tag, "KubeConflict")
    }).pipe(Effect.provide(memoryLeaseStore)))
})
