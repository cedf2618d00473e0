/**
 * The whole controller process: logging, the Kubernetes client, the health and the metrics
 * servers (always up), and the controller with its router, which runs only while this process
 * leads when leader election is on. `edge-ccm run` runs it; an embedding program can run it
 * too, or compose the pieces itself (see src/index.ts).
 */
import { hostname } from "node:os"
import { NodeFileSystem, NodeHttpClient } from "@effect/platform-node"
import { Clock, Context, Duration, Effect, Layer, type LogLevel, Option, Ref, SubscriptionRef } from "effect"
import { Controller } from "../controller/Controller.ts"
import { RecordKey } from "../controller/RecordKey.ts"
import { ANNOTATION_PREFIX, isBystander } from "../controller/ServiceSpec.ts"
import { Gateways } from "../gateway/Gateways.ts"
import { ipv6DefaultGateway, ipv6DefaultPcpServer, ipv6DefaultRouter } from "../gateway/Ipv6DefaultRoute.ts"
import { Description } from "../gateway/upnp/Description.ts"
import { Firewall } from "../gateway/Firewall.ts"
import { SoapTransport } from "../gateway/upnp/SoapTransport.ts"
import { localIpv6Networks } from "../gateway/upnp/LanGuard.ts"
import { searchFirewallDescription6 } from "../gateway/upnp/SsdpSearch6.ts"
import { AccessReview } from "../kube/AccessReview.ts"
import { Kube } from "../kube/Kube.ts"
import { KubeHttp } from "../kube/KubeHttp.ts"
import { controllerReport, waitingReport } from "./healthReport.ts"
import { HealthCheck, healthServerLayer, loggingTransitions } from "./HealthServer.ts"
import { LeaderElection, LeaseStore } from "./LeaderElection.ts"
import { loggingLayer } from "./Logging.ts"
import { metricsServerLayer } from "./MetricsServer.ts"
import { parseBindAddress, type RunSettings } from "./Settings.ts"
import { processHeap, settleMemory } from "./memorySettle.ts"

/** The controller while it runs (it does not while another replica leads). */
class ActiveController extends Context.Service<ActiveController, Ref.Ref<Option.Option<Controller["Service"]>>>()(
  "edge-ccm/runtime/ActiveController"
) {}

/** The Lease that leader election holds. */
export const LEASE_NAME = "edge-cloud-controller-manager"

/**
 * Health from the controller's own view: its loops ticking, its caches synced, the router
 * answering. A standby replica is healthy and ready: it is doing its job, which is waiting.
 */
const healthCheck = (settings: Pick<RunSettings, "gatewayProbeInterval" | "resyncInterval">) =>
  Layer.effect(
    HealthCheck,
    Effect.gen(function*() {
      const active = yield* ActiveController
      const election = yield* Effect.serviceOption(LeaderElection)
      // A loop silent for this long is stuck: the liveness probe then restarts the pod.
      const stuckAfter = Math.max(
        60_000,
        3 * Duration.toMillis(settings.gatewayProbeInterval),
        3 * Duration.toMillis(settings.resyncInterval)
      )
      return HealthCheck.of({
        report: Effect.gen(function*() {
          const controller = yield* Ref.get(active)
          if (Option.isNone(controller)) {
            const leading = Option.isSome(election) ? yield* SubscriptionRef.get(election.value.isLeader) : true
            const holder = Option.isSome(election) ? yield* election.value.observedHolder : undefined
            return waitingReport({ leading, holder })
          }
          return controllerReport(yield* controller.value.health, { now: yield* Clock.currentTimeMillis, stuckAfter })
        })
      })
    })
  )

/** Runs the controller process until interrupted (SIGTERM leaves every mapping in place). */
export const runControllerProcess = (settings: RunSettings, logLevel: LogLevel.LogLevel = "Info") => {
  const identity = process.env["POD_NAME"] ?? settings.nodeName ?? hostname()
  // One apiserver connection for the controller's calls and for the reviews of /metrics tokens.
  // Only our own annotations are kept of the Services watched, and only the identity of the rest.
  const kube = Layer.merge(
    Kube.layerHttp({ instance: identity, serviceAnnotationPrefixes: [ANNOTATION_PREFIX], bystanderService: isBystander }),
    AccessReview.layerHttp
  ).pipe(Layer.provide(KubeHttp.layer({ kubeconfig: settings.kubeconfig })))
  const controller = Controller.layer({
    clusterName: settings.clusterName,
    loadBalancerClass: settings.loadBalancerClass,
    defaultLease: settings.mappingLease,
    leaseRange: settings.leaseRange,
    maxMappingsPerNamespace: settings.maxMappingsPerNamespace,
    ipMode: settings.ipMode,
    resyncInterval: settings.resyncInterval,
    probeInterval: settings.gatewayProbeInterval,
    probeIntervalSubscribed: settings.gatewayProbeIntervalSubscribed,
    upnpEvents: settings.upnpEvents,
    nodeName: settings.nodeName
  }).pipe(Layer.provide(RecordKey.layerSecret({ namespace: settings.controllerNamespace })))
  // Built once for the process, not per leadership term: a standby finds the router while it
  // waits, so a failover does not also wait for discovery.
  // One router for every protocol: the default gateway unless --gateway-address names another.
  const gateways = Gateways.layer({
    upnp: { gatewayUrl: settings.gatewayUrl, gatewayAddress: settings.gatewayAddress, concurrency: settings.gatewayConcurrency },
    natpmp: { gateway: settings.gatewayAddress, concurrency: settings.gatewayConcurrency },
    pcp: { gateway: settings.gatewayAddress, concurrency: settings.gatewayConcurrency },
    auto: { preference: settings.autoPreference }
  })
  // IPv6 pinholes go to the firewall the flags name, over their own SOAP transport.
  const firewall = Firewall.layer({
    protocol: settings.ipv6.pinholeProtocol,
    defaultRouterIpv6: Effect.provide(ipv6DefaultRouter, NodeFileSystem.layer),
    defaultPcpServer: Effect.provide(ipv6DefaultPcpServer, NodeFileSystem.layer),
    // Neither URL given: the description is searched for over IPv6, from the default route's interface.
    discoverDescription: settings.gatewayUrl === undefined && settings.ipv6.firewallUrl === undefined
      ? Effect.provide(ipv6DefaultGateway, NodeFileSystem.layer).pipe(
        Effect.flatMap((route) =>
          searchFirewallDescription6({
            device: route.device,
            router: settings.ipv6.routerAddress ?? route.gateway,
            lan: localIpv6Networks(route.device)
          })
        )
      )
      : undefined,
    firewallUrl: settings.ipv6.firewallUrl,
    descriptionUrl: settings.gatewayUrl,
    routerIpv6: settings.ipv6.routerAddress,
    leaseSeconds: Duration.toSeconds(settings.ipv6.pinholeLease),
    allowLinkLocal: settings.ipv6.allowLinkLocal,
    allowUniqueLocal: settings.ipv6.allowUniqueLocal
  }).pipe(Layer.provide(Layer.mergeAll(SoapTransport.layer(), Description.layer())), Layer.provide(NodeHttpClient.layerNodeHttp))
  const election = settings.leaderElection === undefined
    ? Layer.empty
    : LeaderElection.layer({
      namespace: settings.leaderElection.namespace,
      name: LEASE_NAME,
      identity,
      leaseDuration: settings.leaderElection.leaseDuration,
      renewDeadline: settings.leaderElection.renewDeadline,
      retryPeriod: settings.leaderElection.retryPeriod
    }).pipe(Layer.provide(LeaseStore.layerKube))
  const base = Layer.mergeAll(election, gateways, firewall, Layer.effect(ActiveController, Ref.make(Option.none()))).pipe(
    Layer.provideMerge(kube)
  )
  const servers = Layer.mergeAll(
    healthServerLayer(parseBindAddress(settings.healthBindAddress)),
    settings.metricsBindAddress === undefined
      ? Layer.empty
      : metricsServerLayer({ address: parseBindAddress(settings.metricsBindAddress), certDir: settings.metricsCertDir })
  ).pipe(Layer.provide(loggingTransitions().pipe(Layer.provide(healthCheck(settings)))))

  const runController = Effect.gen(function*() {
    const active = yield* ActiveController
    yield* Effect.addFinalizer(() => Ref.set(active, Option.none()))
    const context = yield* Layer.build(controller)
    const running = Context.get(context, Controller)
    yield* Ref.set(active, Option.some(running))
    yield* Effect.forkScoped(settleMemory({ idle: running.idle, ...processHeap }))
    return yield* Effect.never
  }).pipe(Effect.scoped)

  const main = Effect.gen(function*() {
    yield* Effect.log(
      `edge-ccm started: cluster ${settings.clusterName}, class ${settings.loadBalancerClass}, ` +
        `router ${
          settings.gatewayUrl ??
            (settings.gatewayAddress === undefined
              ? "the node's default gateway, found by SSDP"
              : `${settings.gatewayAddress} (--gateway-address), found by SSDP`)
        }, node ${settings.nodeName ?? "unknown"}, ` +
        `lease ${Duration.format(settings.mappingLease)}, resync ${Duration.format(settings.resyncInterval)}, ` +
        (settings.leaderElection === undefined
          ? "no leader election"
          : `leader election on Lease ${settings.leaderElection.namespace}/${LEASE_NAME} as ${identity}`)
    )
    const leader = yield* Effect.serviceOption(LeaderElection)
    if (Option.isSome(leader)) {
      const router = yield* Gateways
      yield* router.forType("upnp-igd").pipe(Effect.flatMap((choice) => choice.mapper.status), Effect.ignore, Effect.forkChild)
    }
    return yield* Option.isSome(leader) ? leader.value.run(runController) : runController
  })

  return main.pipe(
    Effect.provide(Layer.merge(base, servers.pipe(Layer.provide(base)))),
    Effect.provide(loggingLayer({ format: settings.logFormat, level: logLevel }))
  )
}
