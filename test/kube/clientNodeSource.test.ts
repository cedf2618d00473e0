import { assert, describe, it } from "@effect/vitest"
import type { V1Service } from "@kubernetes/client-node"
import { KubeConfig, Watch } from "@kubernetes/client-node"
import { Deferred, Effect, Exit, Fiber, Queue, Stream } from "effect"
import * as http from "node:http"
import type { ListPage, PageParams, WatchClient } from "../../src/kube/clientNodeSource.ts"
import { listAll, makeSource, watchStream } from "../../src/kube/clientNodeSource.ts"
import { apisFromKubeConfig } from "../../src/kube/Kube.ts"
import type { RawWatchEvent } from "../../src/kube/listWatch.ts"

interface Started {
  readonly path: string
  readonly params: Record<string, string | number | boolean | undefined>
  readonly emit: (phase: string, object: unknown) => void
  readonly done: (err: unknown) => void
  readonly controller: AbortController
  /** Resolves the `watch()` promise, as client-node does once response headers arrive. */
  readonly connect: () => void
}

/** A stand-in for client-node's `Watch` that lets the test drive each connection. */
const fakeWatch = Effect.gen(function*() {
  const started = yield* Queue.unbounded<Started>()
  const client: WatchClient = {
    watch: (path, params, callback, done) =>
      new Promise<AbortController>((resolve) => {
        const controller = new AbortController()
        Queue.offerUnsafe(started, {
          path,
          params,
          emit: callback,
          done,
          controller,
          connect: () => resolve(controller)
        })
      })
  }
  return { client, started }
})

const service = (name: string, resourceVersion: string) => ({
  apiVersion: "v1",
  kind: "Service",
  metadata: { name, namespace: "default", resourceVersion, creationTimestamp: "2025-01-02T03:04:05Z" },
  spec: { type: "LoadBalancer" }
})

describe("watchStream (client-node Watch adapter)", () => {
  it.effect("emits typed events, decoded into the same classes a list returns", () =>
    Effect.gen(function*() {
      const { client, started } = yield* fakeWatch
      const source = makeSource<V1Service>({
        resource: "services",
        path: "/api/v1/services",
        model: "V1Service",
        watch: client,
        list: () => Promise.resolve({ items: [] })
      })
      const out = yield* Queue.unbounded<RawWatchEvent<V1Service>>()
      const fiber = yield* source.watch("100").pipe(
        Stream.runForEach((event) => Queue.offer(out, event)),
        Effect.forkChild
      )
      const conn = yield* Queue.take(started)
      assert.strictEqual(conn.path, "/api/v1/services")
      assert.strictEqual(conn.params["resourceVersion"], "100")
      assert.strictEqual(conn.params["allowWatchBookmarks"], true)
      const timeout = conn.params["timeoutSeconds"]
      assert.isTrue(typeof timeout === "number" && timeout >= 60 && timeout < 120, `timeoutSeconds ${timeout}`)
      conn.connect()
      conn.emit("ADDED", service("a", "101"))
      conn.emit("BOOKMARK", { kind: "Service", apiVersion: "v1", metadata: { resourceVersion: "150" } })
      conn.emit("DELETED", service("a", "160"))
      conn.emit("ERROR", { kind: "Status", code: 410, reason: "Expired", message: "too old" })
      const added = yield* Queue.take(out)
      assert.strictEqual(added.type, "ADDED")
      if (added.type === "ADDED") {
        assert.strictEqual(added.object.metadata?.name, "a")
        assert.instanceOf(added.object.metadata?.creationTimestamp, Date)
      }
      assert.deepStrictEqual(yield* Queue.take(out), { type: "BOOKMARK", resourceVersion: "150" })
      assert.strictEqual((yield* Queue.take(out)).type, "DELETED")
      assert.deepStrictEqual(yield* Queue.take(out), {
        type: "ERROR",
        status: { kind: "Status", code: 410, reason: "Expired", message: "too old" }
      })
      yield* Fiber.interrupt(fiber)
    }))

  it.effect("ends when client-node reports a normal close", () =>
    Effect.gen(function*() {
      const { client, started } = yield* fakeWatch
      const fiber = yield* watchStream(client, { verb: "watch", resource: "nodes" }, "/api/v1/nodes", {}, (x) => x)
        .pipe(Stream.runCollect, Effect.forkChild)
      const conn = yield* Queue.take(started)
      conn.connect()
      conn.emit("ADDED", { metadata: { name: "n1" } })
      conn.done(null)
      const events = yield* Fiber.join(fiber)
      assert.deepStrictEqual(events, [{ type: "ADDED", object: { metadata: { name: "n1" } } }])
    }))

  it.effect("fails with a typed error when the watch request is refused", () =>
    Effect.gen(function*() {
      const { client, started } = yield* fakeWatch
      const fiber = yield* watchStream(client, { verb: "watch", resource: "services" }, "/api/v1/services", {}, (x) => x)
        .pipe(Stream.runCollect, Effect.forkChild)
      const conn = yield* Queue.take(started)
      conn.done(Object.assign(new Error("Forbidden"), { statusCode: 403 }))
      conn.connect()
      const exit = yield* Fiber.await(fiber)
      assert.isTrue(Exit.isFailure(exit))
      const error = Exit.isFailure(exit) ? exit.cause.reasons[0] : undefined
      assert.strictEqual(error?._tag, "Fail")
      if (error?._tag === "Fail") {
        assert.strictEqual(error.error._tag, "KubeError")
        if (error.error._tag === "KubeError") {
          assert.strictEqual(error.error.status, 403)
          assert.strictEqual(error.error.verb, "watch")
          assert.strictEqual(error.error.resource, "services")
          assert.include(error.error.message, "cannot watch services")
        }
      }
    }))

  it.effect("interruption aborts the request", () =>
    Effect.gen(function*() {
      const { client, started } = yield* fakeWatch
      const fiber = yield* watchStream(client, { verb: "watch", resource: "services" }, "/x", {}, (x) => x)
        .pipe(Stream.runDrain, Effect.forkChild)
      const conn = yield* Queue.take(started)
      conn.connect()
      yield* Effect.promise(() => Promise.resolve())
      assert.isFalse(conn.controller.signal.aborted)
      yield* Fiber.interrupt(fiber)
      assert.isTrue(conn.controller.signal.aborted)
    }))

  it.effect("interruption before the response arrived aborts as soon as the request is known", () =>
    Effect.gen(function*() {
      const { client, started } = yield* fakeWatch
      const fiber = yield* watchStream(client, { verb: "watch", resource: "services" }, "/x", {}, (x) => x)
        .pipe(Stream.runDrain, Effect.forkChild)
      const conn = yield* Queue.take(started)
      yield* Fiber.interrupt(fiber)
      assert.isFalse(conn.controller.signal.aborted)
      conn.connect()
      yield* Effect.promise(() => new Promise((resolve) => setImmediate(resolve)))
      assert.isTrue(conn.controller.signal.aborted)
    }))

  it.live("interrupting a real client-node Watch closes its HTTP connection (loopback server)", () =>
    Effect.gen(function*() {
      const requested = yield* Deferred.make<string>()
      const closed = yield* Deferred.make<void>()
      const server = yield* Effect.acquireRelease(
        Effect.callback<http.Server>((resume) => {
          const s = http.createServer((req, res) => {
            res.writeHead(200, { "content-type": "application/json" })
            res.write(JSON.stringify({ type: "ADDED", object: service("a", "5") }) + "\n")
            req.on("close", () => Deferred.doneUnsafe(closed, Exit.void))
            Deferred.doneUnsafe(requested, Exit.succeed(req.url ?? ""))
          })
          s.listen(0, "127.0.0.1", () => resume(Effect.succeed(s)))
        }),
        (s) =>
          Effect.callback<void>((resume) => {
            s.closeAllConnections()
            s.close(() => resume(Effect.void))
          })
      )
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      const kc = new KubeConfig()
      kc.loadFromClusterAndUser({ name: "c", server: `http://127.0.0.1:${port}`, skipTLSVerify: true }, { name: "u" })
      const out = yield* Queue.unbounded<RawWatchEvent<unknown>>()
      const fiber = yield* watchStream(
        new Watch(kc),
        { verb: "watch", resource: "services" },
        "/api/v1/services",
        { resourceVersion: "4", allowWatchBookmarks: true },
        (x) => x
      ).pipe(Stream.runForEach((event) => Queue.offer(out, event)), Effect.forkChild)
      const url = yield* Deferred.await(requested)
      assert.include(url, "watch=true")
      assert.include(url, "resourceVersion=4")
      assert.strictEqual((yield* Queue.take(out)).type, "ADDED")
      yield* Fiber.interrupt(fiber)
      yield* Deferred.await(closed).pipe(Effect.timeout("5 seconds"))
    }).pipe(Effect.scoped))
})

describe("apisFromKubeConfig", () => {
  it("raises client-node's 30 s watch inactivity limit past the longest server-side watch", () => {
    const kc = new KubeConfig()
    kc.loadFromClusterAndUser({ name: "c", server: "https://127.0.0.1:1", skipTLSVerify: false }, { name: "u" })
    // A canary for client-node's internals: the field must exist before we override it.
    assert.strictEqual(Reflect.get(new Watch(kc), "requestTimeoutMs"), 30_000)
    assert.strictEqual(Reflect.get(apisFromKubeConfig(kc).watch, "requestTimeoutMs"), 150_000)
    assert.strictEqual(
      Reflect.get(apisFromKubeConfig(kc, { watchTimeout: "5 minutes" }).watch, "requestTimeoutMs"),
      630_000
    )
  })
})

describe("listAll", () => {
  it.effect("follows continue tokens and keeps the first page's resourceVersion", () =>
    Effect.gen(function*() {
      const calls: Array<PageParams> = []
      const pages: Record<string, ListPage<string>> = {
        "": { items: ["a", "b"], metadata: { resourceVersion: "77", _continue: "t1" } },
        t1: { items: ["c"], metadata: { resourceVersion: "77", _continue: "t2" } },
        t2: { items: ["d"], metadata: { resourceVersion: "77" } }
      }
      const listed = yield* listAll({ verb: "list", resource: "services" }, (params) => {
        calls.push(params)
        return Promise.resolve(pages[params._continue ?? ""] ?? { items: [] })
      }, 2)
      assert.deepStrictEqual(listed, { items: ["a", "b", "c", "d"], resourceVersion: "77" })
      assert.deepStrictEqual(calls.map((c) => [c.limit, c._continue]), [[2, undefined], [2, "t1"], [2, "t2"]])
    }))

  it.effect("maps a rejected page to a typed error", () =>
    Effect.gen(function*() {
      const error = yield* listAll(
        { verb: "list", resource: "nodes" },
        () => Promise.reject(Object.assign(new TypeError("fetch failed"), { cause: { code: "ECONNREFUSED" } }))
      ).pipe(Effect.flip)
      assert.strictEqual(error._tag, "KubeError")
      assert.strictEqual(error.reason, "ECONNREFUSED")
      assert.include(error.message, "cannot list nodes")
    }))
})
