import { assert, describe, expect, it } from "@effect/vitest"
import { Effect, Fiber, Layer, Ref } from "effect"
import { TestClock } from "effect/testing"
import { AccessReview, MemoryAccessReviews } from "../../src/kube/AccessReview.ts"
import { bearerToken, defaultMetricsAccess, makeMetricsAccess } from "../../src/runtime/metricsAccess.ts"
import { fakeApiserver } from "../support/FakeApiserver.ts"

const PROMETHEUS = "prometheus-token"
const INTRUDER = "intruder-token"

/** The memory apiserver knows two tokens; only Prometheus's user may get /metrics. */
const knownTokens = Effect.gen(function*() {
  const memory = yield* MemoryAccessReviews
  yield* Ref.set(memory.users, new Map([
    [PROMETHEUS, { username: "system:serviceaccount:monitoring:prometheus-k8s", groups: ["system:serviceaccounts"] }],
    [INTRUDER, { username: "system:serviceaccount:default:app", groups: ["system:serviceaccounts"] }]
  ]))
  yield* Ref.set(memory.allowed, new Set(["system:serviceaccount:monitoring:prometheus-k8s"]))
  return memory
})

/** API calls made since the last look. */
const callsSince = (memory: MemoryAccessReviews["Service"]) => Ref.getAndSet(memory.calls, [])

const bearer = (token: string) => `Bearer ${token}`

/** Lets forked fibers run until they block. */
const settle = Effect.gen(function*() {
  for (let i = 0; i < 50; i++) yield* Effect.yieldNow
})

describe("bearerToken", () => {
  it("reads `Bearer <token>` and nothing else", () => {
    expect(bearerToken("Bearer abc.DEF-_~+/=")).toBe("abc.DEF-_~+/=")
    expect(bearerToken("bearer abc")).toBe("abc")
    expect(bearerToken(undefined)).toBeUndefined()
    expect(bearerToken("")).toBeUndefined()
    expect(bearerToken("Basic dXNlcjpwYXNz")).toBeUndefined()
    expect(bearerToken("Bearer ")).toBeUndefined()
    expect(bearerToken("Bearer two words")).toBeUndefined()
    expect(bearerToken(`Bearer ${"a".repeat(4096)}`)).toBe("a".repeat(4096))
    expect(bearerToken(`Bearer ${"a".repeat(4097)}`)).toBeUndefined()
  })
})

describe("makeMetricsAccess", () => {
  it.effect("401 without a token, and no API call", () =>
    Effect.gen(function*() {
      const memory = yield* knownTokens
      const access = yield* makeMetricsAccess(defaultMetricsAccess)
      assert.strictEqual(yield* access.decide(undefined), "unauthenticated")
      assert.strictEqual(yield* access.decide("Basic dXNlcjpwYXNz"), "unauthenticated")
      assert.deepStrictEqual(yield* callsSince(memory), [])
    }).pipe(Effect.provide(AccessReview.layerMemory)))

  it.effect("401 for a token the apiserver does not know, after one TokenReview", () =>
    Effect.gen(function*() {
      const memory = yield* knownTokens
      const access = yield* makeMetricsAccess(defaultMetricsAccess)
      assert.strictEqual(yield* access.decide(bearer("made-up")), "unauthenticated")
      assert.deepStrictEqual(yield* callsSince(memory), ["TokenReview"])
    }).pipe(Effect.provide(AccessReview.layerMemory)))

  it.effect("403 for a known user without the right; 200 for one with it: a TokenReview and a SubjectAccessReview each", () =>
    Effect.gen(function*() {
      const memory = yield* knownTokens
      const access = yield* makeMetricsAccess(defaultMetricsAccess)
      assert.strictEqual(yield* access.decide(bearer(INTRUDER)), "forbidden")
      assert.deepStrictEqual(yield* callsSince(memory), ["TokenReview", "SubjectAccessReview"])
      assert.strictEqual(yield* access.decide(bearer(PROMETHEUS)), "allowed")
      assert.deepStrictEqual(yield* callsSince(memory), ["TokenReview", "SubjectAccessReview"])
    }).pipe(Effect.provide(AccessReview.layerMemory)))

  it.effect("remembers an allowed token for 10 s: a scrape every 15 s costs two calls, one every 5 s two per 10 s", () =>
    Effect.gen(function*() {
      const memory = yield* knownTokens
      const access = yield* makeMetricsAccess(defaultMetricsAccess)
      assert.strictEqual(yield* access.decide(bearer(PROMETHEUS)), "allowed")
      assert.lengthOf(yield* callsSince(memory), 2)
      yield* TestClock.adjust("5 seconds")
      assert.strictEqual(yield* access.decide(bearer(PROMETHEUS)), "allowed")
      assert.lengthOf(yield* callsSince(memory), 0)
      yield* TestClock.adjust("5 seconds")
      assert.strictEqual(yield* access.decide(bearer(PROMETHEUS)), "allowed")
      assert.lengthOf(yield* callsSince(memory), 2)
      yield* TestClock.adjust("15 seconds")
      assert.strictEqual(yield* access.decide(bearer(PROMETHEUS)), "allowed")
      assert.lengthOf(yield* callsSince(memory), 2)
    }).pipe(Effect.provide(AccessReview.layerMemory)))

  it.effect("remembers a refusal for 10 s, then asks again (a revoked or granted right shows within 10 s)", () =>
    Effect.gen(function*() {
      const memory = yield* knownTokens
      const access = yield* makeMetricsAccess(defaultMetricsAccess)
      assert.strictEqual(yield* access.decide(bearer(INTRUDER)), "forbidden")
      yield* Ref.update(memory.allowed, (allowed) => new Set([...allowed, "system:serviceaccount:default:app"]))
      yield* callsSince(memory)
      yield* TestClock.adjust("9 seconds")
      assert.strictEqual(yield* access.decide(bearer(INTRUDER)), "forbidden")
      assert.lengthOf(yield* callsSince(memory), 0)
      yield* TestClock.adjust("1 second")
      assert.strictEqual(yield* access.decide(bearer(INTRUDER)), "allowed")
      assert.lengthOf(yield* callsSince(memory), 2)
    }).pipe(Effect.provide(AccessReview.layerMemory)))

  it.effect("answers 503 while the apiserver is unreachable, never lets anyone in, and asks again at once when it is back", () =>
    Effect.gen(function*() {
      const memory = yield* knownTokens
      const access = yield* makeMetricsAccess(defaultMetricsAccess)
      yield* Ref.set(memory.unreachable, true)
      assert.strictEqual(yield* access.decide(bearer(PROMETHEUS)), "unavailable")
      assert.strictEqual(yield* access.decide(bearer(PROMETHEUS)), "unavailable")
      assert.deepStrictEqual(yield* callsSince(memory), ["TokenReview", "TokenReview"])
      yield* Ref.set(memory.unreachable, false)
      assert.strictEqual(yield* access.decide(bearer(PROMETHEUS)), "allowed")
    }).pipe(Effect.provide(AccessReview.layerMemory)))

  it.effect("keeps at most `capacity` tokens: the least recently used is reviewed again", () =>
    Effect.gen(function*() {
      const memory = yield* knownTokens
      const access = yield* makeMetricsAccess({ ...defaultMetricsAccess, capacity: 2 })
      yield* access.decide(bearer(PROMETHEUS))
      yield* access.decide(bearer(INTRUDER))
      yield* callsSince(memory)
      yield* access.decide(bearer(PROMETHEUS))
      assert.lengthOf(yield* callsSince(memory), 0)
      yield* access.decide(bearer("third-token"))
      yield* callsSince(memory)
      yield* access.decide(bearer(INTRUDER))
      assert.lengthOf(yield* callsSince(memory), 2, "the least recently used token was forgotten")
    }).pipe(Effect.provide(AccessReview.layerMemory)))

  it.effect("answers 503 when a review takes longer than 5 s, and holds at most 4 reviews in flight", () => {
    let started = 0
    // An apiserver that takes every review and never answers.
    const hanging = AccessReview.layerHttp.pipe(
      Layer.provide(fakeApiserver(() => {
        started++
        return new Promise<never>(() => {})
      }).layer)
    )
    return Effect.gen(function*() {
      const access = yield* makeMetricsAccess(defaultMetricsAccess)
      const fibers = yield* Effect.forEach(
        ["a", "b", "c", "d", "e", "f"],
        (token) => Effect.forkChild(access.decide(bearer(token)))
      )
      yield* settle
      assert.strictEqual(started, 4)
      yield* TestClock.adjust("4 seconds")
      yield* settle
      assert.strictEqual(started, 4)
      // The first four time out at 5 s; the other two get their turn, and time out 5 s later.
      yield* TestClock.adjust("1 second")
      yield* settle
      assert.strictEqual(started, 6)
      yield* TestClock.adjust("5 seconds")
      const decisions = yield* Fiber.joinAll(fibers)
      assert.deepStrictEqual(decisions, Array(6).fill("unavailable"))
    }).pipe(Effect.provide(hanging))
  })
})
