import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Layer, Logger, Ref } from "effect"
import { TestClock } from "effect/testing"
import type { ControllerHealth } from "../../src/controller/Controller.ts"
import { controllerReport, waitingReport } from "../../src/runtime/healthReport.ts"
import { HealthCheck, type HealthReport, loggingTransitions, transitionLines } from "../../src/runtime/HealthServer.ts"

const NOW = 1_800_000_000_000
const healthy: ControllerHealth = {
  servicesSynced: true,
  initialPassDone: true,
  gatewayReachable: true,
  gatewayError: undefined,
  excluded: false,
  queueDepth: 2,
  eventsQueued: 1,
  eventsDue: 1,
  lastProbeAt: NOW - 1_000,
  lastResyncAt: NOW - 20_000
}
const at = { now: NOW, stuckAfter: 90_000 }

describe("controllerReport", () => {
  it("is live and ready when synced, past the first pass, with the router answering", () => {
    const report = controllerReport(healthy, at)
    expect(report.live).toEqual({ ok: true, because: [], detail: "" })
    expect(report.ready).toEqual({ ok: true, because: [], detail: "" })
    expect(report.figures).toEqual({
      servicesSynced: true,
      initialPassDone: true,
      gatewayReachable: true,
      excludedNode: false,
      queueDepth: 2,
      eventsQueued: 1,
      lastProbeAt: NOW - 1_000,
      lastResyncAt: NOW - 20_000
    })
  })

  it("names every reason it is not ready, the router's error only in the detail", () => {
    const report = controllerReport({
      ...healthy,
      servicesSynced: false,
      initialPassDone: false,
      gatewayReachable: false,
      gatewayError: "connect ECONNREFUSED 192.168.77.1:49536",
      excluded: true
    }, at)
    expect(report.ready.ok).toBe(false)
    expect(report.ready.because).toEqual(["Services not synced", "first pass not done", "gateway unreachable", "node excluded"])
    expect(report.ready.detail).toBe(
      "Services not synced, first pass not done, gateway unreachable (connect ECONNREFUSED 192.168.77.1:49536), " +
        "this node is excluded from external load balancers"
    )
  })

  it("is not live once a loop has been silent for stuckAfter", () => {
    expect(controllerReport({ ...healthy, lastProbeAt: NOW - 89_999 }, at).live.ok).toBe(true)
    const stuck = controllerReport({ ...healthy, lastProbeAt: NOW - 90_000, lastResyncAt: NOW - 120_400 }, at)
    expect(stuck.live).toEqual({
      ok: false,
      because: ["loops stalled"],
      detail: "loops stalled: no router probe for 90 s, no full pass for 120 s"
    })
  })
})

describe("waitingReport", () => {
  it("is ready while standing by, and says who leads", () => {
    expect(waitingReport({ leading: false, holder: "node-2" }).ready).toEqual({
      ok: true,
      because: ["standby"],
      detail: "standing by (leader: node-2)"
    })
    expect(waitingReport({ leading: false, holder: "" }).ready.detail).toBe("standing by (leader: none)")
  })

  it("is not ready while the controller it leads with is being built, nor before it has read the Lease", () => {
    expect(waitingReport({ leading: true, holder: "node-1" }).ready).toEqual({ ok: false, because: ["starting"], detail: "starting" })
    expect(waitingReport({ leading: false, holder: undefined }).ready).toEqual({
      ok: false,
      because: ["starting"],
      detail: "starting (the leader Lease not read yet)"
    })
  })
})

describe("transitionLines", () => {
  const ready = controllerReport(healthy, at)
  const routerDown = controllerReport({ ...healthy, gatewayReachable: false, gatewayError: "connect ECONNREFUSED" }, at)

  it("says both verdicts at start", () => {
    expect(transitionLines(undefined, controllerReport({ ...healthy, servicesSynced: false }, at))).toEqual([
      { level: "Info", message: "not ready: Services not synced" },
      { level: "Info", message: "healthy" }
    ])
  })

  it("says the phases of a start at Info, anything else that keeps it from ready as a warning", () => {
    expect(transitionLines(ready, waitingReport({ leading: true, holder: "node-1" }))).toEqual([
      { level: "Info", message: "not ready: starting" }
    ])
    expect(transitionLines(undefined, routerDown)[0]).toEqual({
      level: "Warn",
      message: "not ready: gateway unreachable (connect ECONNREFUSED)"
    })
  })

  it("says a change once: not ready as a warning, ready again as info", () => {
    expect(transitionLines(ready, routerDown)).toEqual([
      { level: "Warn", message: "not ready: gateway unreachable (connect ECONNREFUSED)" }
    ])
    expect(transitionLines(routerDown, routerDown)).toEqual([])
    expect(transitionLines(routerDown, ready)).toEqual([{ level: "Info", message: "ready" }])
  })

  it("stays quiet when only the particulars or the figures change", () => {
    const otherError = controllerReport({ ...healthy, gatewayReachable: false, gatewayError: "timed out after 5 s" }, at)
    expect(transitionLines(routerDown, otherError)).toEqual([])
    expect(transitionLines(ready, controllerReport({ ...healthy, queueDepth: 40 }, at))).toEqual([])
  })

  it("says a new reason, a change of role, and a loss of health as an error", () => {
    const alsoExcluded = controllerReport({ ...healthy, gatewayReachable: false, gatewayError: "x", excluded: true }, at)
    expect(transitionLines(routerDown, alsoExcluded).map((line) => line.message)).toEqual([
      "not ready: gateway unreachable (x), this node is excluded from external load balancers"
    ])
    expect(transitionLines(ready, waitingReport({ leading: false, holder: "node-2" }))).toEqual([
      { level: "Info", message: "ready: standing by (leader: node-2)" }
    ])
    expect(transitionLines(ready, controllerReport({ ...healthy, lastResyncAt: NOW - 100_000 }, at))).toEqual([
      { level: "Error", message: "not healthy: loops stalled: no full pass for 100 s" }
    ])
  })
})

describe("loggingTransitions", () => {
  const starting = controllerReport({ ...healthy, initialPassDone: false }, at)
  const ready = controllerReport(healthy, at)

  /** A health check that says what `current` holds, wrapped; and the lines logged. */
  const setUp = Effect.gen(function*() {
    const current = yield* Ref.make<HealthReport>(starting)
    const logged: Array<string> = []
    const inner = Layer.succeed(HealthCheck, HealthCheck.of({ report: Ref.get(current) }))
    const capture = Logger.layer([Logger.make(({ logLevel, message }) => {
      logged.push(`${logLevel} ${(Array.isArray(message) ? message : [message]).join(" ")}`)
    })])
    const context = yield* Layer.build(loggingTransitions().pipe(Layer.provide(inner), Layer.provide(capture)))
    // Probes run in the server's fibers, with the process's logger: here, the capturing one.
    const report = Context.get(context, HealthCheck).report.pipe(Effect.provide(capture))
    return { current, logged, report }
  })

  /** Lets the background check run once the clock has moved. */
  const settle = Effect.gen(function*() {
    for (let i = 0; i < 20; i++) yield* Effect.yieldNow
  })

  it.effect("logs a change before the probe that sees it answers, and once", () =>
    Effect.gen(function*() {
      const { current, logged, report } = yield* setUp
      yield* settle
      expect(logged).toEqual(["Info not ready: first pass not done", "Info healthy"])
      yield* Ref.set(current, ready)
      expect((yield* report).ready.ok).toBe(true)
      expect(logged.slice(2)).toEqual(["Info ready"])
      yield* report
      yield* report
      expect(logged).toHaveLength(3)
    }).pipe(Effect.scoped))

  it.effect("notices a change within a second when nobody asks", () =>
    Effect.gen(function*() {
      const { current, logged } = yield* setUp
      yield* settle
      yield* Ref.set(current, ready)
      yield* TestClock.adjust("999 millis")
      yield* settle
      expect(logged).toHaveLength(2)
      yield* TestClock.adjust("1 millis")
      yield* settle
      expect(logged.slice(2)).toEqual(["Info ready"])
    }).pipe(Effect.scoped))
})
