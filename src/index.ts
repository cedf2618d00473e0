/**
 * edge-cloud-controller-manager as a library: the services and layers an Effect program
 * composes to run the controller itself.
 *
 * ```ts
 * import { Controller, Gateways, Kube, RecordKey } from "edge-cloud-controller-manager"
 * import { NodeRuntime } from "@effect/platform-node"
 * import { Layer } from "effect"
 *
 * Controller.layer({ clusterName: "home" }).pipe(
 *   Layer.provide(RecordKey.layerSecret({ namespace: "edge-ccm-system" })),
 *   Layer.provide(Gateways.layer({ upnp: { gatewayUrl: "http://192.168.1.1:49536/rootDesc.xml" } })),
 *   Layer.provide(Kube.layer({ instance: "my-app" })),
 *   Layer.launch,
 *   NodeRuntime.runMain
 * )
 * ```
 */

// The controller
export { Controller, type ControllerHealth, type ControllerOptions, defaultControllerOptions } from "./controller/Controller.ts"
export {
  ABANDON_MAPPINGS_ANNOTATION,
  FINALIZER,
  LOAD_BALANCER_TYPE_ANNOTATION,
  MAPPING_LEASE_ANNOTATION,
  MAPPINGS_ANNOTATION,
  MAPPINGS_SIGNATURE_ANNOTATION
} from "./controller/ServiceSpec.ts"
export { RECORD_KEY_SECRET, RecordKey, RecordKeyError, type RecordOwner } from "./controller/RecordKey.ts"
export { defaultLeaseRange, type LeaseRange } from "./controller/DurationString.ts"

// Routers
export { PortMapper } from "./gateway/PortMapper.ts"
export type {
  ExternalAddress,
  ExternalIpClass,
  GatewayStatus,
  GrantedMapping,
  MappingEntry,
  MappingRequest,
  Protocol
} from "./gateway/Mapping.ts"
export {
  DoubleNat,
  type GatewayError,
  GatewayNotFound,
  GatewayProtocolError,
  GatewayUnreachable,
  InvalidMapping,
  PortConflict,
  UpnpError
} from "./gateway/GatewayError.ts"
export { UpnpGateway, type UpnpGatewayOptions } from "./gateway/upnp/UpnpGateway.ts"
export { NatPmpGateway, type NatPmpGatewayOptions } from "./gateway/natpmp/NatPmpGateway.ts"
export { PcpGateway, type PcpGatewayOptions } from "./gateway/pcp/PcpGateway.ts"
export {
  type Backend,
  type GatewayChoice,
  Gateways,
  type GatewaysOptions,
  type LoadBalancerType
} from "./gateway/Gateways.ts"
export {
  Discovery,
  type DiscoveryOptions,
  type IgnoredResponder,
  type SearchResult,
  type SsdpResponse
} from "./gateway/upnp/Discovery.ts"
export { GATEWAY_ADDRESS_FLAG, type TrustedRouter } from "./gateway/TrustedRouter.ts"

// Kubernetes
export { Kube, KubeConflict, KubeError, KubeNotFound, type WatchEvent } from "./kube/Kube.ts"
export { AccessReview, type ReviewedUser } from "./kube/AccessReview.ts"

// The process
export { runControllerProcess } from "./runtime/ControllerProcess.ts"
export { LeaderElection, LeaseStore } from "./runtime/LeaderElection.ts"
export { HealthCheck, type HealthReport, healthServerLayer } from "./runtime/HealthServer.ts"
export { metricsServerLayer, secureMetricsServerLayer } from "./runtime/MetricsServer.ts"
export type { RunSettings } from "./runtime/Settings.ts"
