/**
 * What a router can hold: port mappings and its own external address, in terms that mean
 * the same for UPnP IGD, NAT-PMP and PCP. Nothing here knows about Kubernetes.
 */
import { Schema } from "effect"

/** The transport protocols a router port mapping can forward. */
export const Protocol = Schema.Literals(["TCP", "UDP"])
/** `TCP` or `UDP`. */
export type Protocol = typeof Protocol.Type

/** The router protocols spoken: UPnP IGD, NAT-PMP (RFC 6886), PCP (RFC 6887). The one list of them. */
export const Backend = Schema.Literals(["upnp-igd", "nat-pmp", "pcp"])
/** `upnp-igd`, `nat-pmp` or `pcp`. */
export type Backend = typeof Backend.Type

/** A port a router can forward: 1-65535 (0 is the wildcard that routers refuse, code 716). */
export const MappablePort = Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 65535 }))

/** Whether a number is a port a router can forward (`MappablePort`): every port check uses this. */
export const isMappablePort: (port: number) => boolean = Schema.is(MappablePort)

/** The longest description miniupnpd returns intact: it appends garbage from byte 64 on. */
export const MAX_DESCRIPTION_BYTES = 63

/** What the caller asks a router to forward. */
export interface MappingRequest {
  readonly externalPort: number
  readonly protocol: Protocol
  readonly internalPort: number
  /** Defaults to the local address of our connection to the router. */
  readonly internalClient?: string | undefined
  /** At most `MAX_DESCRIPTION_BYTES`: miniupnpd returns longer descriptions with garbage appended. */
  readonly description: string
  /** Seconds; 0 asks for a permanent mapping. */
  readonly leaseSeconds: number
  /** Overwrite a mapping that exists under another description (never one of another host). */
  readonly force?: boolean | undefined
  /**
   * The caller has just read this port's entry itself (a renewal, or a planner that verified
   * ownership), so the client skips its own GetSpecificPortMappingEntry before adding.
   */
  readonly ownershipVerified?: boolean | undefined
  /**
   * UPnP: read the mapping back after adding it, since some routers report success and create
   * nothing (default true). The controller leaves it to its next listing for a first add.
   */
  readonly readBack?: boolean | undefined
  /** PCP: the nonce of an existing mapping, to renew it (a new one is drawn when absent). */
  readonly nonce?: string | undefined
}

/** One row of a router's mapping table, as the router reports it. */
export interface MappingEntry {
  readonly externalPort: number
  readonly protocol: Protocol
  readonly internalClient: string
  readonly internalPort: number
  readonly description: string
  /** Remaining seconds (0 = permanent) where the router says; undefined where it cannot. */
  readonly leaseDuration: number | undefined
  readonly enabled: boolean
  readonly remoteHost: string
}

/** What the router actually granted: the port may differ (AddAnyPortMapping, NAT-PMP, PCP). */
export interface GrantedMapping {
  readonly externalPort: number
  readonly protocol: Protocol
  readonly internalClient: string
  readonly internalPort: number
  readonly description: string
  readonly leaseSeconds: number
  /** PCP only: the nonce that owns this mapping, needed to renew or delete it. */
  readonly nonce?: string | undefined
}

/**
 * How useful the router's external address is for publishing a Service:
 * - public: reachable from the Internet;
 * - private: RFC 1918, CGNAT or another reserved range, i.e. a double NAT;
 * - missing: empty or 0.0.0.0, i.e. the WAN link is down.
 */
export type ExternalIpClass = "public" | "private" | "missing"

/** The router's external address and what kind of address it is. */
export interface ExternalAddress {
  readonly ip: string | undefined
  readonly class: ExternalIpClass
}

/** A router's answer about itself: who it is, whether it is up, its external address. */
export interface GatewayStatus {
  /** The router's identity for logs and errors: its control URL, or address:port. */
  readonly router: string
  readonly protocol: Backend
  readonly connected: boolean
  /** UPnP: GetStatusInfo uptime. NAT-PMP/PCP: the epoch. A decrease means the router lost its table. */
  readonly uptimeSeconds: number | undefined
  readonly externalAddress: ExternalAddress
  /** The local address of our connection to the router: the internal client of our mappings. */
  readonly localAddress: string
  /**
   * Which router this is and why it is the one used: "192.168.77.1, the node's default
   * gateway", "192.168.77.50, set by --gateway-address", or "<url>, the URL given by --gateway-url".
   */
  readonly selection?: string | undefined
  /**
   * NAT-PMP/PCP: whether an epoch seen since the previous `status` call (this one's included)
   * went backwards or lagged behind the time elapsed (RFC 6886 §3.6, RFC 6887 §8.5): the gateway
   * lost its mappings, so every mapping must be made again. Reported once, by the next `status`.
   */
  readonly lostState?: boolean | undefined
  /** NAT-PMP/PCP: how many such losses this client has seen since it started; never decreases. */
  readonly stateLosses?: number | undefined
}
