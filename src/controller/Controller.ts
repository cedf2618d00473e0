/**
 * The service controller, composed: the state (the cluster's objects, the routers, the work
 * queue), the services a pass uses (Events, Service writes, full passes, the reconciler), and
 * the loops that feed and drain the queue, each a layer of its own (watches, workers, probes,
 * restart announcements, resync, orphan sweep). Level-triggered: every watch event, resync tick
 * and detected router reboot recomputes the plan from the whole observed state, so a dropped
 * event, a restart or a rebooted router is repaired by the next pass.
 */
import { Context, Duration, Effect, Layer } from "effect"
import type { Gateways } from "../gateway/Gateways.ts"
import type { Kube } from "../kube/Kube.ts"
import { ClusterState, isExcluded } from "./ClusterState.ts"
import { defaultLeaseRange, type LeaseRange } from "./DurationString.ts"
import { FullPass } from "./FullPass.ts"
import { orphanSweepLayer } from "./orphanSweep.ts"
import { probeLoopLayer } from "./probeLoop.ts"
import { Reconciler } from "./Reconciler.ts"
import type { RecordKey } from "./RecordKey.ts"
import { resyncLoopLayer } from "./resyncLoop.ts"
import { restartAnnouncementsLayer } from "./restartAnnouncements.ts"
import { defaultRouterEventsOptions, RouterEvents, type RouterEventsOptions } from "./routerEvents.ts"
import { Routers } from "./Routers.ts"
import { ServiceEvents } from "./ServiceEvents.ts"
import { ServiceWrites } from "./ServiceWrites.ts"
import { watchesLayer } from "./watches.ts"
import { workersLayer } from "./workers.ts"
import { WorkQueue } from "./WorkQueue.ts"

export { EXCLUDE_FROM_LOAD_BALANCERS_LABEL } from "./ClusterState.ts"

/** Everything the controller is told: the cluster's name and class, leases, quotas, timings. */
export interface ControllerOptions extends RouterEventsOptions {
  /** The first part of every mapping's description. */
  readonly clusterName: string
  /** Services of this `spec.loadBalancerClass` are ours without the annotation. */
  readonly loadBalancerClass: string
  readonly defaultLease: Duration.Duration
  /** The leases the mapping-lease annotation may ask for (besides 0). */
  readonly leaseRange: LeaseRange
  /** Router mappings one namespace's Services may hold together; 0: no limit. */
  readonly maxMappingsPerNamespace: number
  readonly ipMode: "VIP" | "Proxy" | undefined
  /** How often every router's table is listed and every Service reconciled from it. */
  readonly resyncInterval: Duration.Duration
  /** The Node this controller runs on (for the exclusion label and local endpoints). */
  readonly nodeName: string | undefined
  /** Services reconciled in parallel (the router's own limit applies beneath). */
  readonly workers: number
}

/** The defaults of `edge-ccm run`. */
export const defaultControllerOptions: ControllerOptions = {
  clusterName: "kubernetes",
  loadBalancerClass: "midokura.com/edge",
  defaultLease: Duration.hours(1),
  leaseRange: defaultLeaseRange,
  maxMappingsPerNamespace: 256,
  ipMode: undefined,
  resyncInterval: Duration.seconds(30),
  ...defaultRouterEventsOptions,
  nodeName: undefined,
  workers: 8
}

/** What the controller says of itself, for the health report. */
export interface ControllerHealth {
  readonly servicesSynced: boolean
  /** The first full pass (router found, table listed, every Service queued) has run. */
  readonly initialPassDone: boolean
  readonly gatewayReachable: boolean
  readonly gatewayError: string | undefined
  /** This node carries the exclude-from-external-load-balancers label: nothing is mapped to it. */
  readonly excluded: boolean
  readonly queueDepth: number
  /** Events waiting to be sent (they yield to the work), those waiting their moment included. */
  readonly eventsQueued: number
  /** Of those, the ones that would go out now, were the work done. */
  readonly eventsDue: number
  /** When the loops last made progress (Clock time, ms): a stuck loop fails the liveness probe. */
  readonly lastProbeAt: number
  readonly lastResyncAt: number
}

/** The running controller. */
export class Controller extends Context.Service<Controller, {
  readonly health: Effect.Effect<ControllerHealth>
  /** Lists the router's table and reconciles every Service now, as after a reboot. */
  readonly fullPass: Effect.Effect<void>
  /** Waits until no Service is queued or being reconciled. */
  readonly idle: Effect.Effect<void>
}>()("edge-ccm/controller/Controller") {
  /** The whole controller over a Kubernetes API, the routers, and the record key. */
  static layer(options: Partial<ControllerOptions> = {}): Layer.Layer<Controller, never, Kube | Gateways | RecordKey> {
    return Controller.layerOver(options).pipe(Layer.provide(Routers.layer))
  }

  /** The controller over the `Routers` given (`Routers.layerTest` in tests). */
  static layerOver(options: Partial<ControllerOptions> = {}): Layer.Layer<Controller, never, Kube | Routers | RecordKey> {
    const settings = { ...defaultControllerOptions, ...options }
    const state = Layer.mergeAll(ClusterState.layer(settings), WorkQueue.layer)
    const services = Layer.mergeAll(ServiceEvents.layer, ServiceWrites.layer, FullPass.layer(settings)).pipe(
      Layer.provideMerge(state)
    )
    const core = Layer.merge(Reconciler.layer(settings), RouterEvents.layer(settings)).pipe(Layer.provideMerge(services))
    const loops = Layer.mergeAll(
      watchesLayer(settings),
      workersLayer(settings),
      probeLoopLayer(settings.probeInterval, settings.probeIntervalSubscribed),
      restartAnnouncementsLayer,
      resyncLoopLayer(settings.resyncInterval),
      orphanSweepLayer(settings)
    )
    return Layer.merge(Layer.effect(Controller, make(settings)), loops).pipe(Layer.provide(core))
  }
}

const make = (options: ControllerOptions) =>
  Effect.gen(function*() {
    const cluster = yield* ClusterState
    const routers = yield* Routers
    const queue = yield* WorkQueue
    const events = yield* ServiceEvents
    const fullPass = yield* FullPass
    return Controller.of({
      health: Effect.gen(function*() {
        const snapshot = yield* cluster.snapshot
        const progress = yield* fullPass.progress
        const gateways = yield* routers.health
        return {
          servicesSynced: snapshot.synced.services,
          initialPassDone: progress.initialPassDone,
          gatewayReachable: gateways.reachable,
          gatewayError: gateways.error,
          excluded: isExcluded(snapshot, options.nodeName),
          queueDepth: yield* queue.depth,
          eventsQueued: yield* events.queued,
          eventsDue: yield* events.due,
          lastProbeAt: gateways.lastProbeAt,
          lastResyncAt: progress.lastResyncAt
        } satisfies ControllerHealth
      }).pipe(Effect.withSpan("Controller.health")),
      fullPass: fullPass.run,
      idle: queue.idle
    })
  })
