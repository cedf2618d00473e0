/**
 * The writes a pass makes on its Service: the metadata (our finalizer and the signed record, by
 * a merge patch carrying the resourceVersion it read) and the status (server-side apply on the
 * status subresource). Each version written is remembered in `ClusterState`, so the watch's echo
 * of our own write is no reason for another pass.
 */
import { Context, Effect, Layer } from "effect"
import { Kube, type KubeConflict, type KubeError, type KubeNotFound } from "../kube/Kube.ts"
import type { Service } from "../kube/objects.ts"
import { ClusterState } from "./ClusterState.ts"
import { recordAnnotations, type RecordedMapping } from "./MappingRecord.ts"
import { pinholeAnnotations, PINHOLES_ANNOTATION, PINHOLES_SIGNATURE_ANNOTATION, type RecordedPinhole } from "./PinholeRecord.ts"
import { RecordKey } from "./RecordKey.ts"
import { FINALIZER, MAPPINGS_ANNOTATION, MAPPINGS_SIGNATURE_ANNOTATION, refOf } from "./ServiceSpec.ts"
import { type LoadBalancerStatus, toV1Status } from "./status.ts"

/** What a metadata write sets. */
export interface MetadataChange {
  /** The record to write, signed for this Service. */
  readonly record: ReadonlyArray<RecordedMapping>
  /** Add our finalizer (kept if there). */
  readonly finalize: boolean
}

/** Writes on Services, each remembered as our own. */
export class ServiceWrites extends Context.Service<ServiceWrites, {
  /** Writes the record (and the finalizer); fails with `KubeConflict` when the Service changed since it was read. */
  readonly metadata: (service: Service, change: MetadataChange) => Effect.Effect<Service, KubeConflict | KubeNotFound | KubeError>
  /** Writes the record of the Service's IPv6 pinholes, signed (removed when empty). */
  readonly pinholes: (
    service: Service,
    record: ReadonlyArray<RecordedPinhole>
  ) => Effect.Effect<Service, KubeConflict | KubeNotFound | KubeError>
  /** Writes `status.loadBalancer`. */
  readonly status: (service: Service, status: LoadBalancerStatus) => Effect.Effect<Service, KubeNotFound | KubeError>
  /** Clears `status.loadBalancer` (a Service no longer ours). */
  readonly clearStatus: (service: Service) => Effect.Effect<void, KubeNotFound | KubeError>
  /** Removes our finalizer and the record: the Service's mappings are gone (or abandoned). */
  readonly release: (service: Service) => Effect.Effect<Service, KubeConflict | KubeNotFound | KubeError>
}>()("edge-ccm/controller/ServiceWrites") {
  /** Writes through `Kube`. */
  static readonly layer: Layer.Layer<ServiceWrites, never, Kube | ClusterState | RecordKey> = Layer.effect(
    ServiceWrites,
    Effect.gen(function*() {
      const kube = yield* Kube
      const cluster = yield* ClusterState
      const key = yield* RecordKey

      const patch = (service: Service, change: Parameters<Kube["Service"]["patchServiceMetadata"]>[1]) =>
        kube.patchServiceMetadata({ ...refOf(service), resourceVersion: service.metadata?.resourceVersion ?? "" }, change).pipe(
          Effect.tap(cluster.wrote)
        )

      return ServiceWrites.of({
        metadata: Effect.fn("ServiceWrites.metadata")(function*(service: Service, change: MetadataChange) {
          const finalizers = service.metadata?.finalizers ?? []
          return yield* patch(service, {
            ...(change.finalize ? { finalizers: finalizers.includes(FINALIZER) ? finalizers : [...finalizers, FINALIZER] } : {}),
            annotations: recordAnnotations(service, change.record, key)
          })
        }),
        pinholes: Effect.fn("ServiceWrites.pinholes")(function*(service: Service, record: ReadonlyArray<RecordedPinhole>) {
          return yield* patch(service, { annotations: pinholeAnnotations(service, record, key) })
        }),
        status: Effect.fn("ServiceWrites.status")(function*(service: Service, status: LoadBalancerStatus) {
          const written = yield* kube.applyServiceStatus(refOf(service), { loadBalancer: toV1Status(status) })
          // An apply has no resourceVersion precondition: its answer may carry someone else's
          // change made since this pass read the Service, whose echo must not be skipped.
          if (sameInputs(written, service)) yield* cluster.wrote(written)
          return written
        }),
        clearStatus: Effect.fn("ServiceWrites.clearStatus")(function*(service: Service) {
          yield* kube.applyServiceStatus(refOf(service), { loadBalancer: {} })
        }),
        release: Effect.fn("ServiceWrites.release")(function*(service: Service) {
          return yield* patch(service, {
            finalizers: (service.metadata?.finalizers ?? []).filter((f) => f !== FINALIZER),
            annotations: {
              [MAPPINGS_ANNOTATION]: null,
              [MAPPINGS_SIGNATURE_ANNOTATION]: null,
              [PINHOLES_ANNOTATION]: null,
              [PINHOLES_SIGNATURE_ANNOTATION]: null
            }
          })
        })
      })
    })
  )
}

/** Whether two versions of a Service ask for the same thing (what a pass reads, status aside). */
const sameInputs = (a: Service, b: Service): boolean =>
  JSON.stringify([a.spec, a.metadata?.annotations, a.metadata?.labels, a.metadata?.deletionTimestamp, a.metadata?.finalizers]) ===
    JSON.stringify([b.spec, b.metadata?.annotations, b.metadata?.labels, b.metadata?.deletionTimestamp, b.metadata?.finalizers])
