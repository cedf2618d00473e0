/**
 * Embedding the controller in your own Effect program: compose its layers with your own
 * configuration (here a cluster name, a fixed router URL and a short lease), and run them
 * beside whatever else your program does.
 *
 *   KUBECONFIG=~/.kube/config ROUTER_URL=http://192.168.1.1:49536/rootDesc.xml \
 *     node examples/embedding/main.ts
 *
 * (From a published install, import from "edge-cloud-controller-manager" instead of ../../src.)
 */
import { NodeRuntime } from "@effect/platform-node"
import { Config, Duration, Effect, Layer } from "effect"
import { Controller, Gateways, Kube, RecordKey, UpnpGateway } from "../../src/index.ts"

const settings = Config.all({
  kubeconfig: Config.String("KUBECONFIG"),
  routerUrl: Config.String("ROUTER_URL"),
  clusterName: Config.String("CLUSTER_NAME").pipe(Config.withDefault("embedded")),
  // Where the Secret holding the key that signs the Services' mapping records lives.
  keyNamespace: Config.String("RECORD_KEY_NAMESPACE").pipe(Config.withDefault("edge-ccm-system"))
})

const program = Effect.gen(function*() {
  const { clusterName, keyNamespace, kubeconfig, routerUrl } = yield* settings
  const controller = Controller.layer({ clusterName, defaultLease: Duration.minutes(10) }).pipe(
    Layer.provide(RecordKey.layerSecret({ namespace: keyNamespace })),
    // One router, spoken to over UPnP (Gateways.layer offers NAT-PMP, PCP and auto as well).
    Layer.provide(Gateways.layerSingle("upnp-igd")),
    Layer.provide(UpnpGateway.layer({ gatewayUrl: routerUrl })),
    Layer.provide(Kube.layer({ kubeconfig, instance: "embedding-example" }))
  )
  // Something of your own, running beside the controller.
  const heartbeat = Layer.effectDiscard(
    Effect.log(`embedded controller running for cluster ${clusterName}`).pipe(Effect.forkScoped)
  )
  return yield* Layer.launch(Layer.merge(controller, heartbeat))
})

NodeRuntime.runMain(program)
