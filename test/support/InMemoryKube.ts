/**
 * An in-memory apiserver for Services, with the semantics the controller relies on:
 * resourceVersion preconditions (409), finalizers holding a deleted object, a status
 * subresource, and a watch that starts with the full list.
 */
import type { EndpointSlice, Node, Secret, Service } from "../../src/kube/objects.ts"
import { Effect, Layer, Queue, Stream } from "effect"
import { type EventSpec, Kube, KubeConflict, KubeNotFound, type WatchEvent } from "../../src/kube/Kube.ts"
import { changed, openWatch } from "./quiescence.ts"

export interface InMemoryKube {
  readonly layer: Layer.Layer<Kube>
  readonly services: Map<string, Service>
  readonly events: Array<EventSpec>
  /** Every write, in order: `patch default/web`, `status default/web`, `event Reason`. */
  readonly calls: Array<string>
  readonly secrets: Map<string, Secret>
  readonly create: (service: Service) => void
  readonly update: (key: string, change: (service: Service) => Service) => void
  /** kubectl delete: held by finalizers until they are gone. */
  readonly delete: (key: string) => void
  readonly get: (key: string) => Service | undefined
}

export const makeInMemoryKube = (
  nodes: ReadonlyArray<Node> = [],
  options: {
    /** A log shared with the router fake: every write appended as `kube patch default/web`. */
    readonly journal?: Array<string>
  } = {}
): InMemoryKube => {
  const services = new Map<string, Service>()
  const secrets = new Map<string, Secret>()
  const events: Array<EventSpec> = []
  const calls: Array<string> = []
  const log = (call: string) => {
    calls.push(call)
    options.journal?.push(`kube ${call}`)
    changed()
  }
  const listeners = new Set<(event: WatchEvent<Service>) => void>()
  let resourceVersion = 1

  const keyOf = (s: Service) => `${s.metadata?.namespace ?? "default"}/${s.metadata?.name}`
  const store = (service: Service) => {
    const next = structuredClone({
      ...service,
      metadata: { ...service.metadata, resourceVersion: String(++resourceVersion) }
    })
    const key = keyOf(next)
    if (next.metadata?.deletionTimestamp !== undefined && (next.metadata.finalizers ?? []).length === 0) {
      services.delete(key)
      for (const listener of listeners) listener({ _tag: "Deleted", object: next })
      changed()
      return next
    }
    services.set(key, next)
    for (const listener of listeners) listener({ _tag: "Upserted", object: structuredClone(next) })
    changed()
    return next
  }

  /**
   * One event per pull: the controller asks for the next only once it has handled the last, so
   * the watch is drained when every event offered has been taken and the next one asked for.
   */
  const watch = <T>(initial: () => ReadonlyArray<T>, subscribe: boolean): Stream.Stream<WatchEvent<T>> =>
    Stream.unwrap(Effect.gen(function*() {
      const queue = yield* Queue.unbounded<WatchEvent<T>>()
      const counts = { offered: 0, taken: 0, handled: 0 }
      const offer = (event: WatchEvent<T>) => {
        counts.offered++
        Queue.offerUnsafe(queue, event)
      }
      yield* Effect.acquireRelease(
        Effect.sync(() => {
          offer({ _tag: "Synced", items: structuredClone(initial()) })
          const listener = (event: WatchEvent<Service>) => offer(event as WatchEvent<T>)
          if (subscribe) listeners.add(listener)
          return { listener, close: openWatch({ drained: () => counts.handled === counts.offered }) }
        }),
        ({ close, listener }) =>
          Effect.sync(() => {
            listeners.delete(listener)
            close()
          })
      )
      return Stream.fromEffectRepeat(Effect.suspend(() => {
        counts.handled = counts.taken
        if (counts.handled === counts.offered) changed()
        return Effect.tap(Queue.take(queue), () => Effect.sync(() => void counts.taken++))
      }))
    }))

  const notFound = (verb: string, namespace: string, name: string) =>
    new KubeNotFound({ verb, resource: "services", namespace, name, reason: "NotFound", message: "not found" })

  const kube = Kube.of({
    watchServices: watch(() => [...services.values()], true),
    watchNodes: watch<Node>(() => nodes, false),
    watchEndpointSlices: watch<EndpointSlice>(() => [], false),
    getService: (namespace, name) => Effect.sync(() => structuredClone(services.get(`${namespace}/${name}`))),
    patchServiceMetadata: (ref, change) =>
      Effect.suspend((): Effect.Effect<Service, KubeConflict | KubeNotFound> => {
        const key = `${ref.namespace}/${ref.name}`
        log(`patch ${key}`)
        const current = services.get(key)
        if (current === undefined) return Effect.fail(notFound("patch", ref.namespace, ref.name))
        if (ref.resourceVersion !== current.metadata?.resourceVersion) {
          return Effect.fail(
            new KubeConflict({ verb: "patch", resource: "services", reason: "Conflict", message: "stale resourceVersion" })
          )
        }
        const annotations: Record<string, string> = { ...current.metadata?.annotations }
        for (const [name, value] of Object.entries(change.annotations ?? {})) {
          if (value === null) delete annotations[name]
          else annotations[name] = value
        }
        return Effect.succeed(store({
          ...current,
          metadata: {
            ...current.metadata,
            annotations,
            ...(change.finalizers === undefined ? {} : { finalizers: [...change.finalizers] })
          }
        }))
      }),
    applyServiceStatus: (ref, status) =>
      Effect.suspend(() => {
        const key = `${ref.namespace}/${ref.name}`
        log(`status ${key}`)
        const current = services.get(key)
        if (current === undefined) return Effect.fail(notFound("apply", ref.namespace, ref.name))
        // Like the apiserver, fill in ipMode VIP where the writer left it unset.
        const loadBalancer = {
          ...status.loadBalancer,
          ...(status.loadBalancer.ingress === undefined
            ? {}
            : { ingress: status.loadBalancer.ingress.map((ingress) => ({ ipMode: "VIP", ...ingress })) })
        }
        return Effect.succeed(store({ ...current, status: { ...current.status, loadBalancer } }))
      }),
    recordEvent: (event) =>
      Effect.sync(() => {
        events.push(event)
        log(`event ${event.reason}`)
      }),
    getSecret: (namespace, name) => Effect.sync(() => structuredClone(secrets.get(`${namespace}/${name}`))),
    createSecret: (secret) =>
      Effect.suspend(() => {
        const key = `${secret.metadata.namespace}/${secret.metadata.name}`
        log(`create secret ${key}`)
        if (secrets.has(key)) {
          return Effect.fail(
            new KubeConflict({ verb: "create", resource: "secrets", reason: "AlreadyExists", message: "already exists" })
          )
        }
        secrets.set(key, structuredClone(secret))
        return Effect.succeed(secret)
      }),
    getLease: () => Effect.succeed(undefined),
    createLease: (lease) => Effect.succeed(lease),
    replaceLease: (lease) => Effect.succeed(lease)
  })

  return {
    layer: Layer.succeed(Kube, kube),
    services,
    events,
    calls,
    secrets,
    create: (service) =>
      void store({
        ...service,
        metadata: { namespace: "default", uid: `uid-${service.metadata?.name}`, ...service.metadata }
      }),
    update: (key, change) => void store(change(structuredClone(services.get(key)!))),
    delete: (key) => {
      const current = services.get(key)
      if (current === undefined) return
      store({ ...current, metadata: { ...current.metadata, deletionTimestamp: new Date() } })
    },
    get: (key) => services.get(key)
  }
}
