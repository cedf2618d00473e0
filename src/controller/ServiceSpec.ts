/**
 * What a Service asks of us, read from its spec and annotations: whether it is ours at all,
 * and which router mappings it wants. Pure: no I/O, so the planner and its tests use plain data.
 */
import type { Service } from "../kube/objects.ts"
import { createHash } from "node:crypto"
import { Duration, Result, Schema } from "effect"
import { LoadBalancerType } from "../gateway/Gateways.ts"
import { MAX_DESCRIPTION_BYTES, type Protocol } from "../gateway/Mapping.ts"
import type { ObjectRef } from "../kube/Kube.ts"
import {
  describeLeaseRange,
  DURATION_FORMS,
  DurationString,
  formatDuration,
  type LeaseRange,
  leaseOutOfRange
} from "./DurationString.ts"
import { perServiceObject } from "./perServiceObject.ts"

/** Every annotation this controller reads or writes starts with this. */
export const ANNOTATION_PREFIX = "midokura.com/"
/** Opts a Service in and names its protocol: upnp-igd, nat-pmp, pcp or auto. */
export const LOAD_BALANCER_TYPE_ANNOTATION = "midokura.com/load-balancer-type"
/** The lease each of the Service's mappings asks for (e.g. `2h`; `0`: permanent). */
export const MAPPING_LEASE_ANNOTATION = "midokura.com/mapping-lease"
/** The record of what was mapped for the Service (MappingRecord.ts). */
export const MAPPINGS_ANNOTATION = "midokura.com/mappings"
/** The controller's signature of the record, binding it to this Service (see MappingRecord.ts). */
export const MAPPINGS_SIGNATURE_ANNOTATION = "midokura.com/mappings-signature"
/** `true`: release the Service without deleting its mappings (a router that will not answer). */
export const ABANDON_MAPPINGS_ANNOTATION = "midokura.com/abandon-mappings"
/** Keeps a deleted Service until its mappings are gone. */
export const FINALIZER = "midokura.com/load-balancer-cleanup"

export { LoadBalancerType } from "../gateway/Gateways.ts"

/**
 * A Service this controller has no business with: not a LoadBalancer, and neither our
 * finalizer nor an annotation of ours on it. Its type changing, or our annotation coming, is a
 * change the watch brings whole.
 */
export const isBystander = (service: Service): boolean =>
  service.spec?.type !== "LoadBalancer" &&
  !(service.metadata?.finalizers ?? []).includes(FINALIZER) &&
  !Object.keys(service.metadata?.annotations ?? {}).some((key) => key.startsWith(ANNOTATION_PREFIX))

/** What makes a Service ours besides the annotation. */
export interface SelectionOptions {
  readonly loadBalancerClass: string
}

/** Whether a Service is ours, and with which protocol. */
export type Selection =
  /** Not a LoadBalancer, another class, or no opt-in: ignored silently. */
  | { readonly _tag: "NotOurs" }
  | { readonly _tag: "Ours"; readonly backend: LoadBalancerType }
  /** Opted in, but an annotation cannot be used: a Warning event names it and what is accepted. */
  | { readonly _tag: "Invalid"; readonly annotation: string; readonly reason: string }

/** `namespace/name`: the work queue's key, and how Events and logs name a Service. */
export const serviceKey = (service: Service): string =>
  `${service.metadata?.namespace ?? "default"}/${service.metadata?.name ?? ""}`

/** The reference every write about this Service carries (its uid guards against a namesake). */
export const refOf = (service: Service): ObjectRef => ({
  namespace: service.metadata?.namespace ?? "default",
  name: service.metadata?.name ?? "",
  uid: service.metadata?.uid,
  resourceVersion: service.metadata?.resourceVersion
})

/** Whether a Service is ours (computed once per object version). */
export const selectService = perServiceObject((service: Service, options: SelectionOptions): Selection => {
  if (service.spec?.type !== "LoadBalancer") return { _tag: "NotOurs" }
  const loadBalancerClass = service.spec.loadBalancerClass
  if (loadBalancerClass !== undefined && loadBalancerClass !== options.loadBalancerClass) return { _tag: "NotOurs" }
  const requested = service.metadata?.annotations?.[LOAD_BALANCER_TYPE_ANNOTATION]
  if (requested === undefined) {
    return loadBalancerClass === options.loadBalancerClass ? { _tag: "Ours", backend: "upnp-igd" } : { _tag: "NotOurs" }
  }
  const backend = Schema.decodeUnknownResult(LoadBalancerType)(requested.trim())
  return Result.isSuccess(backend)
    ? { _tag: "Ours", backend: backend.success }
    : {
      _tag: "Invalid",
      annotation: LOAD_BALANCER_TYPE_ANNOTATION,
      reason: `"${requested}" is not a load balancer type; accepted: ${LoadBalancerType.literals.join(", ")}`
    }
})

/** One router mapping a Service port wants. */
export interface DesiredPort {
  /** The Service port's name, or its number when unnamed. */
  readonly portName: string
  readonly protocol: Protocol
  readonly externalPort: number
  readonly internalPort: number
  readonly description: string
}

/** A port of the Service that cannot be mapped, and why (for the port's status error and an event). */
export interface UnmappablePort {
  readonly portName: string
  readonly port: number
  readonly protocol: string
  readonly reason: "UnsupportedProtocol" | "NoNodePort"
  readonly message: string
}

/** Something about a Service's spec that a Warning Event says. */
export interface ServiceWarning {
  readonly reason: "LoadBalancerSourceRangesIgnored" | "IPv6Only" | "InvalidAnnotation"
  readonly message: string
}

/** What a Service of ours asks for: its ports, lease and protocol. */
export interface DesiredService {
  readonly key: string
  readonly namespace: string
  readonly name: string
  readonly uid: string
  /** creationTimestamp in ms: the oldest Service wins a contested port. */
  readonly createdAt: number
  readonly backend: LoadBalancerType
  readonly leaseSeconds: number
  readonly ports: ReadonlyArray<DesiredPort>
  readonly unmappable: ReadonlyArray<UnmappablePort>
  readonly warnings: ReadonlyArray<ServiceWarning>
}

/** What deriving a Service's desired mappings needs. */
export interface DesiredOptions {
  readonly clusterName: string
  readonly defaultLease: Duration.Duration
  /** The leases an annotation may ask for (besides 0, permanent). */
  readonly leaseRange: LeaseRange
}

const decodeLease = Schema.decodeUnknownResult(DurationString)

/** Reads the mappings a selected Service wants. */
export const desiredService = perServiceObject((
  service: Service,
  backend: LoadBalancerType,
  options: DesiredOptions
): DesiredService => {
  const namespace = service.metadata?.namespace ?? "default"
  const name = service.metadata?.name ?? ""
  const warnings: Array<ServiceWarning> = []
  const leaseText = service.metadata?.annotations?.[MAPPING_LEASE_ANNOTATION]
  const lease = leaseText === undefined ? options.defaultLease : leaseOf(leaseText, options, warnings)
  const ipv6Only = service.spec?.ipFamilies !== undefined && service.spec.ipFamilies.length > 0 &&
    service.spec.ipFamilies.every((family) => family === "IPv6")
  if (ipv6Only) {
    warnings.push({ reason: "IPv6Only", message: "the Service is IPv6-only: a router's IPv4 port mapping cannot serve it" })
  }
  const sourceRanges = service.spec?.loadBalancerSourceRanges ?? []
  if (sourceRanges.length > 0) {
    warnings.push({
      reason: "LoadBalancerSourceRangesIgnored",
      message: `loadBalancerSourceRanges (${sourceRanges.join(", ")}) are NOT enforced: ` +
        "a router port mapping is open to every Internet address"
    })
  }
  const ports: Array<DesiredPort> = []
  const unmappable: Array<UnmappablePort> = []
  for (const port of ipv6Only ? [] : service.spec?.ports ?? []) {
    const portName = portNameOf(port)
    const protocol = port.protocol ?? "TCP"
    if (protocol !== "TCP" && protocol !== "UDP") {
      unmappable.push({
        portName,
        port: port.port,
        protocol,
        reason: "UnsupportedProtocol",
        message: `port ${portName}: ${protocol} cannot be forwarded by a router port mapping (TCP and UDP only)`
      })
      continue
    }
    if (port.nodePort === undefined || port.nodePort === 0) {
      unmappable.push({
        portName,
        port: port.port,
        protocol,
        reason: "NoNodePort",
        message: `port ${portName}: no nodePort to forward to (allocateLoadBalancerNodePorts is false?)`
      })
      continue
    }
    ports.push({
      portName,
      protocol,
      externalPort: port.port,
      internalPort: port.nodePort,
      description: mappingDescription(options.clusterName, namespace, name, portName)
    })
  }
  return {
    key: `${namespace}/${name}`,
    namespace,
    name,
    uid: service.metadata?.uid ?? "",
    createdAt: toMillis(service.metadata?.creationTimestamp),
    backend,
    leaseSeconds: Math.round(Duration.toSeconds(lease)),
    ports,
    unmappable,
    warnings
  }
})

/** What a Service asks of the router now: ours and not being deleted; else undefined. */
export const liveDesired = (service: Service, options: SelectionOptions & DesiredOptions): DesiredService | undefined => {
  if (service.metadata?.deletionTimestamp !== undefined) return undefined
  const selection = selectService(service, options)
  return selection._tag === "Ours" ? desiredService(service, selection.backend, options) : undefined
}

/**
 * The annotation's lease, or the default with an `InvalidAnnotation` Warning naming the value
 * and what is allowed: a lease of a second would have the router asked twice a second, one of
 * a year would outlive any record of it.
 */
const leaseOf = (text: string, options: DesiredOptions, warnings: Array<ServiceWarning>): Duration.Duration => {
  const decoded = decodeLease(text)
  const problem = Result.isFailure(decoded)
    ? `not a duration (${DURATION_FORMS})`
    : leaseOutOfRange(decoded.success, options.leaseRange)
  if (problem === undefined && Result.isSuccess(decoded)) return decoded.success
  warnings.push({
    reason: "InvalidAnnotation",
    message: `annotation ${MAPPING_LEASE_ANNOTATION}: ${JSON.stringify(text.slice(0, 64))} is refused: ${problem}; ` +
      `a lease is ${describeLeaseRange(options.leaseRange)}; using the default lease ${formatDuration(options.defaultLease)}`
  })
  return options.defaultLease
}

/** A Service port's name in descriptions: its name, or its number when unnamed. */
export const portNameOf = (port: { readonly name?: string | undefined; readonly port: number }): string =>
  port.name !== undefined && port.name !== "" ? port.name : String(port.port)

const toMillis = (timestamp: Date | string | undefined): number =>
  timestamp === undefined ? 0 : new Date(timestamp).getTime()

export { MAX_DESCRIPTION_BYTES } from "../gateway/Mapping.ts"

/**
 * `<cluster>/<namespace>/<service>/<port>`, as the seed documents. A longer one keeps its
 * prefix and ends in a hash of the whole, so it stays unique and still shows whose it is.
 */
export const mappingDescription = (clusterName: string, namespace: string, name: string, portName: string): string => {
  const full = `${clusterName}/${namespace}/${name}/${portName}`
  if (Buffer.byteLength(full) <= MAX_DESCRIPTION_BYTES) return full
  const hash = createHash("sha256").update(full).digest("hex").slice(0, 8)
  let prefix = full.slice(0, MAX_DESCRIPTION_BYTES - hash.length - 1)
  while (Buffer.byteLength(prefix) > MAX_DESCRIPTION_BYTES - hash.length - 1) prefix = prefix.slice(0, -1)
  return `${prefix}~${hash}`
}

/** Whether a router mapping's description marks it as made by a controller of this cluster. */
export const isClusterDescription = (clusterName: string, description: string): boolean =>
  description.startsWith(`${clusterName}/`)
