/**
 * /healthz (the loops are alive), /readyz (caches synced and the router answering) and
 * /metrics (Prometheus) on one small HTTP server.
 */
import { createServer } from "node:http"
import { NodeHttpServer } from "@effect/platform-node"
import { Context, Effect, Layer } from "effect"
import { HttpRouter, HttpServerResponse } from "effect/http"
import { PrometheusMetrics } from "effect/observability"

export interface HealthReport {
  readonly healthy: boolean
  readonly ready: boolean
  /** Shown in the response body, for `kubectl describe pod` and humans with curl. */
  readonly details: Readonly<Record<string, unknown>>
}

/** What the health endpoints ask; the controller (and leader election) provide it. */
export class HealthCheck extends Context.Service<HealthCheck, {
  readonly report: Effect.Effect<HealthReport>
}>()("edge-ccm/runtime/HealthCheck") {}

const probeRoute = (path: "/healthz" | "/readyz", pick: (report: HealthReport) => boolean) =>
  HttpRouter.add(
    "GET",
    path,
    Effect.gen(function*() {
      const health = yield* HealthCheck
      const report = yield* health.report
      const ok = pick(report)
      return HttpServerResponse.jsonUnsafe({ ok, ...report.details }, { status: ok ? 200 : 503 })
    })
  )

const routes = Layer.mergeAll(
  probeRoute("/healthz", (report) => report.healthy),
  probeRoute("/readyz", (report) => report.ready)
)

/** Serves the probes, and /metrics too unless `metrics` names another address. */
export const healthServerLayer = (options: {
  readonly health: { readonly host: string; readonly port: number }
  readonly metrics: { readonly host: string; readonly port: number } | undefined
}): Layer.Layer<never, unknown, HealthCheck> => {
  const serveOn = (address: { readonly host: string; readonly port: number }) =>
    NodeHttpServer.layer(createServer, { host: address.host, port: address.port })
  const metrics = PrometheusMetrics.layerHttp()
  if (options.metrics === undefined) {
    return HttpRouter.serve(Layer.mergeAll(routes, metrics), { disableLogger: true }).pipe(
      Layer.provide(serveOn(options.health))
    )
  }
  return Layer.mergeAll(
    HttpRouter.serve(routes, { disableLogger: true }).pipe(Layer.provide(serveOn(options.health))),
    HttpRouter.serve(metrics, { disableLogger: true }).pipe(Layer.provide(serveOn(options.metrics)))
  )
}
