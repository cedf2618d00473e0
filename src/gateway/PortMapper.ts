/**
 * The one interface the controller programs a router through. UPnP IGD, NAT-PMP and PCP
 * each provide it as a layer; nothing behind it knows about Kubernetes.
 */
import { Context, type Effect, type Stream } from "effect"
import type { GatewayError } from "./GatewayError.ts"
import type { EventSubscriptionFailed, WanEvent } from "./upnp/Eventing.ts"
import type { ExternalAddress, GatewayStatus, GrantedMapping, MappingEntry, MappingRequest, Protocol } from "./Mapping.ts"

/**
 * What differs between the protocols, as the caller needs to know it: the controller asks these,
 * never which protocol it speaks to.
 */
export interface PortMapperCapabilities {
  /**
   * Whether `get` and `list` read the router's table (UPnP). NAT-PMP and PCP cannot: the
   * controller then relies on its own record, and on `map` reporting a conflict.
   */
  readonly readsTable: boolean
  /**
   * Whether a delete acts on the internal port, whatever external port it has (NAT-PMP): such a
   * delete must never be sent while another Service forwards to that internal port.
   */
  readonly deletesByInternalPort: boolean
  /**
   * Where a mapping is owned by a nonce (PCP): draws the nonce for a new mapping, so the caller
   * can record it before the router sees it and renew or delete the mapping after a restart.
   * Undefined where mappings have no nonce.
   */
  readonly drawNonce: Effect.Effect<string> | undefined
}

/** The one interface the controller programs a router through. */
export class PortMapper extends Context.Service<PortMapper, {
  /** What this protocol can and cannot do. */
  readonly capabilities: PortMapperCapabilities
  /**
   * Announcements that the router restarted and lost its table (UPnP: an SSDP NOTIFY with a
   * new BOOTID.UPNP.ORG), faster than any polling. Absent where the protocol has none.
   */
  readonly restarts?: Stream.Stream<string> | undefined
  /**
   * The router's own word of a new external address or connection status (UPnP eventing),
   * subscribed while the stream runs. Fails when the router has no event URL or refuses to
   * subscribe: then only polling tells. Absent where the protocol has none.
   */
  readonly events?: Stream.Stream<WanEvent, EventSubscriptionFailed | GatewayError> | undefined
  /**
   * The router in use and why (as `GatewayStatus.selection`), or undefined before one was
   * chosen. Kept while the router does not answer: only another choice changes it.
   */
  readonly selection?: Effect.Effect<string | undefined> | undefined
  /** The router's external address, classified (public, private = double NAT, missing). */
  readonly externalAddress: Effect.Effect<ExternalAddress, GatewayError>
  /** Connection state, uptime or epoch, external address and our local address toward the router. */
  readonly status: Effect.Effect<GatewayStatus, GatewayError>
  /**
   * Creates or renews a mapping. Refuses (PortConflict) to overwrite a mapping held under
   * another description unless `force`; never touches one of another host.
   */
  readonly map: (request: MappingRequest) => Effect.Effect<GrantedMapping, GatewayError>
  /**
   * Deletes a mapping; one already gone counts as success. NAT-PMP and PCP delete by internal
   * port (and PCP by nonce too): pass them from the record when this client did not make the
   * mapping itself.
   */
  readonly unmap: (
    mapping: {
      readonly externalPort: number
      readonly protocol: Protocol
      readonly internalPort?: number | undefined
      readonly nonce?: string | undefined
    }
  ) => Effect.Effect<void, GatewayError>
  /** The mapping on one external port, or undefined when there is none. */
  readonly get: (
    externalPort: number,
    protocol: Protocol
  ) => Effect.Effect<MappingEntry | undefined, GatewayError>
  /**
   * The router's whole table, or undefined where the protocol cannot list (NAT-PMP, PCP).
   * Fails rather than returning a listing that broke off: a partial table must never be
   * mistaken for "no such mapping".
   */
  readonly list: Effect.Effect<ReadonlyArray<MappingEntry> | undefined, GatewayError>
}>()("edge-ccm/gateway/PortMapper") {}
