/**
 * One pass over one Service key: read it from the cluster state, decide whether it is to be
 * applied (ours and alive) or cleaned up (deleted, or no longer ours, with our finalizer still
 * on), and do that. Fails with a typed `ReconcileError`; the workers hand it to the error policy.
 */
import { Context, Effect, Layer, Option } from "effect"
import { Firewall, firewallOff } from "../gateway/Firewall.ts"
import type { Service } from "../kube/objects.ts"
import { apply } from "./apply.ts"
import { cleanup } from "./cleanup.ts"
import { ClusterState } from "./ClusterState.ts"
import type { ReconcileError } from "./errorPolicy.ts"
import { withFinalizer } from "./finalizer.ts"
import type { PassContext, Reconciled, ReconcilerOptions } from "./passContext.ts"
import { RecordKey } from "./RecordKey.ts"
import { Routers } from "./Routers.ts"
import { ServiceEvents } from "./ServiceEvents.ts"
import { desiredService, selectService } from "./ServiceSpec.ts"
import { ServiceWrites } from "./ServiceWrites.ts"

/** Reconciles Services, one key per call. */
export class Reconciler extends Context.Service<Reconciler, {
  /** One pass over the Service under `key`; `verify`: read its ports from the router, not the cache. */
  readonly reconcile: (key: string, verify: boolean) => Effect.Effect<Reconciled, ReconcileError>
}>()("edge-ccm/controller/Reconciler") {
  /** Passes over the cluster state and the routers, writing through `ServiceWrites`. */
  static layer(
    options: ReconcilerOptions
  ): Layer.Layer<Reconciler, never, ClusterState | Routers | ServiceEvents | ServiceWrites | RecordKey> {
    return Layer.effect(
      Reconciler,
      Effect.gen(function*() {
        const context: PassContext = {
          options,
          recordCheck: { key: yield* RecordKey, clusterName: options.clusterName },
          cluster: yield* ClusterState,
          routers: yield* Routers,
          // Optional: a controller built without one publishes no IPv6, and says so per Service.
          firewall: Option.getOrElse(
            yield* Effect.serviceOption(Firewall),
            () => firewallOff("IPv6 pinholes are not configured in this controller")
          ),
          events: yield* ServiceEvents,
          writes: yield* ServiceWrites
        }
        return Reconciler.of({
          reconcile: Effect.fn("Reconciler.reconcile")(
            function*(key: string, verify: boolean) {
              const service = yield* context.cluster.service(key)
              if (service === undefined) {
                yield* context.events.forget(key)
                return done
              }
              return yield* pass(context, service, verify)
            },
            (effect, key) => Effect.annotateLogs(effect, { service: key })
          )
        })
      })
    )
  }
}

const done: Reconciled = { renewAfter: undefined }

const pass = (context: PassContext, service: Service, verify: boolean) => {
  const selection = selectService(service, context.options)
  const deleting = service.metadata?.deletionTimestamp !== undefined
  if (selection._tag === "Invalid" && !deleting) {
    return context.events.conditions(service, [{
      type: "Warning",
      reason: "InvalidAnnotation",
      action: "Validate",
      note: `${selection.reason}; the Service's mappings are left as they are`
    }]).pipe(Effect.as(done))
  }
  return withFinalizer<Reconciled, ReconcileError, never>(service, {
    live: !deleting && selection._tag === "Ours",
    apply: (finalized) =>
      selection._tag === "Ours"
        ? apply(context, service, desiredService(service, selection.backend, context.options), { verify, finalized })
        : Effect.succeed(done),
    cleanup: cleanup(context, service),
    release: context.writes.release,
    released: (event) =>
      context.events.send(service, event).pipe(Effect.andThen(context.events.forget(`${service.metadata?.namespace ?? "default"}/${service.metadata?.name ?? ""}`)))
  }).pipe(Effect.map((result) => result ?? done))
}
