import { assert, describe, it } from "@effect/vitest"
import { Effect, Fiber, Queue, Stream } from "effect"
import { TestClock } from "effect/testing"
import type { Lease, Service, WatchEvent } from "../../src/kube/Kube.ts"
import { FIELD_MANAGER, Kube, REPORTING_CONTROLLER } from "../../src/kube/Kube.ts"
import {
  type Answer,
  fakeApiserver,
  makeWatchConnection,
  type RecordedRequest,
  statusBody
} from "../support/FakeApiserver.ts"

const svc = (overrides: Partial<NonNullable<Service["metadata"]>> = {}): Service & { apiVersion: string; kind: string } => ({
  apiVersion: "v1",
  kind: "Service",
  metadata: { name: "web", namespace: "default", uid: "u-1", resourceVersion: "42", ...overrides }
})

const ok = (body: unknown): Answer => ({ status: 200, body })
const refuse = (code: number, reason: string, message: string, causes?: ReadonlyArray<{ field: string }>): Answer => ({
  status: code,
  body: statusBody(code, reason, message, causes)
})

/** A Kube over the fake apiserver; `reply` answers each request, `requests` is what was sent. */
const withKube = <A, E>(
  reply: (request: RecordedRequest) => Answer,
  f: (kube: Kube["Service"], requests: ReadonlyArray<RecordedRequest>) => Effect.Effect<A, E>
) => {
  const apiserver = fakeApiserver(reply)
  return Effect.gen(function*() {
    const kube = yield* Kube
    return yield* f(kube, apiserver.requests)
  }).pipe(
    Effect.provide(Kube.layerHttp({ instance: "edge-ccm-7d9f-abcde" })),
    Effect.provide(apiserver.layer)
  )
}

describe("Kube.patchServiceMetadata", () => {
  it.effect("sends the whole finalizer list and the resourceVersion in one merge patch; null removes an annotation", () =>
    withKube(() => ok(svc({ resourceVersion: "43" })), (kube, calls) =>
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
        assert.strictEqual(call.method, "PATCH")
        assert.strictEqual(call.path, "/api/v1/namespaces/default/services/web")
        assert.strictEqual(call.contentType, "application/merge-patch+json")
        assert.strictEqual(call.authorization, "Bearer test-token")
        assert.strictEqual(call.query["fieldManager"], FIELD_MANAGER)
        assert.strictEqual(
          JSON.stringify(call.body),
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
    withKube(() => ok(svc()), (kube, calls) =>
      Effect.gen(function*() {
        yield* kube.patchServiceMetadata({ namespace: "default", name: "web", resourceVersion: "42" }, {
          finalizers: []
        })
        assert.deepStrictEqual(calls[0]!.body, { metadata: { resourceVersion: "42", finalizers: [] } })
      })))

  it.effect("a stale resourceVersion is a KubeConflict", () =>
    withKube(
      () =>
        refuse(
          409,
          "Conflict",
          "Operation cannot be fulfilled on services \"web\": the object has been modified; please apply your changes to the latest version and try again"
        ),
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
    withKube(() => refuse(404, "NotFound", "services \"web\" not found"), (kube) =>
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
    withKube(() => ok(svc()), (kube, calls) =>
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
            lastTransitionTime: "2025-01-02T03:04:05Z"
          }]
        })
        const call = calls[0]!
        assert.strictEqual(call.method, "PATCH")
        assert.strictEqual(call.path, "/api/v1/namespaces/default/services/web/status")
        assert.strictEqual(call.contentType, "application/apply-patch+yaml")
        assert.strictEqual(call.query["fieldManager"], "edge-cloud-controller-manager")
        assert.strictEqual(call.query["force"], "true")
        assert.deepStrictEqual(call.body, {
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
              lastTransitionTime: "2025-01-02T03:04:05Z"
            }]
          }
        })
      })))

  it.effect("an empty ingress list clears the published address", () =>
    withKube(() => ok(svc()), (kube, calls) =>
      Effect.gen(function*() {
        yield* kube.applyServiceStatus({ namespace: "default", name: "web" }, { loadBalancer: { ingress: [] } })
        assert.deepStrictEqual(calls[0]!.body, {
          apiVersion: "v1",
          kind: "Service",
          metadata: { name: "web", namespace: "default" },
          status: { loadBalancer: { ingress: [] } }
        })
      })))

  const invalid = (message: string, field: string) => refuse(422, "Invalid", message, [{ field }])
  const notFound = refuse(404, "NotFound", "services \"web\" not found")

  /** The apply answers `applyReply`; the read that disambiguates it answers `readReply`. */
  const applyCase = (applyReply: Answer, readReply: Answer, uid: string | undefined = "u-1") =>
    withKube(
      (request) => request.method === "PATCH" ? applyReply : readReply,
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
        ok(svc({ uid: "u-2" }))
      )
      assert.strictEqual(error._tag, "KubeNotFound")
      assert.strictEqual(error.reason, "UidMismatch")
      assert.strictEqual(error.resource, "services/status")
      assert.deepStrictEqual(methods, ["PATCH", "GET"])
    }))

  it.effect("a missing Service is KubeNotFound however the apply fails (404, 409 uid mismatch, 422 on create)", () =>
    Effect.gen(function*() {
      const replies = [
        notFound,
        refuse(409, "Conflict", "uid mismatch: the provided object specified uid u-1, and no existing object was found"),
        invalid("Service \"web\" is invalid: spec.ports: Required value", "spec.ports")
      ]
      for (const reply of replies) {
        const { error } = yield* applyCase(reply, notFound)
        assert.strictEqual(error._tag, "KubeNotFound", `HTTP ${"status" in reply ? reply.status : "?"}`)
      }
    }))

  it.effect("any other rejection stays a KubeError naming the rejected fields", () =>
    Effect.gen(function*() {
      const { error } = yield* applyCase(
        invalid("Service \"web\" is invalid: status.loadBalancer.ingress[0].ip: Invalid value: \"x\"", "status.loadBalancer.ingress[0].ip"),
        ok(svc())
      )
      assert.strictEqual(error._tag, "KubeError")
      if (error._tag === "KubeError") {
        assert.strictEqual(error.status, 422)
        assert.strictEqual(error.reason, "Invalid")
        assert.deepStrictEqual(error.fields, ["status.loadBalancer.ingress[0].ip"])
      }
      const forbidden = yield* applyCase(refuse(403, "Forbidden", "no"), ok(svc()))
      assert.strictEqual(forbidden.error._tag, "KubeError")
      assert.deepStrictEqual(forbidden.methods, ["PATCH"], "no read for errors that are not ambiguous")
    }))
})

describe("Kube.recordEvent", () => {
  it.effect("creates an events.k8s.io/v1 Event with every field the apiserver requires", () =>
    withKube(() => ok({}), (kube, calls) =>
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
        assert.strictEqual(call.method, "POST")
        assert.strictEqual(call.path, "/apis/events.k8s.io/v1/namespaces/shop/events")
        const wire = call.body as Record<string, any>
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
    withKube(() => ok({}), (kube, calls) =>
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
        const names = calls.map((c) => (c.body as { metadata: { name: string } }).metadata.name)
        assert.notStrictEqual(names[0], names[1])
      })))

  it.effect("cuts an oversized note to the apiserver's 1 kB limit", () =>
    withKube(() => ok({}), (kube, calls) =>
      Effect.gen(function*() {
        yield* kube.recordEvent({
          regarding: { kind: "Service", apiVersion: "v1", namespace: "d", name: "s" },
          type: "Normal",
          reason: "R",
          action: "A",
          note: "é".repeat(2000)
        })
        const note: string = (calls[0]!.body as { note: string }).note
        assert.isAtMost(Buffer.byteLength(note, "utf8"), 1024)
        assert.isTrue(note.endsWith("..."))
      })))

  it.effect("a refused event is returned as a KubeError, never thrown", () =>
    withKube(
      () =>
        refuse(
          403,
          "Forbidden",
          "events.events.k8s.io is forbidden: User \"system:serviceaccount:kube-system:edge-ccm\" cannot create resource \"events\" in API group \"events.k8s.io\" in the namespace \"shop\""
        ),
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
    withKube(() => refuse(code, reason, `apiserver says ${code}`), (kube) =>
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
    withKube(() => refuse(404, "NotFound", "services \"web\" not found"), (kube) =>
      Effect.gen(function*() {
        assert.isUndefined(yield* kube.getService("default", "web"))
      })))

  it.effect("a 403 names the verb and resource RBAC denied", () =>
    withKube(
      () =>
        refuse(
          403,
          "Forbidden",
          "services \"web\" is forbidden: User \"system:serviceaccount:lan:nobody\" cannot patch resource \"services/status\" in API group \"\" in the namespace \"default\""
        ),
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
        () => ({ status: 401 }),
        (kube) => kube.getService("default", "web").pipe(Effect.flip)
      )
      assert.strictEqual(unauthorized._tag, "KubeError")
      assert.strictEqual(unauthorized.status, 401)
      assert.strictEqual(unauthorized.reason, "Unauthorized")

      const refused = yield* withKube(
        () => ({ refused: "ECONNREFUSED" }),
        (kube) => kube.getService("default", "web").pipe(Effect.flip)
      )
      assert.strictEqual(refused._tag, "KubeError")
      assert.isUndefined(refused.status)
      assert.strictEqual(refused.reason, "ECONNREFUSED")
      assert.include(refused.message, "cannot get services default/web: connect ECONNREFUSED apiserver.test:6443")
    }))
})

describe("Kube leases", () => {
  const lease: Lease & { metadata: { namespace: string; name: string; resourceVersion: string } } = {
    metadata: { namespace: "kube-system", name: "edge-ccm", resourceVersion: "9" },
    spec: { holderIdentity: "a" }
  }

  it.effect("get maps 404 to undefined; replace maps a stale resourceVersion to KubeConflict", () =>
    Effect.gen(function*() {
      const missing = yield* withKube(
        () => refuse(404, "NotFound", "leases.coordination.k8s.io \"edge-ccm\" not found"),
        (kube) => kube.getLease("kube-system", "edge-ccm")
      )
      assert.isUndefined(missing)
      const conflict = yield* withKube(
        () => refuse(409, "Conflict", "the object has been modified"),
        (kube) => kube.replaceLease(lease).pipe(Effect.flip)
      )
      assert.strictEqual(conflict._tag, "KubeConflict")
      assert.strictEqual(conflict.verb, "update")
      assert.strictEqual(conflict.resource, "leases.coordination.k8s.io")
      const exists = yield* withKube(
        () => refuse(409, "AlreadyExists", "leases \"edge-ccm\" already exists"),
        (kube) => kube.createLease(lease).pipe(Effect.flip)
      )
      assert.strictEqual(exists._tag, "KubeConflict")
      assert.strictEqual(exists.reason, "AlreadyExists")
    }))
})

describe("Kube.watchServices", () => {
  it.effect("keeps a bystander Service as its identity and type alone, and takes it whole once it is one no more", () =>
    Effect.gen(function*() {
      const connection = makeWatchConnection()
      const clusterIp = {
        ...svc({ name: "db", labels: { app: "db" }, annotations: { "example.com/owner": "team-a" }, finalizers: ["x/y"] }),
        spec: { type: "ClusterIP", clusterIP: "10.96.0.7", selector: { app: "db" }, ports: [{ name: "pg", port: 5432 }] }
      }
      const apiserver = fakeApiserver((request) =>
        request.query["watch"] === "true"
          ? { status: 200, watch: connection }
          : ok({ metadata: { resourceVersion: "100" }, items: [clusterIp] })
      )
      const kube = yield* Effect.provide(
        Kube,
        Kube.layerHttp({ instance: "i", bystanderService: (service) => service.spec?.type !== "LoadBalancer" })
      ).pipe(Effect.provide(apiserver.layer))
      const out = yield* Queue.unbounded<WatchEvent<Service>>()
      yield* kube.watchServices.pipe(Stream.runForEach((event) => Queue.offer(out, event)), Effect.forkScoped)
      const synced = yield* Queue.take(out)
      assert.deepStrictEqual(synced._tag === "Synced" ? synced.items : [], [
        { metadata: { name: "db", namespace: "default", uid: "u-1", resourceVersion: "42" }, spec: { type: "ClusterIP" } }
      ])
      connection.send("MODIFIED", { ...clusterIp, metadata: { ...clusterIp.metadata, resourceVersion: "43" }, spec: { ...clusterIp.spec, type: "LoadBalancer" } })
      const upserted = yield* Queue.take(out)
      assert.deepStrictEqual(upserted._tag === "Upserted" ? upserted.object.spec : undefined, {
        type: "LoadBalancer",
        ports: [{ name: "pg", port: 5432 }]
      })
    }))

  it.effect("lists page by page, then watches /api/v1/services from the list's resourceVersion, keeping only what is read", () =>
    Effect.gen(function*() {
      const connection = makeWatchConnection()
      const fat = {
        ...svc(),
        metadata: {
          ...svc().metadata,
          managedFields: [{ manager: "kubectl", operation: "Apply", fieldsV1: { "f:spec": {} } }],
          annotations: {
            "kubectl.kubernetes.io/last-applied-configuration": "{...}",
            "midokura.com/load-balancer-type": "upnp-igd"
          }
        },
        spec: { type: "LoadBalancer", clusterIP: "10.96.0.9", selector: { app: "web" }, ports: [{ port: 80, nodePort: 30080 }] }
      }
      const apiserver = fakeApiserver((request) =>
        request.query["watch"] === "true"
          ? { status: 200, watch: connection }
          : request.query["continue"] === undefined
          ? ok({ metadata: { resourceVersion: "100", continue: "page-2" }, items: [fat] })
          : ok({ metadata: { resourceVersion: "100" }, items: [svc({ name: "second" })] })
      )
      const kube = yield* Effect.provide(
        Kube,
        Kube.layerHttp({ instance: "i", serviceAnnotationPrefixes: ["midokura.com/"] })
      ).pipe(Effect.provide(apiserver.layer))
      const out = yield* Queue.unbounded<WatchEvent<Service>>()
      yield* kube.watchServices.pipe(Stream.runForEach((event) => Queue.offer(out, event)), Effect.forkScoped)
      const synced = yield* Queue.take(out)
      assert.strictEqual(synced._tag, "Synced")
      const items = synced._tag === "Synced" ? synced.items : []
      assert.deepStrictEqual(items.map((item) => item.metadata?.name), ["web", "second"])
      // What the cache keeps of a Service: no managedFields, no foreign annotations, no selector.
      assert.deepStrictEqual(items[0], {
        metadata: {
          name: "web",
          namespace: "default",
          uid: "u-1",
          resourceVersion: "42",
          annotations: { "midokura.com/load-balancer-type": "upnp-igd" }
        },
        spec: { type: "LoadBalancer", ports: [{ port: 80, nodePort: 30080 }] }
      })
      while (apiserver.requests.length < 3) yield* Effect.yieldNow
      const [first, second, watch] = apiserver.requests
      assert.strictEqual(first!.path, "/api/v1/services")
      assert.strictEqual(first!.query["limit"], "500")
      assert.strictEqual(second!.query["continue"], "page-2")
      assert.strictEqual(watch!.path, "/api/v1/services")
      assert.strictEqual(watch!.query["resourceVersion"], "100")
      assert.strictEqual(watch!.query["allowWatchBookmarks"], "true")
      connection.send("MODIFIED", { apiVersion: "v1", kind: "Service", metadata: { name: "web", namespace: "default", resourceVersion: "101" } })
      const upserted = yield* Queue.take(out)
      assert.strictEqual(upserted._tag, "Upserted")
      assert.strictEqual(upserted._tag === "Upserted" ? upserted.object.metadata?.resourceVersion : undefined, "101")
    }).pipe(Effect.scoped))

  it.effect("interrupting the watch lets go of the connection", () =>
    Effect.gen(function*() {
      const connection = makeWatchConnection()
      const apiserver = fakeApiserver((request) =>
        request.query["watch"] === "true"
          ? { status: 200, watch: connection }
          : ok({ metadata: { resourceVersion: "1" }, items: [] })
      )
      const kube = yield* Effect.provide(Kube, Kube.layerHttp({ instance: "i" })).pipe(Effect.provide(apiserver.layer))
      const fiber = yield* kube.watchServices.pipe(Stream.runDrain, Effect.forkChild)
      while (apiserver.requests.length < 2) yield* Effect.yieldNow
      yield* TestClock.adjust("1 second")
      yield* Fiber.interrupt(fiber)
      yield* Effect.promise(() => connection.cancelled)
    }))
})
