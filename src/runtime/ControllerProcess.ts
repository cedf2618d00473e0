/**
 * The whole controller process as one layer: logging, the Kubernetes client, the router,
 * the controller and its health/metrics server. `edge-ccm run` launches it; an embedding
 * program can launch it too, or compose the pieces itself (see src/index.ts).
 */
import { hostname } from "node:os"
import { Duration, Effect, Layer, type LogLevel } from "effect"
import { Controller } from "../controller/Controller.ts"
import { UpnpGateway } from "../gateway/upnp/UpnpGateway.ts"
import { Kube } from "../kube/Kube.ts"
import { HealthCheck, healthServerLayer } from "./HealthServer.ts"
import { loggingLayer } from "./Logging.ts"
import { parseBindAddress, type RunSettings } from "./Settings.ts"

/** Health from the controller's own view: its loops ticking, its caches synced, the router answering. */
export const controllerHealthCheck = (settings: Pick<RunSettings, "gatewayProbeInterval" | "resyncInterval">) =>
  Layer.effect(
    HealthCheck,
    Effect.gen(function*() {
      const controller = yield* Controller
      // A loop silent for this long is stuck: the liveness probe then restarts the pod.
      const stuckAfter = Math.max(
        60_000,
        3 * Duration.toMillis(settings.gatewayProbeInterval),
        3 * Duration.toMillis(settings.resyncInterval)
      )
      return HealthCheck.of({
        report: Effect.map(controller.health, (health) => {
          const now = Date.now()
          const loopsAlive = now - health.lastProbeAt < stuckAfter && now - health.lastResyncAt < stuckAfter
          return {
            healthy: loopsAlive,
            ready: health.servicesSynced && health.gatewayReachable && !health.excluded,
            details: {
              servicesSynced: health.servicesSynced,
              gatewayReachable: health.gatewayReachable,
              ...(health.gatewayError === undefined ? {} : { gatewayError: health.gatewayError }),
              excludedNode: health.excluded,
              queueDepth: health.queueDepth,
              secondsSinceProbe: Math.round((now - health.lastProbeAt) / 1000),
              secondsSinceResync: Math.round((now - health.lastResyncAt) / 1000)
            }
          }
        })
      })
    })
  )

export const controllerProcessLayer = (settings: RunSettings, logLevel: LogLevel.LogLevel = "Info") => {
  const kube = Kube.layer({ kubeconfig: settings.kubeconfig, instance: settings.nodeName ?? hostname() })
  const gateway = UpnpGateway.layer({ gatewayUrl: settings.gatewayUrl, concurrency: settings.gatewayConcurrency })
  const controller = Controller.layer({
    clusterName: settings.clusterName,
    loadBalancerClass: settings.loadBalancerClass,
    defaultLease: settings.mappingLease,
    ipMode: settings.ipMode,
    resyncInterval: settings.resyncInterval,
    probeInterval: settings.gatewayProbeInterval,
    nodeName: settings.nodeName
  }).pipe(Layer.provide(kube), Layer.provide(gateway))
  const health = healthServerLayer({
    health: parseBindAddress(settings.healthBindAddress),
    metrics: settings.metricsBindAddress === undefined ? undefined : parseBindAddress(settings.metricsBindAddress)
  }).pipe(Layer.provide(controllerHealthCheck(settings)))
  const started = Layer.effectDiscard(
    Effect.log(
      `edge-ccm started: cluster ${settings.clusterName}, class ${settings.loadBalancerClass}, ` +
        `router ${settings.gatewayUrl ?? "discovered by SSDP"}, node ${settings.nodeName ?? "unknown"}, ` +
        `lease ${Duration.format(settings.mappingLease)}, resync ${Duration.format(settings.resyncInterval)}`
    )
  )
  return Layer.mergeAll(health, started).pipe(
    Layer.provideMerge(controller),
    Layer.provide(loggingLayer({ format: settings.logFormat, level: logLevel }))
  )
}
