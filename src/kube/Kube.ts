/**
 * Everything the controller needs from the Kubernetes API, as one service: watch streams
 * of Services, Nodes and EndpointSlices, and the few writes it makes (finalizer and
 * annotations, load-balancer status, Events, the leader Lease). It knows nothing of routers.
 */
import { Clock, Context, Effect, Layer, Random, Result, type Stream } from "effect"
import { type KubeConflict, KubeError, KubeNotFound } from "./KubeError.ts"
import { APPLY_PATCH, KubeHttp, MERGE_PATCH } from "./KubeHttp.ts"
import type { KubeCallContext, KubeFailure } from "./KubeError.ts"
import { makeSource, type WatchTuning } from "./httpSource.ts"
import type { ListWatchOptions, WatchEvent } from "./listWatch.ts"
import { listWatch } from "./listWatch.ts"
import {
  type EndpointSlice,
  EndpointSlices,
  identityOf,
  keepAnnotations,
  type Kind,
  type Lease,
  Leases,
  type Node,
  Nodes,
  type Secret,
  Secrets,
  type Service,
  Services
} from "./objects.ts"
import type { EventSpec, ObjectRef, ServiceMetadataChange, ServiceStatusChange } from "./requests.ts"
import { eventBody, FIELD_MANAGER, serviceMetadataPatch, serviceStatusApply } from "./requests.ts"

export type { WatchEvent } from "./listWatch.ts"
export { watchRestarts } from "./listWatch.ts"
export type { EndpointSlice, Lease, Node, Secret, Service } from "./objects.ts"
export type { EventSpec, ObjectRef, ServiceMetadataChange, ServiceStatusChange } from "./requests.ts"
export { FIELD_MANAGER, REPORTING_CONTROLLER } from "./requests.ts"
export { KubeConflict, KubeError, KubeNotFound } from "./KubeError.ts"

export interface KubeOptions {
  /** `reportingInstance` of Events: the pod (or process) name. */
  readonly instance: string
  /** Backoff and watch tuning; the defaults suit production. */
  readonly watch?: (ListWatchOptions & WatchTuning) | undefined
  /**
   * The Service annotations worth keeping in memory: those under these prefixes (default:
   * all). A Service can carry tens of kilobytes of annotations nobody here reads
   * (`kubectl.kubernetes.io/last-applied-configuration`); thousands of them add up.
   */
  readonly serviceAnnotationPrefixes?: ReadonlyArray<string> | undefined
  /**
   * Services the caller has no business with, kept as their identity and type alone: most of a
   * cluster's Services are such, and every one is held in memory (default: none).
   */
  readonly bystanderService?: ((service: Service) => boolean) | undefined
}

export interface KubeService {
  /**
   * List, then watch from the list's resourceVersion; relist on 410 Gone; jittered
   * exponential backoff (1 s → 30 s) and resume on every other failure. One connection,
   * cluster-wide. Never ends, never fails: failures are logged and counted in
   * `edge_ccm_watch_restarts_total`. Each run of the stream opens its own connection.
   */
  readonly watchServices: Stream.Stream<WatchEvent<Service>>
  readonly watchNodes: Stream.Stream<WatchEvent<Node>>
  /** discovery.k8s.io/v1, all namespaces. */
  readonly watchEndpointSlices: Stream.Stream<WatchEvent<EndpointSlice>>
  /** The Service, or `undefined` when it does not exist. */
  readonly getService: (namespace: string, name: string) => Effect.Effect<Service | undefined, KubeError>
  /**
   * Replaces the finalizer list and sets/removes annotations (`null` removes) in one merge
   * patch carrying `metadata.resourceVersion`: a stale view fails with `KubeConflict`
   * rather than overwriting someone else's change. Returns the updated Service.
   */
  readonly patchServiceMetadata: (
    ref: ObjectRef & { readonly resourceVersion: string },
    change: ServiceMetadataChange
  ) => Effect.Effect<Service, KubeConflict | KubeNotFound | KubeError>
  /**
   * Writes `status.loadBalancer` and our conditions on the status subresource by
   * server-side apply as field manager `edge-cloud-controller-manager` (forced), so other
   * controllers' conditions survive. With `ref.uid`, a Service re-created under the same
   * name is not written to and the result is `KubeNotFound` (reason `UidMismatch`); a
   * missing Service is `KubeNotFound` too (an apply would otherwise try to create it).
   */
  readonly applyServiceStatus: (
    ref: ObjectRef,
    status: ServiceStatusChange
  ) => Effect.Effect<Service, KubeNotFound | KubeError>
  /** Creates an `events.k8s.io/v1` Event with every required field. Failures are returned, never thrown. */
  readonly recordEvent: (event: EventSpec) => Effect.Effect<void, KubeError>
  /** The Secret, or `undefined` when it does not exist. */
  readonly getSecret: (namespace: string, name: string) => Effect.Effect<Secret | undefined, KubeError>
  /** Creates a Secret; `KubeConflict` when it already exists. */
  readonly createSecret: (
    secret: Secret & { readonly metadata: { readonly namespace: string; readonly name: string } }
  ) => Effect.Effect<Secret, KubeConflict | KubeError>
  /** The Lease, or `undefined` when it does not exist. */
  readonly getLease: (namespace: string, name: string) => Effect.Effect<Lease | undefined, KubeError>
  /** Creates a Lease; `KubeConflict` when it already exists. */
  readonly createLease: (lease: Lease & { readonly metadata: { readonly namespace: string; readonly name: string } }) => Effect.Effect<Lease, KubeConflict | KubeError>
  /** Replaces a Lease; its `metadata.resourceVersion` is a precondition (`KubeConflict` when stale). */
  readonly replaceLease: (lease: Lease & { readonly metadata: { readonly namespace: string; readonly name: string; readonly resourceVersion: string } }) => Effect.Effect<Lease, KubeConflict | KubeNotFound | KubeError>
}

/** Everything but 404 and 409 already is a `KubeError`; callers that cannot act on those get one too. */
const onlyKubeError = (error: KubeFailure): KubeError =>
  error._tag === "KubeError"
    ? error
    : new KubeError({
      verb: error.verb,
      resource: error.resource,
      ...(error.namespace !== undefined ? { namespace: error.namespace } : {}),
      ...(error.name !== undefined ? { name: error.name } : {}),
      status: error._tag === "KubeNotFound" ? 404 : 409,
      reason: error.reason,
      message: error.message
    })

const withoutNotFound = <A>(
  effect: Effect.Effect<A, KubeFailure>
): Effect.Effect<A | undefined, KubeError | KubeConflict> =>
  Effect.catchTag(effect, "KubeNotFound", () => Effect.succeed(undefined))

const SERVICES = "services"
const LEASES = "leases.coordination.k8s.io"
const servicePath = (namespace: string, name: string) => `/api/v1/namespaces/${namespace}/services/${name}`
const leasePath = (namespace: string, name?: string) =>
  `/apis/coordination.k8s.io/v1/namespaces/${namespace}/leases${name === undefined ? "" : `/${name}`}`
const secretPath = (namespace: string, name?: string) => `/api/v1/namespaces/${namespace}/secrets${name === undefined ? "" : `/${name}`}`

/** Builds the service over an apiserver connection. */
export const make = (options: KubeOptions): Effect.Effect<KubeService, never, KubeHttp> =>
  Effect.gen(function*() {
    const http = yield* KubeHttp
    const tuning = options.watch
    const annotated = keepAnnotations(options.serviceAnnotationPrefixes)
    const bystander = options.bystanderService
    const slim = (service: Service): Service => bystander?.(service) === true ? identityOf(service) : annotated(service)

    /** Sends a request and decodes its answer as `kind`; a body that is not one is a typed error. */
    const call = <T>(ctx: KubeCallContext, kind: Kind<T>, request: Parameters<typeof http.json>[1]) =>
      Effect.flatMap(http.json(ctx, request), (raw) => {
        const decoded = kind.decode(raw)
        return Result.isSuccess(decoded)
          ? Effect.succeed(decoded.success)
          : Effect.fail(
            new KubeError({ ...ctx, reason: "InvalidResponse", message: `cannot ${ctx.verb} ${ctx.resource}: ${decoded.failure}` })
          )
      })

    const serviceKind: Kind<Service> = {
      decode: (raw) => Result.map(Services.decode(raw), slim),
      decodeList: (raw) => Result.map(Services.decodeList(raw), (list) => ({ ...list, items: list.items.map(slim) }))
    }

    const watchServices = listWatch(
      makeSource(http, { resource: SERVICES, path: "/api/v1/services", kind: serviceKind, tuning }),
      tuning
    )
    const watchNodes = listWatch(makeSource(http, { resource: "nodes", path: "/api/v1/nodes", kind: Nodes, tuning }), tuning)
    const watchEndpointSlices = listWatch(
      makeSource(http, {
        resource: "endpointslices",
        path: "/apis/discovery.k8s.io/v1/endpointslices",
        kind: EndpointSlices,
        tuning
      }),
      tuning
    )

    const getService = Effect.fn("Kube.getService")(function*(namespace: string, name: string) {
      return yield* call({ verb: "get", resource: SERVICES, namespace, name }, serviceKind, {
        method: "GET",
        path: servicePath(namespace, name)
      }).pipe(withoutNotFound, Effect.mapError(onlyKubeError))
    })

    const patchServiceMetadata = Effect.fn("Kube.patchServiceMetadata")(function*(
      ref: ObjectRef & { readonly resourceVersion: string },
      change: ServiceMetadataChange
    ) {
      return yield* call({ verb: "patch", resource: SERVICES, namespace: ref.namespace, name: ref.name }, serviceKind, {
        method: "PATCH",
        path: servicePath(ref.namespace, ref.name),
        query: { fieldManager: FIELD_MANAGER },
        body: serviceMetadataPatch(ref.resourceVersion, change),
        contentType: MERGE_PATCH
      })
    })

    const applyServiceStatus = Effect.fn("Kube.applyServiceStatus")(function*(ref: ObjectRef, status: ServiceStatusChange) {
      const ctx = { verb: "patch", resource: "services/status", namespace: ref.namespace, name: ref.name }
      return yield* call(ctx, serviceKind, {
        method: "PATCH",
        path: `${servicePath(ref.namespace, ref.name)}/status`,
        query: { fieldManager: FIELD_MANAGER, force: true },
        body: serviceStatusApply(ref, status),
        contentType: APPLY_PATCH
      }).pipe(
        // Apply to a missing Service or to one re-created under the same name fails as 409 or
        // 422 depending on the case; a read tells which.
        Effect.catch((error) =>
          error._tag === "KubeNotFound" || (error._tag === "KubeError" && error.status !== 422)
            ? Effect.fail(error)
            : getService(ref.namespace, ref.name).pipe(
              Effect.orElseSucceed(() => null),
              Effect.flatMap((current) =>
                Effect.fail(
                  current === undefined
                    ? new KubeNotFound({ ...ctx, reason: "NotFound", message: error.message })
                    : current !== null && ref.uid !== undefined && current.metadata?.uid !== ref.uid
                    ? new KubeNotFound({ ...ctx, reason: "UidMismatch", message: error.message })
                    : onlyKubeError(error)
                )
              )
            )
        )
      )
    })

    const recordEvent = Effect.fn("Kube.recordEvent")(function*(event: EventSpec) {
      const now = yield* Clock.currentTimeMillis
      const unique = yield* Random.nextIntBetween(0, 999_999)
      const body = eventBody(event, { instance: options.instance, now, unique })
      const namespace = body.metadata.namespace
      yield* http.json({ verb: "create", resource: "events.events.k8s.io", namespace }, {
        method: "POST",
        path: `/apis/events.k8s.io/v1/namespaces/${namespace}/events`,
        body
      }).pipe(Effect.mapError(onlyKubeError))
    })

    const getSecret = Effect.fn("Kube.getSecret")(function*(namespace: string, name: string) {
      return yield* call({ verb: "get", resource: "secrets", namespace, name }, Secrets, {
        method: "GET",
        path: secretPath(namespace, name)
      }).pipe(withoutNotFound, Effect.mapError(onlyKubeError))
    })

    const createSecret = Effect.fn("Kube.createSecret")(function*(
      secret: Secret & { readonly metadata: { readonly namespace: string; readonly name: string } }
    ) {
      const { name, namespace } = secret.metadata
      return yield* call({ verb: "create", resource: "secrets", namespace, name }, Secrets, {
        method: "POST",
        path: secretPath(namespace),
        body: { apiVersion: "v1", kind: "Secret", ...secret }
      }).pipe(Effect.catchTag("KubeNotFound", (error) => Effect.fail(onlyKubeError(error))))
    })

    const getLease = Effect.fn("Kube.getLease")(function*(namespace: string, name: string) {
      return yield* call({ verb: "get", resource: LEASES, namespace, name }, Leases, {
        method: "GET",
        path: leasePath(namespace, name)
      }).pipe(withoutNotFound, Effect.mapError(onlyKubeError))
    })

    const createLease = Effect.fn("Kube.createLease")(function*(
      lease: Lease & { readonly metadata: { readonly namespace: string; readonly name: string } }
    ) {
      const { name, namespace } = lease.metadata
      return yield* call({ verb: "create", resource: LEASES, namespace, name }, Leases, {
        method: "POST",
        path: leasePath(namespace),
        body: { apiVersion: "coordination.k8s.io/v1", kind: "Lease", ...lease }
      }).pipe(Effect.catchTag("KubeNotFound", (error) => Effect.fail(onlyKubeError(error))))
    })

    const replaceLease = Effect.fn("Kube.replaceLease")(function*(
      lease: Lease & {
        readonly metadata: { readonly namespace: string; readonly name: string; readonly resourceVersion: string }
      }
    ) {
      const { name, namespace } = lease.metadata
      return yield* call({ verb: "update", resource: LEASES, namespace, name }, Leases, {
        method: "PUT",
        path: leasePath(namespace, name),
        body: { apiVersion: "coordination.k8s.io/v1", kind: "Lease", ...lease }
      })
    })

    const service: KubeService = {
      watchServices,
      watchNodes,
      watchEndpointSlices,
      getService,
      patchServiceMetadata,
      applyServiceStatus,
      recordEvent,
      getSecret,
      createSecret,
      getLease,
      createLease,
      replaceLease
    }
    return service
  })

export class Kube extends Context.Service<Kube, KubeService>()("edge-ccm/kube/Kube") {
  /** The service over an apiserver connection (`KubeHttp`) you provide, e.g. shared with `AccessReview`. */
  static layerHttp(options: KubeOptions): Layer.Layer<Kube, never, KubeHttp> {
    return Layer.effect(Kube, make(options))
  }

  /**
   * Loads the kubeconfig file when given, else in-cluster, else `$KUBECONFIG`, else
   * `~/.kube/config` (see clusterAccess.ts).
   */
  static layer(options: KubeOptions & { readonly kubeconfig?: string | undefined }): Layer.Layer<Kube, KubeError> {
    return Kube.layerHttp(options).pipe(Layer.provide(KubeHttp.layer({ kubeconfig: options.kubeconfig })))
  }
}
