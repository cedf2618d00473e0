/**
 * What a Service shows in `kubectl get svc`, computed from the outcome of each of its ports;
 * pure, like the planner.
 */
import type { ExternalAddress } from "../gateway/Mapping.ts"
import type { LoadBalancerIngress, LoadBalancerStatus as KubeLoadBalancerStatus } from "../kube/objects.ts"
import { compareText } from "./MappingRecord.ts"
import type { DesiredPort, UnmappablePort } from "./ServiceSpec.ts"

/** Why a port is not mapped: its status error is `midokura.com/<reason>`. */
export type PortErrorReason =
  | "PortConflict"
  | "QuotaExceeded"
  | "DoubleNAT"
  | "GatewayUnreachable"
  | "MappingFailed"
  | "UnsupportedProtocol"
  | "NoNodePort"

/** What became of one port in a pass. */
export type PortOutcome =
  | { readonly _tag: "Mapped"; readonly port: DesiredPort }
  | {
    readonly _tag: "Failed"
    readonly port: DesiredPort
    readonly reason: PortErrorReason
    readonly message: string
    /** When the failure has a known end (an old mapping's lease), retry then rather than by backoff. */
    readonly retryAfterSeconds?: number
    /** Whether trying again can help without a change on the router (default: yes). */
    readonly retryable?: boolean
  }

/** `status.loadBalancer` as this controller writes it. */
export interface LoadBalancerStatus {
  readonly ingress: ReadonlyArray<{
    readonly ip: string
    readonly ipMode?: "VIP" | "Proxy"
    readonly ports: ReadonlyArray<{ readonly port: number; readonly protocol: string; readonly error?: string }>
  }>
}

/** The API's provider-specific error format: `midokura.com/CamelCase`. */
export const portErrorValue = (reason: PortErrorReason): string => `midokura.com/${reason}`

/**
 * The address is published only when the router's address is public (never behind a double
 * NAT); every port is listed, with its error when it failed, so a conflict shows in the status.
 */
export const serviceStatus = (
  outcomes: ReadonlyArray<PortOutcome>,
  unmappable: ReadonlyArray<UnmappablePort>,
  externalAddress: ExternalAddress,
  ipMode: "VIP" | "Proxy" | undefined
): LoadBalancerStatus => {
  if (externalAddress.class !== "public" || externalAddress.ip === undefined) return { ingress: [] }
  // The router itself said it cannot forward (double NAT), whatever its last reported address.
  if (outcomes.some((outcome) => outcome._tag === "Failed" && outcome.reason === "DoubleNAT")) return { ingress: [] }
  if (outcomes.length === 0 && unmappable.length === 0) return { ingress: [] }
  const ports = [
    ...outcomes.map((outcome) =>
      outcome._tag === "Mapped"
        ? { port: outcome.port.externalPort, protocol: outcome.port.protocol }
        : { port: outcome.port.externalPort, protocol: outcome.port.protocol, error: portErrorValue(outcome.reason) }
    ),
    ...unmappable.map((port) => ({ port: port.port, protocol: port.protocol, error: portErrorValue(port.reason) }))
  ].sort((a, b) => a.port - b.port || compareText(a.protocol, b.protocol))
  return {
    ingress: [{ ip: externalAddress.ip, ...(ipMode === undefined ? {} : { ipMode }), ports }]
  }
}

/** Compares what the Service shows with what it should show, ignoring fields we never write. */
export const sameStatus = (current: KubeLoadBalancerStatus | undefined, next: LoadBalancerStatus): boolean => {
  const normalize = (ingress: ReadonlyArray<LoadBalancerIngress | LoadBalancerStatus["ingress"][number]>) =>
    JSON.stringify(ingress.map((i) => ({
      ip: i.ip,
      // The apiserver fills in VIP when we leave ipMode unset.
      ipMode: i.ipMode ?? "VIP",
      ports: (i.ports ?? []).map((p) => ({ port: p.port, protocol: p.protocol, error: p.error }))
    })))
  return normalize(current?.ingress ?? []) === normalize(next.ingress)
}

/** The status in the API's shape, for the status subresource. */
export const toV1Status = (status: LoadBalancerStatus) => ({
  ingress: status.ingress.map((ingress) => ({
    ip: ingress.ip,
    ...(ingress.ipMode === undefined ? {} : { ipMode: ingress.ipMode }),
    ports: ingress.ports.map((port) => ({ ...port }))
  }))
})
