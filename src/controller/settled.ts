/**
 * Which Services a resync may leave alone. A resync lists the router's table to repair what
 * changed behind the controller's back; a Service whose mappings the fresh listing shows exactly
 * as its record says, pointing at this node, with its status already showing the router's address
 * and no port error, and no lease to renew yet, has nothing to do, and a pass over it would only
 * cost CPU (100 such Services every 30 s were most of an idle controller's work). Anything else,
 * or anything this cannot tell, is queued as before. Pure.
 */
import type { MappingEntry } from "../gateway/Mapping.ts"
import type { Service } from "../kube/objects.ts"
import { portKey, readRecord, type RecordCheck } from "./MappingRecord.ts"
import { wantsIpv6 } from "./pinholePlan.ts"
import { PINHOLES_ANNOTATION } from "./PinholeRecord.ts"
import { type GatewayView, needsRenewal } from "./planner.ts"
import { type DesiredOptions, FINALIZER, liveDesired, type SelectionOptions } from "./ServiceSpec.ts"

/** What a fresh listing of one router shows, by protocol/external port, and how we reach it. */
export interface FreshTable {
  readonly backend: string
  readonly view: GatewayView
  readonly entries: ReadonlyMap<string, MappingEntry>
}

/** Whether the listing shows this Service as its last pass left it (so a resync may skip it). */
export const settledByListing = (
  service: Service,
  options: SelectionOptions & DesiredOptions,
  check: RecordCheck,
  table: FreshTable
): boolean => {
  if (service.metadata?.deletionTimestamp !== undefined) return false
  if (!(service.metadata?.finalizers ?? []).includes(FINALIZER)) return false
  // IPv6 pinholes are renewed and repaired by passes: the router's listing cannot show them.
  if (wantsIpv6(service) || service.metadata?.annotations?.[PINHOLES_ANNOTATION] !== undefined) return false
  const desired = liveDesired(service, options)
  if (desired === undefined || desired.backend !== table.backend || desired.unmappable.length > 0) return false
  const record = readRecord(service, check)
  if (record.stale || record.refused.length > 0 || record.trusted.length !== desired.ports.length) return false
  const recorded = new Map(record.trusted.map((mapping) => [portKey(mapping), mapping]))
  const held = desired.ports.every((port) => {
    const mapping = recorded.get(portKey(port))
    const entry = table.entries.get(portKey(port))
    return mapping !== undefined && entry !== undefined &&
      mapping.backend === table.backend &&
      mapping.internalClient === table.view.localAddress && entry.internalClient === table.view.localAddress &&
      mapping.internalPort === port.internalPort && entry.internalPort === port.internalPort &&
      mapping.description === port.description && entry.description === port.description &&
      // Renewals longer than the resync are made by the resync's pass: not settled once due.
      !needsRenewal(entry, desired.leaseSeconds)
  })
  if (!held) return false
  const { ip, class: ipClass } = table.view.externalAddress
  const ingress = service.status?.loadBalancer?.ingress ?? []
  return ipClass === "public" && ip !== undefined && ingress.length === 1 && ingress[0]?.ip === ip &&
    (ingress[0].ports ?? []).every((port) => port.error === undefined)
}
