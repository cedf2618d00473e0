/**
 * kube/ against the lab's real kube-apiserver: watches, the finalizer/annotation patch, the
 * status apply beside another field manager, Events, and what an RBAC denial looks like.
 * Runs inside the lab's node namespace through `npm run test:e2e -- test/e2e/kube.test.ts`.
 */
import { assert, describe, it } from "@effect/vitest"
import { Deferred, Duration, Effect, Fiber, Layer, Metric, Queue, Result, Schedule, Stream, SubscriptionRef } from "effect"
import { makeSource } from "../../src/kube/httpSource.ts"
import type { KubeOptions, Node, Service, WatchEvent } from "../../src/kube/Kube.ts"
import { Kube, KubeConflict, watchRestarts } from "../../src/kube/Kube.ts"
import { KubeHttp } from "../../src/kube/KubeHttp.ts"
import type { ObjectMeta } from "../../src/kube/objects.ts"
import { listWatch } from "../../src/kube/listWatch.ts"
import { LeaseStore, make as makeLeaderElection } from "../../src/runtime/LeaderElection.ts"
import * as lab from "./support/lab.ts"

const FINALIZER = "midokura.com/load-balancer-cleanup"
const NAMESPACE = "default"

/** The lab's kubeconfig (the admin's, or one for `token`). */
const kubeconfigOf = (token?: string) => token === undefined ? lab.loadLab().kubeconfig : lab.kubeconfigForToken(token)

const kubeLayer = (options: { readonly token?: string; readonly watch?: KubeOptions["watch"] } = {}) =>
  Layer.unwrap(Effect.sync(() =>
    Kube.layer({
      kubeconfig: kubeconfigOf(options.token),
      instance: "kube-e2e",
      ...(options.watch !== undefined ? { watch: options.watch } : {})
    })
  ))

/** Any object, as far as a watch of it needs (Events here). */
interface Watched {
  readonly metadata?: ObjectMeta | undefined
}

const kubectl = (args: ReadonlyArray<string>, input?: string) =>
  Effect.promise(() => lab.kubectl(args, input === undefined ? {} : { input }))

const kubectlOk = (args: ReadonlyArray<string>, input?: string) =>
  kubectl(args, input).pipe(
    Effect.flatMap((r) =>
      r.code === 0 ? Effect.succeed(r.stdout) : Effect.die(new Error(`kubectl ${args.join(" ")}: ${r.stderr}`))
    )
  )

const kubectlJson = <T>(args: ReadonlyArray<string>) =>
  kubectlOk([...args, "-o", "json"]).pipe(Effect.map((text): T => JSON.parse(text)))

/** A LoadBalancer Service, deleted (finalizers cleared first) when the scope closes. */
const withService = (name: string) =>
  Effect.acquireRelease(
    kubectlOk(["create", "-f", "-"], JSON.stringify({
      apiVersion: "v1",
      kind: "Service",
      metadata: { name, namespace: NAMESPACE, annotations: { "midokura.com/load-balancer-type": "upnp-igd" } },
      spec: { type: "LoadBalancer", selector: { app: name }, ports: [{ name: "http", port: 8080, targetPort: 80 }] }
    })),
    () =>
      kubectl(["patch", "service", name, "-n", NAMESPACE, "--type=merge", "-p", "{\"metadata\":{\"finalizers\":null}}"])
        .pipe(Effect.andThen(kubectl(["delete", "service", name, "-n", NAMESPACE, "--ignore-not-found"])))
  )

/** Takes events until one matches, within a bound. */
const takeUntil = <T>(
  queue: Queue.Queue<WatchEvent<T>>,
  predicate: (event: WatchEvent<T>) => boolean,
  description: string
) =>
  Queue.take(queue).pipe(
    Effect.repeat({ until: predicate }),
    Effect.timeoutOrElse({
      duration: "15 seconds",
      orElse: () => Effect.die(new Error(`timed out waiting for ${description}`))
    })
  )

const named = (name: string) => (object: Service) => object.metadata?.name === name

const restarts = (resource: string, reason: string) =>
  Metric.value(Metric.withAttributes(watchRestarts, { resource, reason })).pipe(Effect.map((s) => s.count))

/** Polls `effect` until `predicate` holds, within a bound. */
const eventually = <A>(effect: Effect.Effect<A>, predicate: (a: A) => boolean, description: string) =>
  effect.pipe(
    Effect.repeat({ until: predicate, schedule: Schedule.spaced("100 millis") }),
    Effect.timeoutOrElse({
      duration: "20 seconds",
      orElse: () => Effect.die(new Error(`timed out waiting for ${description}`))
    })
  )

describe("Kube on the real apiserver", () => {
  it.live("watchServices: Synced first, then Upserted when a Service is created and Deleted when it goes", () =>
    Effect.gen(function*() {
      const kube = yield* Kube
      const name = lab.uniqueName("kube-watch")
      const events = yield* Queue.unbounded<WatchEvent<Service>>()
      yield* kube.watchServices.pipe(Stream.runForEach((e) => Queue.offer(events, e)), Effect.forkScoped)
      const first = yield* Queue.take(events).pipe(Effect.timeout("15 seconds"))
      assert.strictEqual(first._tag, "Synced")
      if (first._tag === "Synced") assert.isFalse(first.items.some(named(name)))

      yield* kubectlOk(["create", "-f", "-"], JSON.stringify({
        apiVersion: "v1",
        kind: "Service",
        metadata: { name, namespace: NAMESPACE },
        spec: { type: "LoadBalancer", ports: [{ port: 8080, targetPort: 80 }] }
      }))
      const upserted = yield* takeUntil(
        events,
        (e) => e._tag === "Upserted" && named(name)(e.object),
        `Upserted ${name}`
      )
      if (upserted._tag === "Upserted") {
        assert.strictEqual(upserted.object.spec?.type, "LoadBalancer")
        // Timestamps stay the apiserver's RFC 3339 text; fields nobody reads are not kept.
        assert.match(String(upserted.object.metadata?.creationTimestamp), /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/)
        assert.notProperty(upserted.object.metadata ?? {}, "managedFields")
        assert.notProperty(upserted.object.spec ?? {}, "clusterIP")
        assert.isAbove(upserted.object.spec?.ports?.[0]?.nodePort ?? 0, 29999)
      }
      yield* kubectlOk(["delete", "service", name, "-n", NAMESPACE])
      const deleted = yield* takeUntil(events, (e) => e._tag === "Deleted" && named(name)(e.object), `Deleted ${name}`)
      assert.strictEqual(deleted._tag, "Deleted")
    }).pipe(Effect.provide(kubeLayer()), Effect.scoped))

  it.live("a watch the apiserver ends (timeoutSeconds) resumes from the last resourceVersion without relisting", () =>
    Effect.gen(function*() {
      const kube = yield* Kube
      const closedBefore = yield* restarts("services", "closed")
      const failedBefore = (yield* restarts("services", "watch_error")) + (yield* restarts("services", "expired"))
      const events = yield* Queue.unbounded<WatchEvent<Service>>()
      yield* kube.watchServices.pipe(Stream.runForEach((e) => Queue.offer(events, e)), Effect.forkScoped)
      assert.strictEqual((yield* Queue.take(events).pipe(Effect.timeout("15 seconds")))._tag, "Synced")
      // The server closes each watch after 2–4 s; wait for two such closes.
      yield* eventually(restarts("services", "closed"), (n) => n >= closedBefore + 2, "two server-side closes")
      const name = lab.uniqueName("kube-resume")
      yield* withService(name)
      const next = yield* takeUntil(events, (e) => e._tag !== "Upserted" || named(name)(e.object), `Upserted ${name}`)
      assert.strictEqual(next._tag, "Upserted", "no Synced in between: the watch resumed rather than relisted")
      const failedAfter = (yield* restarts("services", "watch_error")) + (yield* restarts("services", "expired"))
      assert.strictEqual(failedAfter, failedBefore)
    }).pipe(Effect.provide(kubeLayer({ watch: { watchTimeout: Duration.seconds(2) } })), Effect.scoped))

  it.live("a resume from a compacted resourceVersion gets 410 from the apiserver, and the stream relists", () =>
    Effect.gen(function*() {
      // Events bypass the apiserver's watch cache, so a resume is served by etcd itself,
      // which answers 410 once its history is compacted.
      const http = yield* Effect.provide(KubeHttp, KubeHttp.layer({ kubeconfig: kubeconfigOf() }))
      const source = makeSource<Watched>(http, {
        resource: "e2e-events",
        path: "/apis/events.k8s.io/v1/events",
        kind: {
          decode: (raw) => Result.succeed(raw as Watched),
          decodeList: (raw) => Result.succeed(raw as { readonly items: ReadonlyArray<Watched> })
        },
        tuning: { watchTimeout: Duration.seconds(2) }
      })
      const expiredBefore = yield* restarts("e2e-events", "expired")
      const out = yield* Queue.unbounded<WatchEvent<Watched>>()
      yield* listWatch(source).pipe(Stream.runForEach((e) => Queue.offer(out, e)), Effect.forkScoped)
      assert.strictEqual((yield* Queue.take(out).pipe(Effect.timeout("15 seconds")))._tag, "Synced")
      // Move etcd two revisions past our resourceVersion without touching events (a watch
      // from R starts at R+1, which must be compacted too), then drop the history.
      for (const suffix of ["a", "b"]) {
        const name = `${lab.uniqueName("kube-compact")}-${suffix}`
        yield* Effect.acquireRelease(
          kubectlOk(["create", "configmap", name, "-n", NAMESPACE, "--from-literal=a=b"]),
          () => kubectl(["delete", "configmap", name, "-n", NAMESPACE, "--ignore-not-found"])
        )
      }
      yield* Effect.promise(() => lab.compactEtcd())
      const next = yield* takeUntil(out, (e) => e._tag === "Synced", "a second Synced after the relist")
      assert.strictEqual(next._tag, "Synced")
      assert.strictEqual((yield* restarts("e2e-events", "expired")) - expiredBefore, 1)
    }).pipe(Effect.scoped))

  it.live("an idle watch outlives 30 s of silence (the apiserver may stay silent for minutes between bookmarks)", () =>
    Effect.gen(function*() {
      const kube = yield* Kube
      const errorsBefore = yield* restarts("nodes", "watch_error")
      const events = yield* Queue.unbounded<WatchEvent<Node>>()
      yield* kube.watchNodes.pipe(Stream.runForEach((e) => Queue.offer(events, e)), Effect.forkScoped)
      assert.strictEqual((yield* Queue.take(events).pipe(Effect.timeout("15 seconds")))._tag, "Synced")
      // Nothing changes for 40 s: the silence itself is what is under test.
      yield* Effect.sleep("40 seconds")
      const name = lab.uniqueName("kube-idle-node")
      yield* Effect.acquireRelease(
        kubectlOk(["create", "-f", "-"], JSON.stringify({ apiVersion: "v1", kind: "Node", metadata: { name } })),
        () => kubectl(["delete", "node", name, "--ignore-not-found"])
      )
      const next = yield* takeUntil(events, (e) => e._tag !== "Upserted" || e.object.metadata?.name === name, name)
      assert.strictEqual(next._tag, "Upserted")
      assert.strictEqual(yield* restarts("nodes", "watch_error"), errorsBefore)
    }).pipe(Effect.provide(kubeLayer()), Effect.scoped), { timeout: 90_000 })

  it.live("patchServiceMetadata adds our finalizer and an annotation; a stale resourceVersion is KubeConflict", () =>
    Effect.gen(function*() {
      const kube = yield* Kube
      const name = lab.uniqueName("kube-patch")
      yield* withService(name)
      const before = yield* kube.getService(NAMESPACE, name)
      const staleVersion = before?.metadata?.resourceVersion ?? ""
      assert.notStrictEqual(staleVersion, "")
      const updated = yield* kube.patchServiceMetadata(
        { namespace: NAMESPACE, name, resourceVersion: staleVersion },
        { finalizers: [FINALIZER], annotations: { "midokura.com/mappings": "[{\"externalPort\":8080}]" } }
      )
      assert.deepStrictEqual(updated.metadata?.finalizers, [FINALIZER])
      const stored = yield* kubectlJson<{ metadata: { finalizers?: Array<string>; annotations?: Record<string, string> } }>(
        ["get", "service", name, "-n", NAMESPACE]
      )
      assert.deepStrictEqual(stored.metadata.finalizers, [FINALIZER])
      assert.strictEqual(stored.metadata.annotations?.["midokura.com/mappings"], "[{\"externalPort\":8080}]")
      assert.strictEqual(stored.metadata.annotations?.["midokura.com/load-balancer-type"], "upnp-igd")

      const conflict = yield* kube.patchServiceMetadata(
        { namespace: NAMESPACE, name, resourceVersion: staleVersion },
        { finalizers: [] }
      ).pipe(Effect.flip)
      assert.instanceOf(conflict, KubeConflict)
      assert.strictEqual(conflict.name, name)
      assert.include(conflict.message, "the object has been modified")

      const cleared = yield* kube.patchServiceMetadata(
        { namespace: NAMESPACE, name, resourceVersion: updated.metadata?.resourceVersion ?? "" },
        { finalizers: [], annotations: { "midokura.com/mappings": null } }
      )
      assert.isUndefined(cleared.metadata?.finalizers)
      assert.isUndefined(cleared.metadata?.annotations?.["midokura.com/mappings"])
      assert.strictEqual(cleared.metadata?.annotations?.["midokura.com/load-balancer-type"], "upnp-igd")
    }).pipe(Effect.provide(kubeLayer()), Effect.scoped))

  it.live("applyServiceStatus publishes the ingress IP and keeps a condition written by another field manager", () =>
    Effect.gen(function*() {
      const kube = yield* Kube
      const name = lab.uniqueName("kube-status")
      yield* withService(name)
      yield* kubectlOk([
        "patch",
        "service",
        name,
        "-n",
        NAMESPACE,
        "--subresource=status",
        "--type=merge",
        "--field-manager=other-controller",
        "-p",
        JSON.stringify({
          status: {
            conditions: [{
              type: "example.com/Foreign",
              status: "True",
              reason: "Other",
              message: "written by another controller",
              lastTransitionTime: "2025-01-01T00:00:00Z"
            }]
          }
        })
      ])
      const current = yield* kube.getService(NAMESPACE, name)
      const ref = { namespace: NAMESPACE, name, uid: current?.metadata?.uid }
      const applied = yield* kube.applyServiceStatus(ref, {
        loadBalancer: { ingress: [{ ip: "122.112.219.229", ipMode: "VIP", ports: [{ port: 8080, protocol: "TCP" }] }] },
        conditions: [{
          type: "midokura.com/LoadBalancerReady",
          status: "True",
          reason: "Mapped",
          message: "8080/TCP mapped",
          lastTransitionTime: "2025-06-01T00:00:00Z"
        }]
      })
      assert.strictEqual(applied.status?.loadBalancer?.ingress?.[0]?.ip, "122.112.219.229")

      interface Stored {
        readonly metadata: { readonly managedFields: Array<{ manager: string; subresource?: string; operation: string }> }
        readonly status: {
          readonly loadBalancer: { readonly ingress?: Array<{ ip: string; ports?: Array<{ port: number; error?: string }> }> }
          readonly conditions?: Array<{ type: string; message: string }>
        }
      }
      const stored = yield* kubectlJson<Stored>(["get", "service", name, "-n", NAMESPACE, "--show-managed-fields"])
      assert.strictEqual(stored.status.loadBalancer.ingress?.[0]?.ip, "122.112.219.229")
      assert.deepStrictEqual(
        stored.status.conditions?.map((c) => c.type).sort(),
        ["example.com/Foreign", "midokura.com/LoadBalancerReady"]
      )
      assert.isTrue(stored.metadata.managedFields.some((f) =>
        f.manager === "edge-cloud-controller-manager" && f.subresource === "status" && f.operation === "Apply"
      ))
      const table = yield* kubectlOk(["get", "service", name, "-n", NAMESPACE])
      assert.match(table, new RegExp(`${name}\\s+LoadBalancer\\s+\\S+\\s+122\\.112\\.219\\.229\\s+8080:\\d+/TCP`))

      // Applying again without our condition removes only ours; a port error is published.
      yield* kube.applyServiceStatus(ref, {
        loadBalancer: {
          ingress: [{ ip: "122.112.219.229", ports: [{ port: 8080, protocol: "TCP", error: "midokura.com/PortConflict" }] }]
        }
      })
      const again = yield* kubectlJson<Stored>(["get", "service", name, "-n", NAMESPACE])
      assert.deepStrictEqual(again.status.conditions?.map((c) => c.type), ["example.com/Foreign"])
      assert.strictEqual(again.status.loadBalancer.ingress?.[0]?.ports?.[0]?.error, "midokura.com/PortConflict")

      // A Service re-created under the same name is not written to.
      const gone = yield* kube.applyServiceStatus({ ...ref, uid: "00000000-0000-0000-0000-000000000000" }, {
        loadBalancer: { ingress: [] }
      }).pipe(Effect.flip)
      assert.strictEqual(gone._tag, "KubeNotFound")
      assert.strictEqual(gone.reason, "UidMismatch")
      const missing = yield* kube.applyServiceStatus({ namespace: NAMESPACE, name: `${name}-absent` }, {
        loadBalancer: { ingress: [] }
      }).pipe(Effect.flip)
      assert.strictEqual(missing._tag, "KubeNotFound")
    }).pipe(Effect.provide(kubeLayer()), Effect.scoped))

  it.live("recordEvent creates an events.k8s.io/v1 Event that kubectl shows", () =>
    Effect.gen(function*() {
      const kube = yield* Kube
      const name = lab.uniqueName("kube-event")
      yield* withService(name)
      const service = yield* kube.getService(NAMESPACE, name)
      yield* kube.recordEvent({
        regarding: {
          kind: "Service",
          apiVersion: "v1",
          namespace: NAMESPACE,
          name,
          uid: service?.metadata?.uid,
          resourceVersion: service?.metadata?.resourceVersion
        },
        type: "Normal",
        reason: "EnsuredLoadBalancer",
        action: "EnsureLoadBalancer",
        note: "8080/TCP mapped to 192.168.77.10"
      })
      interface EventList {
        readonly items: Array<{
          readonly reason: string
          readonly note: string
          readonly type: string
          readonly action: string
          readonly eventTime: string
          readonly reportingController: string
          readonly reportingInstance: string
          readonly regarding: { kind: string; name: string; uid?: string }
        }>
      }
      const list = yield* kubectlJson<EventList>(["get", "events.v1.events.k8s.io", "-n", NAMESPACE])
      const ours = list.items.filter((e) => e.regarding.name === name)
      assert.strictEqual(ours.length, 1)
      const event = ours[0]!
      assert.strictEqual(event.reason, "EnsuredLoadBalancer")
      assert.strictEqual(event.note, "8080/TCP mapped to 192.168.77.10")
      assert.strictEqual(event.action, "EnsureLoadBalancer")
      assert.strictEqual(event.reportingController, "midokura.com/edge-cloud-controller-manager")
      assert.strictEqual(event.reportingInstance, "kube-e2e")
      assert.strictEqual(event.regarding.uid, service?.metadata?.uid)
      assert.match(event.eventTime, /\.\d{6}Z$/)
      const describe = yield* kubectlOk(["describe", "service", name, "-n", NAMESPACE])
      assert.match(describe, /Normal\s+EnsuredLoadBalancer\s+.*8080\/TCP mapped to 192\.168\.77\.10/)
    }).pipe(Effect.provide(kubeLayer()), Effect.scoped))
})

describe("LeaderElection on a real Lease", () => {
  it.live("one candidate leads and renews, the other waits; a graceful release hands over at once", () =>
    Effect.gen(function*() {
      const name = lab.uniqueName("kube-lease")
      yield* Effect.addFinalizer(() => kubectl(["delete", "lease", name, "-n", NAMESPACE, "--ignore-not-found"]))
      const candidate = (identity: string) =>
        makeLeaderElection({
          namespace: NAMESPACE,
          name,
          identity,
          leaseDuration: "4 seconds",
          renewDeadline: "3 seconds",
          retryPeriod: "500 millis"
        })
      const a = yield* candidate("pod-a")
      const b = yield* candidate("pod-b")
      const aStarted = yield* Deferred.make<void>()
      const bStarted = yield* Deferred.make<void>()
      const fa = yield* Effect.forkScoped(a.run(Deferred.succeed(aStarted, undefined).pipe(Effect.andThen(Effect.never))))
      yield* Deferred.await(aStarted).pipe(Effect.timeout("10 seconds"))
      const fb = yield* Effect.forkScoped(b.run(Deferred.succeed(bStarted, undefined).pipe(Effect.andThen(Effect.never))))

      interface Lease {
        readonly spec: {
          holderIdentity?: string
          leaseDurationSeconds?: number
          leaseTransitions?: number
          renewTime?: string
          acquireTime?: string
        }
      }
      const read = kubectlJson<Lease>(["get", "lease", name, "-n", NAMESPACE])
      const first = yield* read
      assert.strictEqual(first.spec.holderIdentity, "pod-a")
      assert.strictEqual(first.spec.leaseDurationSeconds, 4)
      assert.match(first.spec.renewTime ?? "", /\.\d{6}Z$/)
      // Several renewals go by (the lease itself would have expired by then) and b still waits.
      yield* eventually(
        read,
        (l) => l.spec.renewTime !== first.spec.renewTime && Date.parse(l.spec.renewTime ?? "") - Date.parse(first.spec.renewTime ?? "") > 5_000,
        "renewals past the lease duration"
      )
      assert.isFalse(yield* Deferred.isDone(bStarted))
      assert.isTrue(yield* SubscriptionRef.get(a.isLeader))
      assert.isFalse(yield* SubscriptionRef.get(b.isLeader))

      const releasedAt = Date.now()
      yield* Fiber.interrupt(fa)
      yield* Deferred.await(bStarted).pipe(Effect.timeout("3 seconds"))
      assert.isBelow(Date.now() - releasedAt, 3_000, "b took over within a retry period or so, not a lease duration")
      const after = yield* read
      assert.strictEqual(after.spec.holderIdentity, "pod-b")
      assert.strictEqual(after.spec.leaseTransitions, 1)
      yield* Fiber.interrupt(fb)
      assert.strictEqual((yield* read).spec.holderIdentity, "")
    }).pipe(
      Effect.provide(LeaseStore.layerKube.pipe(Layer.provide(kubeLayer()))),
      Effect.scoped
    ), { timeout: 60_000 })
})

describe("Kube with a token RBAC grants nothing", () => {
  it.live("every call fails with a KubeError naming the denied verb and resource", () =>
    Effect.gen(function*() {
      const account = lab.uniqueName("kube-norbac")
      yield* Effect.acquireRelease(
        kubectlOk(["create", "serviceaccount", account, "-n", NAMESPACE]),
        () => kubectl(["delete", "serviceaccount", account, "-n", NAMESPACE, "--ignore-not-found"])
      )
      const token = yield* Effect.promise(() => lab.createServiceAccountToken(NAMESPACE, account))
      const name = lab.uniqueName("kube-rbac")
      yield* withService(name)
      const user = `system:serviceaccount:${NAMESPACE}:${account}`

      yield* Effect.gen(function*() {
        const kube = yield* Kube
        const get = yield* kube.getService(NAMESPACE, name).pipe(Effect.flip)
        assert.strictEqual(get.status, 403)
        assert.strictEqual(get.reason, "Forbidden")
        assert.strictEqual(get.verb, "get")
        assert.strictEqual(get.resource, "services")
        assert.include(get.message, `User "${user}" cannot get resource "services"`)

        const patch = yield* kube.patchServiceMetadata({ namespace: NAMESPACE, name, resourceVersion: "1" }, {
          finalizers: [FINALIZER]
        }).pipe(Effect.flip)
        assert.strictEqual(patch._tag, "KubeError")
        assert.include(patch.message, `cannot patch resource "services"`)

        const status = yield* kube.applyServiceStatus({ namespace: NAMESPACE, name }, { loadBalancer: {} }).pipe(
          Effect.flip
        )
        assert.strictEqual(status._tag, "KubeError")
        assert.include(status.message, `cannot patch resource "services/status"`)

        const event = yield* kube.recordEvent({
          regarding: { kind: "Service", apiVersion: "v1", namespace: NAMESPACE, name },
          type: "Warning",
          reason: "SyncLoadBalancerFailed",
          action: "EnsureLoadBalancer",
          note: "denied"
        }).pipe(Effect.flip)
        assert.strictEqual(event.status, 403)
        assert.include(event.message, `cannot create resource "events" in API group "events.k8s.io"`)

        const lease = yield* kube.getLease(NAMESPACE, "edge-ccm").pipe(Effect.flip)
        assert.include(lease.message, `cannot get resource "leases" in API group "coordination.k8s.io"`)

        // The watch never fails: the denied list is logged, counted, and retried.
        const before = yield* restarts("nodes", "list_error")
        yield* kube.watchNodes.pipe(Stream.runDrain, Effect.forkScoped)
        yield* eventually(restarts("nodes", "list_error"), (n) => n > before, "a counted list failure")
      }).pipe(Effect.provide(kubeLayer({ token })))
    }).pipe(Effect.scoped))
})
