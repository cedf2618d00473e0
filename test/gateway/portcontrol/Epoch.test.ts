/**
 * Lost-state detection from the gateway's epoch: the RFC 6886 §3.6 and RFC 6887 §8.5 tests,
 * and the tracker that applies them to every answer under TestClock.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { TestClock } from "effect/testing"
import { isStateLost, makeEpochTracker } from "../../../src/gateway/portcontrol/Epoch.ts"

const at = (epoch: number, seconds: number) => ({ epoch, atMillis: seconds * 1000 })

describe("isStateLost", () => {
  it.each([
    { name: "advanced with our clock", previous: at(1000, 0), current: at(1100, 100), lost: false },
    { name: "advanced by 7/8 of our clock, minus 2 s (the RFC's slack)", previous: at(1000, 0), current: at(1085.5, 100), lost: false },
    { name: "advanced by less than 7/8 of our clock minus 2 s", previous: at(1000, 0), current: at(1085, 100), lost: true },
    { name: "stalled while 60 s passed", previous: at(1000, 0), current: at(1000, 60), lost: true },
    { name: "went backwards (reboot)", previous: at(1000, 0), current: at(3, 5), lost: true },
    { name: "the same second, answered at once", previous: at(1000, 0), current: at(999, 0.1), lost: false }
  ])("NAT-PMP: $name → $lost", ({ current, lost, previous }) => {
    assert.strictEqual(isStateLost("nat-pmp", previous, current), lost)
  })

  it.each([
    { name: "advanced with our clock", previous: at(1000, 0), current: at(1100, 100), lost: false },
    { name: "back by 1 s (resolution)", previous: at(1000, 0), current: at(999, 0), lost: false },
    { name: "back by 2 s", previous: at(1000, 0), current: at(998, 0), lost: true },
    { name: "stalled while 10 s passed", previous: at(1000, 0), current: at(1000, 10), lost: true },
    { name: "behind by exactly 2 s + 1/16 of our clock", previous: at(1000, 0), current: at(1148, 160), lost: false },
    { name: "behind by more than 2 s + 1/16 of our clock", previous: at(1000, 0), current: at(1147, 160), lost: true },
    { name: "jumped 100 s ahead in 10 s (another server)", previous: at(1000, 0), current: at(1100, 10), lost: true }
  ])("PCP: $name → $lost", ({ current, lost, previous }) => {
    assert.strictEqual(isStateLost("pcp", previous, current), lost)
  })
})

describe("EpochTracker", () => {
  it.effect("reports a reboot once, and counts every loss", () =>
    Effect.gen(function*() {
      const tracker = yield* makeEpochTracker("nat-pmp", () => "192.168.77.1:5351")
      assert.deepStrictEqual(yield* tracker.report, { epoch: undefined, lostState: false, stateLosses: 0 })
      assert.isFalse(yield* tracker.observe(100))
      yield* TestClock.adjust("10 seconds")
      assert.isFalse(yield* tracker.observe(110))
      assert.deepStrictEqual(yield* tracker.report, { epoch: 110, lostState: false, stateLosses: 0 })

      yield* TestClock.adjust("10 seconds")
      assert.isTrue(yield* tracker.observe(2))
      assert.deepStrictEqual(yield* tracker.report, { epoch: 2, lostState: true, stateLosses: 1 })
      assert.deepStrictEqual(yield* tracker.report, { epoch: 2, lostState: false, stateLosses: 1 })
    }))

  it.effect("a stalled epoch is a loss too, measured from the new baseline", () =>
    Effect.gen(function*() {
      const tracker = yield* makeEpochTracker("nat-pmp", () => "gw")
      yield* tracker.observe(500)
      yield* TestClock.adjust("60 seconds")
      assert.isTrue(yield* tracker.observe(510))
      yield* TestClock.adjust("60 seconds")
      assert.isFalse(yield* tracker.observe(570))
      const report = yield* tracker.report
      assert.strictEqual(report.stateLosses, 1)
      assert.isTrue(report.lostState)
    }))

  it.effect("losses between two reports are all reported, and counted", () =>
    Effect.gen(function*() {
      const tracker = yield* makeEpochTracker("pcp", () => "gw")
      yield* tracker.observe(1000)
      yield* TestClock.adjust("1 second")
      yield* tracker.observe(0)
      yield* TestClock.adjust("30 seconds")
      yield* tracker.observe(0)
      const report = yield* tracker.report
      assert.isTrue(report.lostState)
      assert.strictEqual(report.stateLosses, 2)
    }))
})
