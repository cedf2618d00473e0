/**
 * Everything the controller needs from the Kubernetes API, as one service: watch streams
 * of Services, Nodes and EndpointSlices, and the few writes it makes (finalizer and
 * annotations, load-balancer status, Events, the leader Lease). It knows nothing of routers.
 */
import type {
  ConfigurationOptions,
  CoordinationV1Api,
  CoreV1Api,
  DiscoveryV1Api,
  EventsV1Api,
  ObservableMiddleware,
  V1EndpointSlice,
  V1Lease,
  V1Node,
  V1Secret,
  V1Service
} from "@kubernetes/client-node"
import {
  CoordinationV1Api as CoordinationV1ApiClient,
  CoreV1Api as CoreV1ApiClient,
  DiscoveryV1Api as DiscoveryV1ApiClient,
  EventsV1Api as EventsV1ApiClient,
  KubeConfig,
  Observable,
  PatchStrategy,
  setHeaderOptions,
  Watch
} from "@kubernetes/client-node"
import { Clock, Config, Context, Duration, Effect, Layer, Option, Random, Stream } from "effect"
import { hostname } from "node:os"
import type { PageParams, WatchClient, WatchTuning } from "./clientNodeSource.ts"
import { makeSource, watchIdleTimeoutOf } from "./clientNodeSource.ts"
import type { KubeCallContext, KubeFailure } from "./KubeError.ts"
import { KeptAliveConnections } from "./keptAliveClients.ts"
import { fromCause, KubeConflict, KubeError, KubeNotFound } from "./KubeError.ts"
import type { ListWatchOptions, WatchEvent } from "./listWatch.ts"
import { listWatch } from "./listWatch.ts"
import type { EventSpec, ObjectRef, ServiceMetadataChange, ServiceStatusChange } from "./requests.ts"
import { eventBody, FIELD_MANAGER, serviceMetadataPatch, serviceStatusApply } from "./requests.ts"

export type { WatchEvent } from "./listWatch.ts"
export { watchRestarts } from "./listWatch.ts"
export type { EventSpec, ObjectRef, ServiceMetadataChange, ServiceStatusChange } from "./requests.ts"
export { FIELD_MANAGER, REPORTING_CONTROLLER } from "./requests.ts"
export { KubeConflict, KubeError, KubeNotFound } from "./KubeError.ts"

/** The client-node calls kube/ makes; tests substitute recording fakes. */
export interface KubeApis {
  readonly core: Pick<
    CoreV1Api,
    | "listServiceForAllNamespaces"
    | "listNode"
    | "readNamespacedService"
    | "patchNamespacedService"
    | "patchNamespacedServiceStatus"
    | "readNamespacedSecret"
    | "createNamespacedSecret"
  >
  readonly discovery: Pick<DiscoveryV1Api, "listEndpointSliceForAllNamespaces">
  readonly events: Pick<EventsV1Api, "createNamespacedEvent">
  readonly coordination: Pick<CoordinationV1Api, "readNamespacedLease" | "createNamespacedLease" | "replaceNamespacedLease">
  readonly watch: WatchClient
}

export interface KubeOptions {
  /** `reportingInstance` of Events: the pod (or process) name. */
  readonly instance: string
  /** Backoff and watch tuning; the defaults suit production. */
  readonly watch?: (ListWatchOptions & WatchTuning) | undefined
}

export interface KubeService {
  /**
   * List, then watch from the list's resourceVersion; relist on 410 Gone; jittered
   * exponential backoff (1 s → 30 s) and resume on every other failure. One connection,
   * cluster-wide. Never ends, never fails: failures are logged and counted in
   * `edge_ccm_watch_restarts_total`. Each run of the stream opens its own connection.
   */
  readonly watchServices: Stream.Stream<WatchEvent<V1Service>>
  readonly watchNodes: Stream.Stream<WatchEvent<V1Node>>
  /** discovery.k8s.io/v1, all namespaces. */
  readonly watchEndpointSlices: Stream.Stream<WatchEvent<V1EndpointSlice>>
  /** The Service, or `undefined` when it does not exist. */
  readonly getService: (namespace: string, name: string) => Effect.Effect<V1Service | undefined, KubeError>
  /**
   * Replaces the finalizer list and sets/removes annotations (`null` removes) in one merge
   * patch carrying `metadata.resourceVersion`: a stale view fails with `KubeConflict`
   * rather than overwriting someone else's change. Returns the updated Service.
   */
  readonly patchServiceMetadata: (
    ref: ObjectRef & { readonly resourceVersion: string },
    change: ServiceMetadataChange
  ) => Effect.Effect<V1Service, KubeConflict | KubeNotFound | KubeError>
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
  ) => Effect.Effect<V1Service, KubeNotFound | KubeError>
  /** Creates an `events.k8s.io/v1` Event with every required field. Failures are returned, never thrown. */
  readonly recordEvent: (event: EventSpec) => Effect.Effect<void, KubeError>
  /** The Secret, or `undefined` when it does not exist. */
  readonly getSecret: (namespace: string, name: string) => Effect.Effect<V1Secret | undefined, KubeError>
  /** Creates a Secret; `KubeConflict` when it already exists. */
  readonly createSecret: (
    secret: V1Secret & { readonly metadata: { readonly namespace: string; readonly name: string } }
  ) => Effect.Effect<V1Secret, KubeConflict | KubeError>
  /** The Lease, or `undefined` when it does not exist. */
  readonly getLease: (namespace: string, name: string) => Effect.Effect<V1Lease | undefined, KubeError>
  /** Creates a Lease; `KubeConflict` when it already exists. */
  readonly createLease: (lease: V1Lease & { readonly metadata: { readonly namespace: string; readonly name: string } }) => Effect.Effect<V1Lease, KubeConflict | KubeError>
  /** Replaces a Lease; its `metadata.resourceVersion` is a precondition (`KubeConflict` when stale). */
  readonly replaceLease: (lease: V1Lease & { readonly metadata: { readonly namespace: string; readonly name: string; readonly resourceVersion: string } }) => Effect.Effect<V1Lease, KubeConflict | KubeNotFound | KubeError>
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

/** Hands the fiber's abort signal to the HTTP request, so an interrupted call does not linger. */
const abortOn = (signal: AbortSignal): ObservableMiddleware => ({
  pre: (request) => {
    request.setSignal(signal)
    return new Observable(Promise.resolve(request))
  },
  post: (response) => new Observable(Promise.resolve(response))
})

/** Per-request client-node options: the abort signal and, for patches, the patch type. */
export const requestOptions = (signal: AbortSignal, contentType?: PatchStrategy): ConfigurationOptions => {
  const base: ConfigurationOptions = { middleware: [abortOn(signal)], middlewareMergeStrategy: "append" }
  return contentType === undefined ? base : setHeaderOptions("Content-Type", contentType, base)
}

const call = <A>(ctx: KubeCallContext, f: (signal: AbortSignal) => Promise<A>): Effect.Effect<A, KubeFailure> =>
  Effect.tryPromise({ try: f, catch: (cause) => fromCause(ctx, cause) })

const withoutNotFound = <A>(
  effect: Effect.Effect<A, KubeFailure>
): Effect.Effect<A | undefined, KubeError | KubeConflict> =>
  Effect.catchTag(effect, "KubeNotFound", () => Effect.succeed(undefined))

/** Builds the service over the given client-node APIs. */
export const make = (apis: KubeApis, options: KubeOptions): Effect.Effect<KubeService> =>
  Effect.sync(() => {
    const tuning = options.watch
    const pageOf = (params: PageParams) => ({
      limit: params.limit,
      ...(params._continue !== undefined ? { _continue: params._continue } : {})
    })

    const watchServices = listWatch(
      makeSource<V1Service>({
        resource: "services",
        path: "/api/v1/services",
        model: "V1Service",
        watch: apis.watch,
        list: (params, signal) => apis.core.listServiceForAllNamespaces(pageOf(params), requestOptions(signal)),
        tuning
      }),
      tuning
    )
    const watchNodes = listWatch(
      makeSource<V1Node>({
        resource: "nodes",
        path: "/api/v1/nodes",
        model: "V1Node",
        watch: apis.watch,
        list: (params, signal) => apis.core.listNode(pageOf(params), requestOptions(signal)),
        tuning
      }),
      tuning
    )
    const watchEndpointSlices = listWatch(
      makeSource<V1EndpointSlice>({
        resource: "endpointslices",
        path: "/apis/discovery.k8s.io/v1/endpointslices",
        model: "V1EndpointSlice",
        watch: apis.watch,
        list: (params, signal) => apis.discovery.listEndpointSliceForAllNamespaces(pageOf(params), requestOptions(signal)),
        tuning
      }),
      tuning
    )

    const getService = Effect.fn("Kube.getService")(function*(namespace: string, name: string) {
      return yield* call(
        { verb: "get", resource: "services", namespace, name },
        (signal) => apis.core.readNamespacedService({ namespace, name }, requestOptions(signal))
      ).pipe(withoutNotFound, Effect.mapError(onlyKubeError))
    })

    const patchServiceMetadata = Effect.fn("Kube.patchServiceMetadata")(function*(
      ref: ObjectRef & { readonly resourceVersion: string },
      change: ServiceMetadataChange
    ) {
      return yield* call(
        { verb: "patch", resource: "services", namespace: ref.namespace, name: ref.name },
        (signal) =>
          apis.core.patchNamespacedService(
            {
              namespace: ref.namespace,
              name: ref.name,
              body: serviceMetadataPatch(ref.resourceVersion, change),
              fieldManager: FIELD_MANAGER
            },
            requestOptions(signal, PatchStrategy.MergePatch)
          )
      )
    })

    const applyServiceStatus = Effect.fn("Kube.applyServiceStatus")(function*(
      ref: ObjectRef,
      status: ServiceStatusChange
    ) {
      const ctx = { verb: "patch", resource: "services/status", namespace: ref.namespace, name: ref.name }
      return yield* call(ctx, (signal) =>
        apis.core.patchNamespacedServiceStatus(
          {
            namespace: ref.namespace,
            name: ref.name,
            body: serviceStatusApply(ref, status),
            fieldManager: FIELD_MANAGER,
            force: true
          },
          requestOptions(signal, PatchStrategy.ServerSideApply)
        )).pipe(
          // Apply to a missing Service or to one re-created under the same name fails as
          // 409 or 422 depending on the case; a read tells which.
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
      const namespace = body.metadata?.namespace ?? "default"
      yield* call(
        { verb: "create", resource: "events.events.k8s.io", namespace },
        (signal) => apis.events.createNamespacedEvent({ namespace, body }, requestOptions(signal))
      ).pipe(Effect.mapError(onlyKubeError))
    })

    const getSecret = Effect.fn("Kube.getSecret")(function*(namespace: string, name: string) {
      return yield* call(
        { verb: "get", resource: "secrets", namespace, name },
        (signal) => apis.core.readNamespacedSecret({ namespace, name }, requestOptions(signal))
      ).pipe(withoutNotFound, Effect.mapError(onlyKubeError))
    })

    const createSecret = Effect.fn("Kube.createSecret")(function*(
      secret: V1Secret & { readonly metadata: { readonly namespace: string; readonly name: string } }
    ) {
      const { name, namespace } = secret.metadata
      return yield* call(
        { verb: "create", resource: "secrets", namespace, name },
        (signal) => apis.core.createNamespacedSecret({ namespace, body: secret }, requestOptions(signal))
      ).pipe(Effect.catchTag("KubeNotFound", (error) => Effect.fail(onlyKubeError(error))))
    })

    const getLease = Effect.fn("Kube.getLease")(function*(namespace: string, name: string) {
      return yield* call(
        { verb: "get", resource: "leases.coordination.k8s.io", namespace, name },
        (signal) => apis.coordination.readNamespacedLease({ namespace, name }, requestOptions(signal))
      ).pipe(withoutNotFound, Effect.mapError(onlyKubeError))
    })

    const createLease = Effect.fn("Kube.createLease")(function*(
      lease: V1Lease & { readonly metadata: { readonly namespace: string; readonly name: string } }
    ) {
      const { name, namespace } = lease.metadata
      return yield* call(
        { verb: "create", resource: "leases.coordination.k8s.io", namespace, name },
        (signal) => apis.coordination.createNamespacedLease({ namespace, body: lease }, requestOptions(signal))
      ).pipe(Effect.catchTag("KubeNotFound", (error) => Effect.fail(onlyKubeError(error))))
    })

    const replaceLease = Effect.fn("Kube.replaceLease")(function*(
      lease: V1Lease & {
        readonly metadata: { readonly namespace: string; readonly name: string; readonly resourceVersion: string }
      }
    ) {
      const { name, namespace } = lease.metadata
      return yield* call(
        { verb: "update", resource: "leases.coordination.k8s.io", namespace, name },
        (signal) =>
          apis.coordination.replaceNamespacedLease({ namespace, name, body: lease }, requestOptions(signal))
      )
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

/**
 * The client-node APIs for one kubeconfig. client-node aborts a watch after 30 s without a
 * byte, but an idle apiserver can stay silent for two minutes between bookmarks; the
 * watch's own inactivity limit is raised past the server-side watch duration instead.
 */
export const apisFromKubeConfig = (kc: KubeConfig, tuning?: WatchTuning): KubeApis => {
  const watch = new Watch(kc)
  Object.assign(watch, { requestTimeoutMs: Duration.toMillis(watchIdleTimeoutOf(tuning)) })
  const connections = new KeptAliveConnections(kc)
  return {
    core: connections.client(CoreV1ApiClient),
    discovery: connections.client(DiscoveryV1ApiClient),
    events: connections.client(EventsV1ApiClient),
    coordination: connections.client(CoordinationV1ApiClient),
    watch
  }
}

const configError = (message: string) =>
  new KubeError({ verb: "load", resource: "kubeconfig", reason: "InvalidKubeconfig", message })

/**
 * Loads a kubeconfig: the given file, else the in-cluster service account (when
 * `KUBERNETES_SERVICE_HOST` is set), else client-node's default rules (`KUBECONFIG`,
 * `~/.kube/config`).
 */
export const loadKubeConfig = Effect.fn("Kube.loadKubeConfig")(function*(kubeconfig: string | undefined) {
  const inCluster = yield* Config.String("KUBERNETES_SERVICE_HOST").pipe(
    Config.option,
    Effect.mapError((error) => configError(`cannot read KUBERNETES_SERVICE_HOST: ${error.message}`))
  )
  const kc = new KubeConfig()
  const source = kubeconfig !== undefined
    ? `kubeconfig ${kubeconfig}`
    : Option.isSome(inCluster) && inCluster.value !== ""
    ? "the in-cluster service account"
    : "the default kubeconfig"
  yield* Effect.try({
    try: () => {
      if (kubeconfig !== undefined) kc.loadFromFile(kubeconfig)
      else if (Option.isSome(inCluster) && inCluster.value !== "") kc.loadFromCluster()
      else kc.loadFromDefault()
    },
    catch: (cause) => configError(`cannot load ${source}: ${cause instanceof Error ? cause.message : String(cause)}`)
  })
  if (kc.getCurrentCluster() === null) {
    return yield* configError(`${source} names no current cluster`)
  }
  return kc
})

export class Kube extends Context.Service<Kube, KubeService>()("edge-ccm/kube/Kube") {
  /** The service over an already loaded kubeconfig. */
  static layerFromKubeConfig(kc: KubeConfig, options: KubeOptions): Layer.Layer<Kube> {
    return Layer.effect(Kube, make(apisFromKubeConfig(kc, options.watch), options))
  }

  /** The service over client-node APIs given directly (tests pass fakes). */
  static layerFromApis(apis: KubeApis, options: KubeOptions): Layer.Layer<Kube> {
    return Layer.effect(Kube, make(apis, options))
  }

  /**
   * In-cluster, else the default loading rules; Events name `POD_NAME` (else the host
   * name) as their reporting instance.
   */
  static readonly layerFromDefault: Layer.Layer<Kube, KubeError> = Layer.effect(
    Kube,
    Effect.gen(function*() {
      const instance = yield* Config.String("POD_NAME").pipe(
        Config.withDefault(hostname()),
        Effect.mapError((error) => configError(`cannot read POD_NAME: ${error.message}`))
      )
      const kc = yield* loadKubeConfig(undefined)
      return yield* make(apisFromKubeConfig(kc), { instance })
    })
  )

  /** Loads the kubeconfig file when given, else in-cluster, else the default loading rules. */
  static layer(options: KubeOptions & { readonly kubeconfig?: string | undefined }): Layer.Layer<Kube, KubeError> {
    return Layer.effect(
      Kube,
      loadKubeConfig(options.kubeconfig).pipe(
        Effect.flatMap((kc) => make(apisFromKubeConfig(kc, options.watch), options))
      )
    )
  }
}
