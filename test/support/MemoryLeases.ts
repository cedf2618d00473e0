/**
 * The Lease store of the leader-election tests: an apiserver-like store in memory, with
 * resourceVersions, 409 on a stale one, 404, and outages on demand.
 */
import { Context, Effect, Layer, Ref } from "effect"
import type { Lease } from "../../src/kube/Kube.ts"
import { KubeConflict, KubeError, KubeNotFound } from "../../src/kube/KubeError.ts"
import { LeaseStore, type LeaseStoreService, type NamedLease, type VersionedLease } from "../../src/runtime/LeaderElection.ts"

/** The memory store's state, for tests: its Leases, and a switch that makes every call fail. */
export class MemoryLeases extends Context.Service<MemoryLeases, {
  readonly leases: Ref.Ref<ReadonlyMap<string, Lease>>
  readonly unreachable: Ref.Ref<boolean>
}>()("edge-ccm/runtime/MemoryLeases") {
  static readonly layer: Layer.Layer<MemoryLeases> = Layer.effect(
    MemoryLeases,
    Effect.all({ leases: Ref.make<ReadonlyMap<string, Lease>>(new Map()), unreachable: Ref.make(false) })
  )
}

const LEASES = "leases.coordination.k8s.io"

/** An apiserver-like store in memory: resourceVersions, 409 on a stale one, 404, outages. */
const makeMemoryStore = Effect.gen(function*() {
  const { leases, unreachable } = yield* MemoryLeases
  const version = yield* Ref.make(0)
  const key = (namespace: string, name: string) => `${namespace}/${name}`
  const guard = (verb: string, namespace: string, name: string) =>
    Effect.flatMap(Ref.get(unreachable), (down) =>
      down
        ? Effect.fail(
          new KubeError({
            verb,
            resource: LEASES,
            namespace,
            name,
            reason: "ECONNREFUSED",
            message: `cannot ${verb} ${LEASES} ${namespace}/${name}: connection refused`
          })
        )
        : Effect.void)
  const store = (lease: Lease, namespace: string, name: string) =>
    Effect.gen(function*() {
      const resourceVersion = String(yield* Ref.updateAndGet(version, (n) => n + 1))
      // Round-trip through JSON as the apiserver would: MicroTimes come back as strings.
      const stored: Lease = JSON.parse(JSON.stringify({ ...lease, metadata: { ...lease.metadata, resourceVersion } }))
      yield* Ref.update(leases, (m) => new Map(m).set(key(namespace, name), stored))
      return stored
    })
  const conflict = (verb: string, namespace: string, name: string, reason: string) =>
    new KubeConflict({ verb, resource: LEASES, namespace, name, reason, message: `${verb} ${namespace}/${name}: ${reason}` })
  const service: LeaseStoreService = {
    get: (namespace, name) =>
      guard("get", namespace, name).pipe(
        Effect.andThen(Ref.get(leases)),
        Effect.map((m) => m.get(key(namespace, name)))
      ),
    create: Effect.fnUntraced(function*(lease: NamedLease) {
      const { namespace, name } = lease.metadata
      yield* guard("create", namespace, name)
      if ((yield* Ref.get(leases)).has(key(namespace, name))) {
        return yield* conflict("create", namespace, name, "AlreadyExists")
      }
      return yield* store(lease, namespace, name)
    }),
    replace: Effect.fnUntraced(function*(lease: VersionedLease) {
      const { namespace, name, resourceVersion } = lease.metadata
      yield* guard("update", namespace, name)
      const existing = (yield* Ref.get(leases)).get(key(namespace, name))
      if (existing === undefined) {
        return yield* new KubeNotFound({
          verb: "update",
          resource: LEASES,
          namespace,
          name,
          reason: "NotFound",
          message: `${LEASES} "${name}" not found`
        })
      }
      if (existing.metadata?.resourceVersion !== resourceVersion) {
        return yield* conflict("update", namespace, name, "Conflict")
      }
      return yield* store(lease, namespace, name)
    })
  }
  return service
})

/** `LeaseStore` in memory, and its state for the test to read and switch. */
export const memoryLeaseStore: Layer.Layer<LeaseStore | MemoryLeases> = Layer.effect(LeaseStore, makeMemoryStore).pipe(
  Layer.provideMerge(MemoryLeases.layer)
)
