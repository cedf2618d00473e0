/**
 * What a route to the router's IPv6 firewall is (UPnP IGD:2 in `upnp/UpnpFirewall.ts`, PCP in
 * `pcp/PcpFirewall.ts`) and what its actions take and give; `Firewall.ts` puts routes together.
 */
import type {
  FirewallUnavailable,
  GatewayProtocolError,
  GatewayUnreachable,
  PortControlError
} from "./GatewayError.ts"
import type { Protocol } from "./Mapping.ts"
import type { PinholeError } from "./upnp/PinholeError.ts"
import type { PinholeActionError } from "./upnp/Pinholes.ts"
import type { Effect } from "effect"

/** Which protocol opens a pinhole: UPnP IGD:2's firewall service, or a PCP MAP sent over IPv6. */
export type PinholeProtocol = "upnp-igd" | "pcp"

/** Errors of a firewall action or view. */
export type FirewallError =
  | FirewallUnavailable
  | PinholeError
  | PinholeActionError
  | PortControlError
  | GatewayUnreachable
  | GatewayProtocolError

/** What opening one pinhole asks. */
export interface OpenPinhole {
  readonly internalClient: string
  readonly port: number
  readonly protocol: Protocol
  readonly leaseSeconds: number
}

/**
 * The router's handle on one pinhole: UPnP's UniqueID, or the PCP nonce (PCP names a pinhole
 * by node address, protocol and port; the nonce is what lets its owner delete it).
 */
export interface PinholeHandle {
  readonly uniqueId?: number | undefined
  readonly nonce?: string | undefined
}

/** A pinhole held: what renewing or deleting it needs. */
export interface HeldPinhole extends PinholeHandle {
  readonly protocol: Protocol
  readonly port: number
  readonly internalClient: string
  /** The route it was opened through (`FirewallRoute.router`). */
  readonly router: string
}

/** Where a route is: its name in records, and the address the node's source is chosen toward. */
export interface RouteLocation {
  readonly router: string
  readonly routerIp: string
  readonly routerPort: number
}

/** One route's implementation. */
export interface FirewallBackend {
  readonly protocol: PinholeProtocol
  readonly opensLowPorts: boolean
  /** Found once and kept until a call fails; FirewallUnavailable when it opens nothing for us. */
  readonly locate: Effect.Effect<RouteLocation, FirewallError>
  /** The router's boot time, asked afresh (undefined: it does not say). */
  readonly bootedAt: (nodeAddress: string) => Effect.Effect<number | undefined, FirewallError>
  readonly add: (request: OpenPinhole) => Effect.Effect<PinholeHandle, FirewallError>
  readonly update: (pinhole: HeldPinhole, leaseSeconds: number) => Effect.Effect<PinholeHandle, FirewallError>
  readonly remove: (pinhole: HeldPinhole) => Effect.Effect<void, FirewallError>
  /** Drops what `locate` found: the next call finds it again. */
  readonly forget: Effect.Effect<void>
}

