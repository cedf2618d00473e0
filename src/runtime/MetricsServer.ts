/**
 * /metrics, served the way controller-runtime serves a controller's metrics: on an address of its
 * own, over HTTPS, each request's bearer token reviewed by the apiserver and allowed only with
 * RBAC's `get` on the non-resource URL `/metrics` (see metricsAccess.ts). The certificate comes
 * from `--metrics-cert-dir` (tls.crt, tls.key: cert-manager's names; re-read when they change),
 * else it is self-signed at start-up. A loopback address alone is served as plain HTTP without
 * authentication, for a collector on the same host.
 */
import * as fs from "node:fs"
import { createServer, type Server } from "node:http"
import { createServer as createSecureServer, type Server as SecureServer } from "node:https"
import { hostname } from "node:os"
import * as path from "node:path"
import { createSecureContext } from "node:tls"
import { isIP } from "node:net"
import { NodeHttpServer } from "@effect/platform-node"
import { type Duration, Effect, Layer, Schedule, Schema } from "effect"
import { HttpRouter, HttpServerRequest, HttpServerResponse } from "effect/http"
import { PrometheusMetrics } from "effect/observability"
import type { AccessReview } from "../kube/AccessReview.ts"
import { publishHealth } from "./healthMetrics.ts"
import { hardened, HealthCheck } from "./HealthServer.ts"
import { type AccessDecision, defaultMetricsAccess, makeMetricsAccess, type MetricsAccessOptions } from "./metricsAccess.ts"
import { type CertificateAndKey, selfSignedCertificate } from "./selfSignedCertificate.ts"
import type { BindAddress } from "./Settings.ts"

/** The serving certificate could not be read or does not match its key. */
export class MetricsCertificateError extends Schema.TaggedError<MetricsCertificateError>()("MetricsCertificateError", {
  directory: Schema.String,
  message: Schema.String
}) {}

/** Where /metrics listens and how it is secured. */
export interface MetricsServerOptions {
  readonly address: BindAddress
  /** Holds tls.crt and tls.key; `undefined`: a self-signed certificate made at start-up. */
  readonly certDir: string | undefined
  readonly access?: MetricsAccessOptions | undefined
  /** How often the certificate directory is read for a renewed certificate (default 1 minute). */
  readonly certCheckInterval?: Duration.Input | undefined
}

/** 127.0.0.0/8, ::1 and `localhost`: reachable from this host only. */
export const isLoopback = (host: string): boolean =>
  host === "localhost" || host === "::1" || (isIP(host) === 4 && host.startsWith("127."))

/** Prometheus text, with the health gauges refreshed first. */
const metricsText = Effect.gen(function*() {
  const health = yield* HealthCheck
  yield* publishHealth(yield* health.report)
  const body = yield* PrometheusMetrics.format()
  return HttpServerResponse.text(body, { contentType: "text/plain; version=0.0.4; charset=utf-8" })
})

const refusal = (decision: Exclude<AccessDecision, "allowed">) => {
  switch (decision) {
    case "unauthenticated":
      return HttpServerResponse.text("Unauthorized\n", {
        status: 401,
        headers: { "www-authenticate": 'Bearer realm="edge-cloud-controller-manager"' }
      })
    case "forbidden":
      return HttpServerResponse.text("Forbidden: get on /metrics is not allowed\n", { status: 403 })
    case "unavailable":
      return HttpServerResponse.text("Service Unavailable: cannot review the token now\n", { status: 503 })
  }
}

const readCertDir = (directory: string): Effect.Effect<CertificateAndKey, MetricsCertificateError> =>
  Effect.try({
    try: () => {
      const pair = {
        cert: fs.readFileSync(path.join(directory, "tls.crt"), "utf8"),
        key: fs.readFileSync(path.join(directory, "tls.key"), "utf8")
      }
      createSecureContext(pair) // throws when the key does not match the certificate
      return pair
    },
    catch: (cause) =>
      new MetricsCertificateError({
        directory,
        message: `cannot use ${directory}/tls.crt and tls.key: ${cause instanceof Error ? cause.message : String(cause)}`
      })
  })

/** Picks up a renewed certificate (cert-manager rewrites the Secret's files in place). */
const watchCertDir = (
  directory: string,
  server: () => SecureServer | undefined,
  initial: CertificateAndKey,
  interval: Duration.Input
) => {
  let current = initial
  return readCertDir(directory).pipe(
    Effect.flatMap((next) =>
      next.cert === current.cert && next.key === current.key
        ? Effect.void
        : Effect.sync(() => {
          server()?.setSecureContext({ ...next, minVersion: "TLSv1.2" })
          current = next
        }).pipe(Effect.andThen(Effect.logInfo(`reloaded the /metrics certificate from ${directory}`)))
    ),
    Effect.catch((error) => Effect.logWarning(`kept the current /metrics certificate: ${error.message}`)),
    Effect.repeat(Schedule.spaced(interval)),
    Effect.forkScoped
  )
}

// No "Listening on http://…" from the platform: it would say http for the HTTPS server too.
const serverLayer = <E, R>(routes: Layer.Layer<never, E, R>, make: () => Server, address: BindAddress) =>
  HttpRouter.serve(routes, { disableLogger: true, disableListenLog: true }).pipe(
    Layer.provide(NodeHttpServer.layer(make, { host: address.host, port: address.port }))
  )

/** Serves /metrics on `options.address`: plain HTTP on a loopback address, else HTTPS with authentication. */
export const metricsServerLayer = (
  options: MetricsServerOptions
): Layer.Layer<never, unknown, HealthCheck | AccessReview> => {
  const { host, port } = options.address
  const where = `${host.includes(":") ? `[${host}]` : host}:${port}`
  if (isLoopback(options.address.host)) {
    return Layer.merge(
      serverLayer(HttpRouter.add("GET", "/metrics", metricsText), () => hardened(createServer()), options.address),
      Layer.effectDiscard(Effect.logInfo(`serving /metrics on http://${where} without authentication (a loopback address)`))
    )
  }
  return secureMetricsServerLayer(options).pipe(
    Layer.merge(Layer.effectDiscard(Effect.logInfo(
      `serving /metrics on https://${where} with ${
        options.certDir === undefined ? "a self-signed certificate" : `the certificate in ${options.certDir}`
      }, to bearer tokens allowed get on /metrics`
    )))
  )
}

/** /metrics over HTTPS, every request authenticated and authorized, whatever the address. */
export const secureMetricsServerLayer = (
  options: MetricsServerOptions
): Layer.Layer<never, unknown, HealthCheck | AccessReview> =>
  Layer.unwrap(Effect.gen(function*() {
    const access = yield* makeMetricsAccess(options.access ?? defaultMetricsAccess)
    const certificate = options.certDir === undefined
      ? selfSignedCertificate({
        commonName: "edge-cloud-controller-manager",
        dnsNames: [hostname(), "localhost"],
        ipAddresses: [
          ...(isIP(options.address.host) !== 0 && options.address.host !== "0.0.0.0" && options.address.host !== "::"
            ? [options.address.host]
            : []),
          "127.0.0.1"
        ],
        now: new Date(),
        validForDays: 365
      })
      : yield* readCertDir(options.certDir)
    let server: SecureServer | undefined
    if (options.certDir !== undefined) {
      yield* watchCertDir(options.certDir, () => server, certificate, options.certCheckInterval ?? "1 minute")
    }
    const route = HttpRouter.add("GET", "/metrics", (request: HttpServerRequest.HttpServerRequest) =>
      Effect.flatMap(
        access.decide(request.headers["authorization"]),
        (decision) => (decision === "allowed" ? metricsText : Effect.succeed(refusal(decision)))
      ))
    return serverLayer(
      route,
      () => (server = hardened(createSecureServer({ ...certificate, minVersion: "TLSv1.2", handshakeTimeout: 10_000 }))),
      options.address
    )
  }))
