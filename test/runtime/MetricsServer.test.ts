/**
 * The health and metrics servers for real, on 127.0.0.1: what each answers, to whom, over what.
 * The apiserver's reviews come from the memory layer.
 */
import { assert, describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Layer, Ref } from "effect"
import * as fs from "node:fs"
import { request as httpRequest } from "node:http"
import { request as httpsRequest } from "node:https"
import { createServer as createNetServer } from "node:net"
import type { AddressInfo } from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { connect } from "node:tls"
import { AccessReview, MemoryAccessReviews } from "../../src/kube/AccessReview.ts"
import { type HealthReport, HealthCheck, healthServerLayer } from "../../src/runtime/HealthServer.ts"
import { isLoopback, metricsServerLayer, secureMetricsServerLayer } from "../../src/runtime/MetricsServer.ts"
import { selfSignedCertificate } from "../../src/runtime/selfSignedCertificate.ts"

const PROMETHEUS = "prometheus-token"
const OTHER = "other-token"

/** A leader whose router is down: everything /readyz used to tell anyone. */
const report: HealthReport = {
  live: { ok: true, because: [], detail: "" },
  ready: {
    ok: false,
    because: ["gateway unreachable"],
    detail: "gateway unreachable (connect ECONNREFUSED 192.168.77.1:49536)"
  },
  figures: {
    servicesSynced: true,
    initialPassDone: true,
    gatewayReachable: false,
    excludedNode: false,
    queueDepth: 7,
    eventsQueued: 3,
    lastProbeAt: 1_700_000_000_000,
    lastResyncAt: 1_700_000_030_000
  }
}

const healthCheck = Layer.succeed(HealthCheck, HealthCheck.of({ report: Effect.succeed(report) }))

const freePort = Effect.promise(() =>
  new Promise<number>((resolve) => {
    const server = createNetServer().listen(0, "127.0.0.1", () => {
      const { port } = server.address() as AddressInfo
      server.close(() => resolve(port))
    })
  })
)

interface Answer {
  readonly status: number
  readonly body: string
  readonly headers: Record<string, string | Array<string> | undefined>
}

/** One GET, over HTTPS without verifying the certificate (as `curl -k`), or plain HTTP. */
const get = (url: string, headers: Record<string, string> = {}) =>
  Effect.promise(() =>
    new Promise<Answer | { readonly error: string }>((resolve) => {
      const request = (url.startsWith("https:") ? httpsRequest : httpRequest)(url, { headers, rejectUnauthorized: false, timeout: 5000 }, (response) => {
        let body = ""
        response.setEncoding("utf8")
        response.on("data", (chunk: string) => (body += chunk))
        response.on("end", () => resolve({ status: response.statusCode ?? 0, body, headers: response.headers }))
      })
      request.on("error", (error) => resolve({ error: error.message }))
      request.on("timeout", () => request.destroy(new Error("timed out")))
      request.end()
    })
  )

const answered = (answer: Answer | { readonly error: string }): Answer => {
  if ("error" in answer) return assert.fail(`no answer: ${answer.error}`)
  return answer
}

/** The common name of the certificate a TLS server presents. */
const servedCommonName = (port: number) =>
  Effect.promise(() =>
    new Promise<string>((resolve, reject) => {
      const socket = connect({ host: "127.0.0.1", port, rejectUnauthorized: false }, () => {
        const name = socket.getPeerCertificate().subject?.CN
        socket.end()
        resolve(Array.isArray(name) ? name.join(",") : name ?? "")
      })
      socket.on("error", reject)
    })
  )

const tokens = Effect.gen(function*() {
  const memory = yield* MemoryAccessReviews
  yield* Ref.set(memory.users, new Map([
    [PROMETHEUS, { username: "system:serviceaccount:monitoring:prometheus-k8s", groups: [] }],
    [OTHER, { username: "system:serviceaccount:default:app", groups: [] }]
  ]))
  yield* Ref.set(memory.allowed, new Set(["system:serviceaccount:monitoring:prometheus-k8s"]))
  return memory
})

/** Starts `layer` for the rest of the test. */
const serve = <E>(layer: Layer.Layer<never, E, HealthCheck | AccessReview>) =>
  Layer.build(layer.pipe(Layer.provide(healthCheck))).pipe(Effect.asVoid)

describe("the health server", () => {
  it.live("answers only ok: 200 {\"ok\":true} or 503 {\"ok\":false}, and serves no /metrics", () =>
    Effect.gen(function*() {
      const port = yield* freePort
      yield* Layer.build(healthServerLayer({ host: "127.0.0.1", port }).pipe(Layer.provide(healthCheck)))
      const ready = answered(yield* get(`http://127.0.0.1:${port}/readyz`))
      assert.strictEqual(ready.status, 503)
      assert.strictEqual(ready.body, '{"ok":false}')
      const live = answered(yield* get(`http://127.0.0.1:${port}/healthz`))
      assert.strictEqual(live.status, 200)
      assert.strictEqual(live.body, '{"ok":true}')
      assert.strictEqual(answered(yield* get(`http://127.0.0.1:${port}/metrics`)).status, 404)
    }).pipe(Effect.scoped))
})

describe("the metrics server over HTTPS", () => {
  it.live("401 without a token or with an unknown one, 403 without the right, 200 and Prometheus text with it", () =>
    Effect.gen(function*() {
      yield* tokens
      const port = yield* freePort
      yield* serve(secureMetricsServerLayer({ address: { host: "127.0.0.1", port }, certDir: undefined }))
      const url = `https://127.0.0.1:${port}/metrics`

      const anonymous = answered(yield* get(url))
      assert.strictEqual(anonymous.status, 401)
      assert.strictEqual(anonymous.headers["www-authenticate"], 'Bearer realm="edge-cloud-controller-manager"')
      assert.strictEqual(answered(yield* get(url, { authorization: "Bearer forged" })).status, 401)
      assert.strictEqual(answered(yield* get(url, { authorization: `Bearer ${OTHER}` })).status, 403)

      const scrape = answered(yield* get(url, { authorization: `Bearer ${PROMETHEUS}` }))
      assert.strictEqual(scrape.status, 200)
      assert.strictEqual(scrape.headers["content-type"], "text/plain; version=0.0.4; charset=utf-8")
      expect(scrape.body).toMatch(/^# HELP edge_ccm_ready /m)
      expect(scrape.body).toMatch(/^edge_ccm_ready 0$/m)
      expect(scrape.body).toMatch(/^edge_ccm_gateway_reachable 0$/m)
      expect(scrape.body).toMatch(/^edge_ccm_queue_depth 7$/m)
      expect(scrape.body).toMatch(/^edge_ccm_events_queued 3$/m)
      expect(scrape.body).toMatch(/^edge_ccm_last_resync_timestamp_seconds 1700000030$/m)
      // The router's error text is for the log: a label would be unbounded and say too much.
      expect(scrape.body).not.toContain("ECONNREFUSED")
    }).pipe(Effect.scoped, Effect.provide(AccessReview.layerMemory)))

  it.live("answers 503 while the apiserver cannot review tokens: closed, never open", () =>
    Effect.gen(function*() {
      const memory = yield* tokens
      yield* Ref.set(memory.unreachable, true)
      const port = yield* freePort
      yield* serve(secureMetricsServerLayer({ address: { host: "127.0.0.1", port }, certDir: undefined }))
      const scrape = answered(yield* get(`https://127.0.0.1:${port}/metrics`, { authorization: `Bearer ${PROMETHEUS}` }))
      assert.strictEqual(scrape.status, 503)
      expect(scrape.body).not.toContain("edge_ccm")
    }).pipe(Effect.scoped, Effect.provide(AccessReview.layerMemory)))

  it.live("answers no plain HTTP on its port", () =>
    Effect.gen(function*() {
      yield* tokens
      const port = yield* freePort
      yield* serve(secureMetricsServerLayer({ address: { host: "127.0.0.1", port }, certDir: undefined }))
      const plain = yield* get(`http://127.0.0.1:${port}/metrics`, { authorization: `Bearer ${PROMETHEUS}` })
      // The TLS server drops the connection: no HTTP answer at all, let alone the metrics.
      assert.deepStrictEqual(plain, { error: "socket hang up" })
    }).pipe(Effect.scoped, Effect.provide(AccessReview.layerMemory)))

  it.live("uses tls.crt and tls.key from --metrics-cert-dir, and picks up a renewed pair", () =>
    Effect.gen(function*() {
      yield* tokens
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "edge-ccm-metrics-cert-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
      const write = (commonName: string) => {
        const pair = selfSignedCertificate({ commonName, dnsNames: [], ipAddresses: ["127.0.0.1"], now: new Date(), validForDays: 1 })
        fs.writeFileSync(path.join(dir, "tls.crt"), pair.cert)
        fs.writeFileSync(path.join(dir, "tls.key"), pair.key)
      }
      write("issued-by-cert-manager")
      const port = yield* freePort
      yield* serve(secureMetricsServerLayer({ address: { host: "127.0.0.1", port }, certDir: dir, certCheckInterval: "50 millis" }))
      assert.strictEqual(yield* servedCommonName(port), "issued-by-cert-manager")

      write("renewed")
      let served = ""
      for (let attempt = 0; attempt < 100 && served !== "renewed"; attempt++) {
        served = yield* servedCommonName(port)
        if (served !== "renewed") yield* Effect.sleep("50 millis")
      }
      assert.strictEqual(served, "renewed")
      // A half-written pair (a key that does not match) is not taken.
      fs.writeFileSync(path.join(dir, "tls.key"), selfSignedCertificate({ commonName: "x", dnsNames: [], ipAddresses: [], now: new Date(), validForDays: 1 }).key)
      yield* Effect.sleep("200 millis")
      assert.strictEqual(yield* servedCommonName(port), "renewed")
      assert.strictEqual(answered(yield* get(`https://127.0.0.1:${port}/metrics`, { authorization: `Bearer ${PROMETHEUS}` })).status, 200)
    }).pipe(Effect.scoped, Effect.provide(AccessReview.layerMemory)))

  it.live("refuses to start on a certificate directory whose key does not match", () =>
    Effect.gen(function*() {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "edge-ccm-metrics-cert-"))
      yield* Effect.addFinalizer(() => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true })))
      const one = selfSignedCertificate({ commonName: "one", dnsNames: [], ipAddresses: [], now: new Date(), validForDays: 1 })
      const two = selfSignedCertificate({ commonName: "two", dnsNames: [], ipAddresses: [], now: new Date(), validForDays: 1 })
      fs.writeFileSync(path.join(dir, "tls.crt"), one.cert)
      fs.writeFileSync(path.join(dir, "tls.key"), two.key)
      const port = yield* freePort
      const exit = yield* Effect.exit(serve(secureMetricsServerLayer({ address: { host: "127.0.0.1", port }, certDir: dir })))
      assert.isTrue(Exit.isFailure(exit))
      expect(String(exit)).toContain("MetricsCertificateError")
      expect(String(exit)).toContain(`${dir}/tls.crt and tls.key`)
    }).pipe(Effect.scoped, Effect.provide(AccessReview.layerMemory)))
})

describe("the metrics server on a loopback address", () => {
  it.live("serves plain HTTP without authentication, and asks the apiserver nothing", () =>
    Effect.gen(function*() {
      const memory = yield* tokens
      const port = yield* freePort
      yield* serve(metricsServerLayer({ address: { host: "127.0.0.1", port }, certDir: undefined }))
      const scrape = answered(yield* get(`http://127.0.0.1:${port}/metrics`))
      assert.strictEqual(scrape.status, 200)
      expect(scrape.body).toMatch(/^edge_ccm_queue_depth 7$/m)
      assert.deepStrictEqual(yield* Ref.get(memory.calls), [])
    }).pipe(Effect.scoped, Effect.provide(AccessReview.layerMemory)))
})

describe("isLoopback", () => {
  it("is true for 127.0.0.0/8, ::1 and localhost only: every other address gets HTTPS and tokens", () => {
    for (const host of ["127.0.0.1", "127.1.2.3", "::1", "localhost"]) expect(isLoopback(host), host).toBe(true)
    for (const host of ["0.0.0.0", "::", "192.168.77.10", "10.0.0.1", "fd00::1", "128.0.0.1", "node-1"]) {
      expect(isLoopback(host), host).toBe(false)
    }
  })
})
