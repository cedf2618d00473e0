import { assert, describe, it } from "@effect/vitest"
import type { ConfigurationOptions, V1Lease, V1Service } from "@kubernetes/client-node"
import { ApiException, HttpMethod, RequestContext } from "@kubernetes/client-node"
import { Effect, Layer, Queue, Stream } from "effect"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { TestClock } from "effect/testing"
import type { WatchClient } from "../../src/kube/clientNodeSource.ts"
import type { KubeApis, WatchEvent } from "../../src/kube/Kube.ts"
import { FIELD_MANAGER, Kube, loadKubeConfig, REPORTING_CONTROLLER } from "../../src/kube/Kube.ts"

interface Call {
  readonly method: string
  readonly param: Record<string, unknown>
  readonly contentType: string | undefined
  readonly hasSignal: boolean
}

/** What client-node would send: the middleware chain applied to a request. */
const requestOf = async (options: ConfigurationOptions | undefined) => {
  const request = new RequestContext("https://apiserver.invalid/", HttpMethod.PATCH)
  for (const middleware of options?.middleware ?? []) await middleware.pre(request).toPromise()
  return { contentType: request.getHeaders()["Content-Type"], hasSignal: request.getSignal() !== undefined }
}

type Reply = (method: string, param: Record<string, unknown>) => Promise<unknown>

const statusBody = (code: number, reason: string, message: string) =>
  JSON.stringify({ kind: "Status", apiVersion: "v1", status: "Failure", code, reason, message })

const apiError = (code: number, reason: string, message: string) =>
  new ApiException(code, "Unknown API Status Code!", statusBody(code, reason, message), {})

const svc = (overrides: Partial<V1Service["metadata"]> = {}): V1Service => ({
  apiVersion: "v1",
  kind: "Service",
  metadata: { name: "web", namespace: "default", uid: "u-1", resourceVersion: "42", ...overrides }
})

/** Recording fakes for the client-node APIs; `reply` decides each answer. */
const fakeApis = (reply: Reply, watch: WatchClient = { watch: () => new Promise(() => {}) }) => {
  const calls: Array<Call> = []
  const handle = <A>(method: string) => async (param: object, options?: ConfigurationOptions): Promise<A> => {
    const record = param as Record<string, unknown>
    calls.push({ method, param: record, ...(await requestOf(options)) })
    return (await reply(method, record)) as A
  }
  const apis: KubeApis = {
    core: {
      listServiceForAllNamespaces: handle("listServiceForAllNamespaces"),
      listNode: handle("listNode"),
      readNamespacedService: handle("readNamespacedService"),
      patchNamespacedService: handle("patchNamespacedService"),
      patchNamespacedServiceStatus: handle("patchNamespacedServiceStatus"),
      readNamespacedSecret: handle("readNamespacedSecret"),
      createNamespacedSecret: handle("createNamespacedSecret")
    },
    discovery: { listEndpointSliceForAllNamespaces: handle("listEndpointSliceForAllNamespaces") },
    events: { createNamespacedEvent: handle("createNamespacedEvent") },
    coordination: {
      readNamespacedLease: handle("readNamespacedLease"),
      createNamespacedLease: handle("createNamespacedLease"),
      replaceNamespacedLease: handle("replaceNamespacedLease")
    },
    watch
  }
  return { apis, calls }
}

const withKube = <A, E>(reply: Reply, f: (kube: Kube["Service"], calls: ReadonlyArray<Call>) => Effect.Effect<A, E>) => {
  const { apis, calls } = fakeApis(reply)
  return Effect.gen(function*() {
    const kube = yield* Kube
    return yield* f(kube, calls)
  }).pipe(Effect.provide(Kube.layerFromApis(apis, { instance: "edge-ccm-7d9f-abcde" })))
}

describe("Kube.patchServiceMetadata", () => {
  it.effect("sends the whole finalizer list and the resourceVersion in one merge patch; null removes an annotation", () =>
    withKube(() => Promise.resolve(svc({ resourceVersion: "43" })), (kube, calls) =>
      Effect.gen(function*() {
        const updated = yield* kube.patchServiceMetadata(
          { namespace: "default", name: "web", resourceVersion: "42" },
          {
            finalizers: ["other.io/keep", "midokura.com/load-balancer-cleanup"],
            annotations: { "midokura.com/mappings": "[{\"port\":8080}]", "midokura.com/stale": null }
          }
        )
        assert.strictEqual(updated.metadata?.resourceVersion, "43")
        assert.strictEqual(calls.length, 1)
        const call = calls[0]!
        assert.strictEqual(call.method, "patchNamespacedService")
        assert.strictEqual(call.contentType, "application/merge-patch+json")
        assert.isTrue(call.hasSignal)
        assert.strictEqual(call.param["namespace"], "default")
        assert.strictEqual(call.param["name"], "web")
        assert.strictEqual(call.param["fieldManager"], FIELD_MANAGER)
        assert.strictEqual(
          JSON.stringify(call.param["body"]),
          JSON.stringify({
            metadata: {
              resourceVersion: "42",
              finalizers: ["other.io/keep", "midokura.com/load-balancer-cleanup"],
              annotations: { "midokura.com/mappings": "[{\"port\":8080}]", "midokura.com/stale": null }
            }
          })
        )
      })))

  it.effect("omits what is not being changed, and an empty list removes every finalizer", () =>
    withKube(() => Promise.resolve(svc()), (kube, calls) =>
      Effect.gen(function*() {
        yield* kube.patchServiceMetadata({ namespace: "default", name: "web", resourceVersion: "42" }, {
          finalizers: []
        })
        assert.deepStrictEqual(calls[0]!.param["body"], { metadata: { resourceVersion: "42", finalizers: [] } })
      })))

  it.effect("a stale resourceVersion is a KubeConflict", () =>
    withKube(
      () =>
        Promise.reject(apiError(
          409,
          "Conflict",
          "Operation cannot be fulfilled on services \"web\": the object has been modified; please apply your changes to the latest version and try again"
        )),
      (kube) =>
        Effect.gen(function*() {
          const error = yield* kube.patchServiceMetadata(
            { namespace: "default", name: "web", resourceVersion: "41" },
            { finalizers: [] }
          ).pipe(Effect.flip)
          assert.strictEqual(error._tag, "KubeConflict")
          assert.strictEqual(error.verb, "patch")
          assert.strictEqual(error.resource, "services")
          assert.strictEqual(error.namespace, "default")
          assert.strictEqual(error.name, "web")
          assert.include(error.message, "the object has been modified")
        })
    ))

  it.effect("a vanished Service is a KubeNotFound", () =>
    withKube(() => Promise.reject(apiError(404, "NotFound", "services \"web\" not found")), (kube) =>
      Effect.gen(function*() {
        const error = yield* kube.patchServiceMetadata(
          { namespace: "default", name: "web", resourceVersion: "41" },
          { finalizers: [] }
        ).pipe(Effect.flip)
        assert.strictEqual(error._tag, "KubeNotFound")
      })))
})

describe("Kube.applyServiceStatus", () => {
  it.effect("server-side applies status.loadBalancer and our conditions on the status subresource, forced", () =>
    withKube(() => Promise.resolve(svc()), (kube, calls) =>
      Effect.gen(function*() {
        yield* kube.applyServiceStatus({ namespace: "default", name: "web", uid: "u-1" }, {
          loadBalancer: {
            ingress: [{
              ip: "122.112.219.229",
              ipMode: "Proxy",
              ports: [{ port: 8080, protocol: "TCP" }, { port: 53, protocol: "UDP", error: "midokura.com/PortConflict" }]
            }]
          },
          conditions: [{
            type: "midokura.com/GatewayMapped",
            status: "True",
            reason: "Mapped",
            message: "all ports mapped",
            lastTransitionTime: new Date("2025-01-02T03:04:05Z")
          }]
        })
        const call = calls[0]!
        assert.strictEqual(call.method, "patchNamespacedServiceStatus")
        assert.strictEqual(call.contentType, "application/apply-patch+yaml")
        assert.strictEqual(call.param["fieldManager"], "edge-cloud-controller-manager")
        assert.strictEqual(call.param["force"], true)
        assert.deepStrictEqual(JSON.parse(JSON.stringify(call.param["body"])), {
          apiVersion: "v1",
          kind: "Service",
          metadata: { name: "web", namespace: "default", uid: "u-1" },
          status: {
            loadBalancer: {
              ingress: [{
                ip: "122.112.219.229",
                ipMode: "Proxy",
                ports: [{ port: 8080, protocol: "TCP" }, {
                  port: 53,
                  protocol: "UDP",
                  error: "midokura.com/PortConflict"
                }]
              }]
            },
            conditions: [{
              type: "midokura.com/GatewayMapped",
              status: "True",
              reason: "Mapped",
              message: "all ports mapped",
              lastTransitionTime: "2025-01-02T03:04:05.000Z"
            }]
          }
        })
      })))

  it.effect("an empty ingress list clears the published address", () =>
    withKube(() => Promise.resolve(svc()), (kube, calls) =>
      Effect.gen(function*() {
        yield* kube.applyServiceStatus({ namespace: "default", name: "web" }, { loadBalancer: { ingress: [] } })
        assert.deepStrictEqual(JSON.parse(JSON.stringify(calls[0]!.param["body"])), {
          apiVersion: "v1",
          kind: "Service",
          metadata: { name: "web", namespace: "default" },
          status: { loadBalancer: { ingress: [] } }
        })
      })))

  const invalid = (message: string, field: string) =>
    new ApiException(
      422,
      "Unknown API Status Code!",
      JSON.stringify({ kind: "Status", code: 422, reason: "Invalid", message, details: { causes: [{ field }] } }),
      {}
    )
  const notFound = apiError(404, "NotFound", "services \"web\" not found")

  /** The apply answers `applyReply`; the read that disambiguates it answers `readReply`. */
  const applyCase = (applyReply: unknown, readReply: () => Promise<unknown>, uid: string | undefined = "u-1") =>
    withKube(
      (method) => method === "patchNamespacedServiceStatus" ? Promise.reject(applyReply) : readReply(),
      (kube, calls) =>
        kube.applyServiceStatus({ namespace: "default", name: "web", uid }, { loadBalancer: {} }).pipe(
          Effect.flip,
          Effect.map((error) => ({ error, methods: calls.map((c) => c.method) }))
        )
    )

  it.effect("a Service re-created under the same name (uid immutable, 422) is KubeNotFound UidMismatch", () =>
    Effect.gen(function*() {
      const { error, methods } = yield* applyCase(
        invalid("Service \"web\" is invalid: metadata.uid: Invalid value: \"u-1\": field is immutable", "metadata.uid"),
        () => Promise.resolve(svc({ uid: "u-2" }))
      )
      assert.strictEqual(error._tag, "KubeNotFound")
      assert.strictEqual(error.reason, "UidMismatch")
      assert.strictEqual(error.resource, "services/status")
      assert.deepStrictEqual(methods, ["patchNamespacedServiceStatus", "readNamespacedService"])
    }))

  it.effect("a missing Service is KubeNotFound however the apply fails (404, 409 uid mismatch, 422 on create)", () =>
    Effect.gen(function*() {
      const replies = [
        notFound,
        apiError(409, "Conflict", "uid mismatch: the provided object specified uid u-1, and no existing object was found"),
        invalid("Service \"web\" is invalid: spec.ports: Required value", "spec.ports")
      ]
      for (const reply of replies) {
        const { error } = yield* applyCase(reply, () => Promise.reject(notFound))
        assert.strictEqual(error._tag, "KubeNotFound", `HTTP ${reply.code}`)
      }
    }))

  it.effect("any other rejection stays a KubeError naming the rejected fields", () =>
    Effect.gen(function*() {
      const { error } = yield* applyCase(
        invalid("Service \"web\" is invalid: status.loadBalancer.ingress[0].ip: Invalid value: \"x\"", "status.loadBalancer.ingress[0].ip"),
        () => Promise.resolve(svc())
      )
      assert.strictEqual(error._tag, "KubeError")
      if (error._tag === "KubeError") {
        assert.strictEqual(error.status, 422)
        assert.strictEqual(error.reason, "Invalid")
        assert.deepStrictEqual(error.fields, ["status.loadBalancer.ingress[0].ip"])
      }
      const forbidden = yield* applyCase(apiError(403, "Forbidden", "no"), () => Promise.resolve(svc()))
      assert.strictEqual(forbidden.error._tag, "KubeError")
      assert.deepStrictEqual(forbidden.methods, ["patchNamespacedServiceStatus"], "no read for errors that are not ambiguous")
    }))
})

describe("Kube.recordEvent", () => {
  it.effect("creates an events.k8s.io/v1 Event with every field the apiserver requires", () =>
    withKube(() => Promise.resolve({}), (kube, calls) =>
      Effect.gen(function*() {
        yield* TestClock.setTime(Date.parse("2025-06-07T08:09:10.123Z"))
        yield* kube.recordEvent({
          regarding: {
            kind: "Service",
            apiVersion: "v1",
            namespace: "shop",
            name: "http-nginx-service",
            uid: "u-9",
            resourceVersion: "77"
          },
          type: "Warning",
          reason: "PortConflict",
          action: "MapPort",
          note: "external port 8080/TCP is held by 192.168.77.20"
        })
        const call = calls[0]!
        assert.strictEqual(call.method, "createNamespacedEvent")
        assert.strictEqual(call.param["namespace"], "shop")
        const wire = JSON.parse(JSON.stringify(call.param["body"]))
        assert.strictEqual(wire.apiVersion, "events.k8s.io/v1")
        assert.strictEqual(wire.kind, "Event")
        assert.strictEqual(wire.metadata.namespace, "shop")
        assert.match(wire.metadata.name, /^http-nginx-service\.[0-9a-f]+$/)
        // MicroTime: RFC 3339 with exactly six fractional digits, or the apiserver rejects it.
        assert.strictEqual(wire.eventTime, "2025-06-07T08:09:10.123000Z")
        assert.strictEqual(wire.type, "Warning")
        assert.strictEqual(wire.reason, "PortConflict")
        assert.strictEqual(wire.action, "MapPort")
        assert.strictEqual(wire.note, "external port 8080/TCP is held by 192.168.77.20")
        assert.strictEqual(wire.reportingController, REPORTING_CONTROLLER)
        assert.strictEqual(wire.reportingController, "midokura.com/edge-cloud-controller-manager")
        assert.strictEqual(wire.reportingInstance, "edge-ccm-7d9f-abcde")
        assert.deepStrictEqual(wire.regarding, {
          kind: "Service",
          apiVersion: "v1",
          namespace: "shop",
          name: "http-nginx-service",
          uid: "u-9",
          resourceVersion: "77"
        })
      })))

  it.effect("two events in the same millisecond get distinct names", () =>
    withKube(() => Promise.resolve({}), (kube, calls) =>
      Effect.gen(function*() {
        const event = {
          regarding: { kind: "Service", apiVersion: "v1", namespace: "d", name: "s" },
          type: "Normal",
          reason: "EnsuredLoadBalancer",
          action: "Ensure",
          note: "ok"
        } as const
        yield* kube.recordEvent(event)
        yield* kube.recordEvent(event)
        const names = calls.map((c) => JSON.parse(JSON.stringify(c.param["body"])).metadata.name)
        assert.notStrictEqual(names[0], names[1])
      })))

  it.effect("cuts an oversized note to the apiserver's 1 kB limit", () =>
    withKube(() => Promise.resolve({}), (kube, calls) =>
      Effect.gen(function*() {
        yield* kube.recordEvent({
          regarding: { kind: "Service", apiVersion: "v1", namespace: "d", name: "s" },
          type: "Normal",
          reason: "R",
          action: "A",
          note: "é".repeat(2000)
        })
        const note: string = JSON.parse(JSON.stringify(calls[0]!.param["body"])).note
        assert.isAtMost(Buffer.byteLength(note, "utf8"), 1024)
        assert.isTrue(note.endsWith("..."))
      })))

  it.effect("a refused event is returned as a KubeError, never thrown", () =>
    withKube(
      () =>
        Promise.reject(apiError(
          403,
          "Forbidden",
          "events.events.k8s.io is forbidden: User \"system:serviceaccount:kube-system:edge-ccm\" cannot create resource \"events\" in API group \"events.k8s.io\" in the namespace \"shop\""
        )),
      (kube) =>
        Effect.gen(function*() {
          const error = yield* kube.recordEvent({
            regarding: { kind: "Service", apiVersion: "v1", namespace: "shop", name: "s" },
            type: "Normal",
            reason: "R",
            action: "A",
            note: "n"
          }).pipe(Effect.flip)
          assert.strictEqual(error._tag, "KubeError")
          assert.strictEqual(error.status, 403)
          assert.strictEqual(error.verb, "create")
          assert.strictEqual(error.resource, "events.events.k8s.io")
          assert.include(error.message, "cannot create resource \"events\" in API group \"events.k8s.io\"")
        })
    ))
})

describe("error mapping", () => {
  const cases = [
    { code: 403, reason: "Forbidden", tag: "KubeError" },
    { code: 409, reason: "Conflict", tag: "KubeError" },
    { code: 410, reason: "Gone", tag: "KubeError" },
    { code: 422, reason: "Invalid", tag: "KubeError" },
    { code: 500, reason: "InternalError", tag: "KubeError" },
    { code: 503, reason: "ServiceUnavailable", tag: "KubeError" }
  ] as const

  it.effect.each(cases)("getService: HTTP $code → $tag with verb, resource, status and the apiserver's words", ({ code, reason, tag }) =>
    withKube(() => Promise.reject(apiError(code, reason, `apiserver says ${code}`)), (kube) =>
      Effect.gen(function*() {
        const error = yield* kube.getService("default", "web").pipe(Effect.flip)
        assert.strictEqual(error._tag, tag)
        assert.strictEqual(error.verb, "get")
        assert.strictEqual(error.resource, "services")
        assert.strictEqual(error.namespace, "default")
        assert.strictEqual(error.name, "web")
        assert.strictEqual(error.status, code)
        assert.strictEqual(error.reason, reason)
        assert.include(error.message, "cannot get services default/web")
        assert.include(error.message, `apiserver says ${code}`)
        assert.strictEqual(error.isGone, code === 410)
      })))

  it.effect("getService: 404 means absent, not an error", () =>
    withKube(() => Promise.reject(apiError(404, "NotFound", "services \"web\" not found")), (kube) =>
      Effect.gen(function*() {
        assert.isUndefined(yield* kube.getService("default", "web"))
      })))

  it.effect("a 403 names the verb and resource RBAC denied", () =>
    withKube(
      () =>
        Promise.reject(apiError(
          403,
          "Forbidden",
          "services \"web\" is forbidden: User \"system:serviceaccount:lan:nobody\" cannot patch resource \"services/status\" in API group \"\" in the namespace \"default\""
        )),
      (kube) =>
        Effect.gen(function*() {
          const error = yield* kube.applyServiceStatus({ namespace: "default", name: "web" }, { loadBalancer: {} })
            .pipe(Effect.flip)
          assert.strictEqual(error._tag, "KubeError")
          if (error._tag === "KubeError") {
            assert.strictEqual(error.status, 403)
            assert.strictEqual(error.reason, "Forbidden")
          }
          assert.strictEqual(error.verb, "patch")
          assert.strictEqual(error.resource, "services/status")
          assert.include(error.message, "cannot patch resource \"services/status\"")
        })
    ))

  it.effect("401 without a body, and a refused connection, still say what failed", () =>
    Effect.gen(function*() {
      const unauthorized = yield* withKube(
        () => Promise.reject(new ApiException(401, "Unauthorized", undefined, {})),
        (kube) => kube.getService("default", "web").pipe(Effect.flip)
      )
      assert.strictEqual(unauthorized._tag, "KubeError")
      assert.strictEqual(unauthorized.status, 401)
      assert.strictEqual(unauthorized.reason, "Unauthorized")

      const refused = yield* withKube(
        () =>
          Promise.reject(
            new TypeError("fetch failed", { cause: Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" }) })
          ),
        (kube) => kube.getService("default", "web").pipe(Effect.flip)
      )
      assert.strictEqual(refused._tag, "KubeError")
      assert.isUndefined(refused.status)
      assert.strictEqual(refused.reason, "ECONNREFUSED")
      assert.include(refused.message, "cannot get services default/web: fetch failed (connect ECONNREFUSED)")
    }))
})

describe("Kube leases", () => {
  const lease: V1Lease & { metadata: { namespace: string; name: string; resourceVersion: string } } = {
    metadata: { namespace: "kube-system", name: "edge-ccm", resourceVersion: "9" },
    spec: { holderIdentity: "a" }
  }

  it.effect("get maps 404 to undefined; replace maps a stale resourceVersion to KubeConflict", () =>
    Effect.gen(function*() {
      const missing = yield* withKube(
        () => Promise.reject(apiError(404, "NotFound", "leases.coordination.k8s.io \"edge-ccm\" not found")),
        (kube) => kube.getLease("kube-system", "edge-ccm")
      )
      assert.isUndefined(missing)
      const conflict = yield* withKube(
        () => Promise.reject(apiError(409, "Conflict", "the object has been modified")),
        (kube) => kube.replaceLease(lease).pipe(Effect.flip)
      )
      assert.strictEqual(conflict._tag, "KubeConflict")
      assert.strictEqual(conflict.verb, "update")
      assert.strictEqual(conflict.resource, "leases.coordination.k8s.io")
      const exists = yield* withKube(
        () => Promise.reject(apiError(409, "AlreadyExists", "leases \"edge-ccm\" already exists")),
        (kube) => kube.createLease(lease).pipe(Effect.flip)
      )
      assert.strictEqual(exists._tag, "KubeConflict")
      assert.strictEqual(exists.reason, "AlreadyExists")
    }))
})

describe("Kube.watchServices", () => {
  it.effect("lists through the typed API, then watches /api/v1/services from the list's resourceVersion", () =>
    Effect.gen(function*() {
      const connections = yield* Queue.unbounded<{
        readonly path: string
        readonly resourceVersion: unknown
        readonly emit: (phase: string, object: unknown) => void
      }>()
      const watch: WatchClient = {
        watch: (path, params, callback) => {
          Queue.offerUnsafe(connections, { path, resourceVersion: params["resourceVersion"], emit: callback })
          return new Promise(() => {})
        }
      }
      const { apis, calls } = fakeApis(
        (method) =>
          Promise.resolve(
            method === "listServiceForAllNamespaces"
              ? { items: [svc()], metadata: { resourceVersion: "100" } }
              : {}
          ),
        watch
      )
      const kube = yield* Effect.provide(Kube, Kube.layerFromApis(apis, { instance: "i" }))
      const out = yield* Queue.unbounded<WatchEvent<V1Service>>()
      yield* kube.watchServices.pipe(Stream.runForEach((event) => Queue.offer(out, event)), Effect.forkScoped)
      const synced = yield* Queue.take(out)
      assert.strictEqual(synced._tag, "Synced")
      assert.strictEqual(synced._tag === "Synced" ? synced.items[0]?.metadata?.name : undefined, "web")
      assert.strictEqual(calls[0]!.method, "listServiceForAllNamespaces")
      assert.strictEqual(calls[0]!.param["limit"], 500)
      const connection = yield* Queue.take(connections)
      assert.strictEqual(connection.path, "/api/v1/services")
      assert.strictEqual(connection.resourceVersion, "100")
      connection.emit("MODIFIED", {
        apiVersion: "v1",
        kind: "Service",
        metadata: { name: "web", namespace: "default", resourceVersion: "101" }
      })
      const upserted = yield* Queue.take(out)
      assert.strictEqual(upserted._tag, "Upserted")
    }).pipe(Effect.scoped))
})

describe("loading a kubeconfig", () => {
  const tempKubeconfig = (text: string) =>
    Effect.acquireRelease(
      Effect.sync(() => {
        const dir = fs.mkdtempSync(path.join(os.tmpdir(), "kube-test-"))
        const file = path.join(dir, "config")
        fs.writeFileSync(file, text)
        return { dir, file }
      }),
      ({ dir }) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
    )

  it.effect("reads the given file", () =>
    Effect.gen(function*() {
      const { file } = yield* tempKubeconfig([
        "apiVersion: v1",
        "kind: Config",
        "clusters:",
        "- name: lab",
        "  cluster:",
        "    server: https://192.0.2.10:6443",
        "users:",
        "- name: admin",
        "  user:",
        "    token: abc",
        "contexts:",
        "- name: lab",
        "  context:",
        "    cluster: lab",
        "    user: admin",
        "current-context: lab",
        ""
      ].join("\n"))
      const kc = yield* loadKubeConfig(file)
      assert.strictEqual(kc.getCurrentCluster()?.server, "https://192.0.2.10:6443")
    }).pipe(Effect.scoped))

  it.effect("a missing file is a KubeError that names it", () =>
    Effect.gen(function*() {
      const error = yield* loadKubeConfig("/nonexistent/kubeconfig").pipe(Effect.flip)
      assert.strictEqual(error._tag, "KubeError")
      assert.strictEqual(error.verb, "load")
      assert.strictEqual(error.resource, "kubeconfig")
      assert.include(error.message, "/nonexistent/kubeconfig")
    }))

  it.effect("a file without a current cluster is a KubeError", () =>
    Effect.gen(function*() {
      const { file } = yield* tempKubeconfig("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n")
      const error = yield* loadKubeConfig(file).pipe(Effect.flip)
      assert.include(error.message, "names no current cluster")
    }).pipe(Effect.scoped))

  it.effect("Kube.layer fails to build with that error", () =>
    Effect.gen(function*() {
      const error = yield* Layer.build(Kube.layer({ kubeconfig: "/nonexistent/kubeconfig", instance: "x" })).pipe(
        Effect.scoped,
        Effect.flip
      )
      assert.strictEqual(error._tag, "KubeError")
      assert.strictEqual(error.resource, "kubeconfig")
    }))
})
