/**
 * /healthz (the loops are alive) and /readyz (caches synced and the router answering), on a
 * small HTTP server of their own. They answer `{"ok":true}` or `{"ok":false}` and nothing else:
 * the port is reachable from the node's LAN, and what the controller is doing (its role, the
 * router's errors, its queue) is for the log and the authenticated /metrics, not for anyone
 * who can open a TCP connection. The log gets one line each time readiness or health changes
 * (`loggingTransitions`).
 */
import { createServer, type Server } from "node:http"
import { NodeHttpServer } from "@effect/platform-node"
import { Context, type Duration, Effect, Layer, Schedule, Semaphore } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"
import type { BindAddress } from "./Settings.ts"

/** One probe's verdict. */
export interface ProbeVerdict {
  readonly ok: boolean
  /**
   * Stable words for the state behind the verdict (`gateway unreachable`, `standby`); empty
   * when there is nothing to say. A change of `ok` or of these words is a transition.
   */
  readonly because: ReadonlyArray<string>
  /** The same with its particulars (the router's error, the leader's name), for the log line. */
  readonly detail: string
}

/** The controller's state behind the verdicts, published as gauges on /metrics. */
export interface HealthFigures {
  readonly servicesSynced: boolean
  readonly initialPassDone: boolean
  readonly gatewayReachable: boolean
  readonly excludedNode: boolean
  readonly queueDepth: number
  readonly eventsQueued: number
  /** When the loops last made progress (ms since epoch); 0 while no controller runs. */
  readonly lastProbeAt: number
  readonly lastResyncAt: number
}

/** What /healthz and /readyz decide from, and their verdicts. */
export interface HealthReport {
  readonly live: ProbeVerdict
  readonly ready: ProbeVerdict
  readonly figures: HealthFigures
}

/** What the health endpoints ask; the controller (and leader election) provide it. */
export class HealthCheck extends Context.Service<HealthCheck, {
  readonly report: Effect.Effect<HealthReport>
}>()("edge-ccm/runtime/HealthCheck") {}

const probeRoute = (path: "/healthz" | "/readyz", pick: (report: HealthReport) => ProbeVerdict) =>
  HttpRouter.add(
    "GET",
    path,
    Effect.gen(function*() {
      const health = yield* HealthCheck
      const { ok } = pick(yield* health.report)
      return HttpServerResponse.jsonUnsafe({ ok }, { status: ok ? 200 : 503 })
    })
  )

const probeRoutes = Layer.mergeAll(
  probeRoute("/healthz", (report) => report.live),
  probeRoute("/readyz", (report) => report.ready)
)

/**
 * A Node server that gives up on slow or idle clients: a LAN host must not be able to hold
 * connections open for minutes (Node's defaults) by sending a request slowly.
 */
export const hardened = <S extends Server>(server: S): S => {
  server.headersTimeout = 10_000
  server.requestTimeout = 15_000
  server.keepAliveTimeout = 5_000
  server.maxHeadersCount = 64
  server.maxConnections = 128
  return server
}

/** Serves /healthz and /readyz on `address`. */
export const healthServerLayer = (address: BindAddress): Layer.Layer<never, unknown, HealthCheck> =>
  HttpRouter.serve(probeRoutes, { disableLogger: true }).pipe(
    Layer.provide(NodeHttpServer.layer(() => hardened(createServer()), { host: address.host, port: address.port }))
  )

const line = (probe: "ready" | "healthy", verdict: ProbeVerdict) => {
  const word = verdict.ok ? probe : `not ${probe}`
  return verdict.detail === "" ? word : `${word}: ${verdict.detail}`
}

const sameVerdict = (a: ProbeVerdict, b: ProbeVerdict) => a.ok === b.ok && a.because.join("\n") === b.because.join("\n")

/** Phases every start goes through: not ready, but nothing is wrong. */
const STARTING = new Set(["starting", "Services not synced", "first pass not done"])

type Level = "Info" | "Warn" | "Error"

/**
 * The log lines for a change from `previous` to `next` (both verdicts when there is no
 * previous report): "ready", "not ready: gateway unreachable (…)", "not healthy: …". Not ready
 * for any reason but starting up is a warning; not healthy, an error.
 */
export const transitionLines = (
  previous: HealthReport | undefined,
  next: HealthReport
): ReadonlyArray<{ readonly level: Level; readonly message: string }> => {
  const lines: Array<{ readonly level: Level; readonly message: string }> = []
  if (previous === undefined || !sameVerdict(previous.ready, next.ready)) {
    const wrong = !next.ready.ok && next.ready.because.some((word) => !STARTING.has(word))
    lines.push({ level: wrong ? "Warn" : "Info", message: line("ready", next.ready) })
  }
  if (previous === undefined || !sameVerdict(previous.live, next.live)) {
    lines.push({ level: next.live.ok ? "Info" : "Error", message: line("healthy", next.live) })
  }
  return lines
}

/**
 * The same health check, writing a log line each time readiness or health changes: as seen by a
 * probe or a scrape (so the line is written before the answer that differs), and every
 * `interval` when nobody asks. Reports are taken one at a time, so lines come in order.
 */
export const loggingTransitions = (interval: Duration.Input = "1 second"): Layer.Layer<HealthCheck, never, HealthCheck> =>
  Layer.effect(
    HealthCheck,
    Effect.gen(function*() {
      const inner = yield* HealthCheck
      const oneAtATime = yield* Semaphore.make(1)
      let previous: HealthReport | undefined
      const report = Effect.gen(function*() {
        const next = yield* inner.report
        for (const { level, message } of transitionLines(previous, next)) yield* Effect.logWithLevel(level)(message)
        previous = next
        return next
      }).pipe(oneAtATime.withPermits(1))
      yield* report.pipe(Effect.repeat(Schedule.spaced(interval)), Effect.forkScoped)
      return HealthCheck.of({ report })
    })
  )
