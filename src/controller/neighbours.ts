/**
 * The other Services one Service's pass must consider, read from a cluster snapshot: those that
 * want the same external port, IPv4 or IPv6 (the older one wins), those of its namespace (they
 * share a quota of router entries of both families), and the one that forwards to a nodePort
 * (NAT-PMP deletes by it). Pure, like the planner.
 */
import type { Service } from "../kube/objects.ts"
import { type ClusterSnapshot, serviceIn } from "./ClusterState.ts"
import { claimantOf, type EntryPort, pinholeClaimKey } from "./familyClaims.ts"
import { portKey, readRecord, type RecordCheck } from "./MappingRecord.ts"
import { pinholeKey, readPinholes } from "./PinholeRecord.ts"
import { type Claimant, claimKey, resolveQuota } from "./planner.ts"
import {
  claimants,
  internalClaimants,
  namespaceEntries,
  namespaceMembers,
  pinholeRecorders,
  type PortIndexOptions,
  wantedPorts
} from "./PortIndex.ts"
import { liveDesired, serviceKey } from "./ServiceSpec.ts"

/** What reading the neighbours needs: how to read a Service, and the namespace quota. */
export interface NeighbourOptions extends PortIndexOptions {
  /** Router mappings one namespace's Services may hold together; 0: no limit. */
  readonly maxMappingsPerNamespace: number
}

/** The router entries of a live Service in the snapshot, of both families; undefined if it asks for none. */
const claimantIn = (snapshot: ClusterSnapshot, options: NeighbourOptions, key: string): Claimant<EntryPort> | undefined => {
  const service = serviceIn(snapshot, key)
  const desired = service === undefined ? undefined : liveDesired(service, options)
  return service === undefined || desired === undefined ? undefined : claimantOf(service, desired)
}

/** This Service (`self`) and every live one that asks for one of its external ports, of either family. */
export const rivalsOf = (
  snapshot: ClusterSnapshot,
  options: NeighbourOptions,
  self: Claimant<EntryPort>
): ReadonlyArray<Claimant<EntryPort>> => {
  const keys = new Set(self.ports.flatMap((port) => [...claimants(snapshot.index, claimKey(port))]))
  keys.delete(self.key)
  const result: Array<Claimant<EntryPort>> = [self]
  for (const key of keys) {
    const other = claimantIn(snapshot, options, key)
    if (other !== undefined) result.push(other)
  }
  return result
}

/** The claim keys of what a Service's records hold, mappings and pinholes. */
const recordedKeys = (service: Service, check: RecordCheck): ReadonlyArray<string> => [
  ...readRecord(service, check).trusted.map(portKey),
  ...readPinholes(service, check).trusted.map(pinholeClaimKey)
]

/** The ports each Service's records hold: the incumbent keeps a port against an equally old rival. */
export const holdingOf = (snapshot: ClusterSnapshot, check: RecordCheck) => (key: string): ReadonlySet<string> => {
  const service = serviceIn(snapshot, key)
  return new Set(service === undefined ? [] : recordedKeys(service, check))
}

/**
 * Of these pinhole ports, those (`pinholeKey`) another live Service asks for, or another
 * Service's checked record names: their pinhole is one on the router whichever Service opened
 * it, so it is never deleted on this one's behalf, and opening it may find it open already.
 */
export const pinholesHeldElsewhere = (
  snapshot: ClusterSnapshot,
  check: RecordCheck,
  self: string,
  ports: ReadonlyArray<{ readonly protocol: "TCP" | "UDP"; readonly port: number }>
): ReadonlySet<string> => {
  const recordedBy = (key: string, port: string): boolean => {
    const service = key === self ? undefined : serviceIn(snapshot, key)
    return service !== undefined && readPinholes(service, check).trusted.some((entry) => pinholeKey(entry) === port)
  }
  const heldElsewhere = (port: { readonly protocol: "TCP" | "UDP"; readonly port: number }): boolean =>
    [...claimants(snapshot.index, pinholeClaimKey(port))].some((key) => key !== self) ||
    [...pinholeRecorders(snapshot.index, pinholeKey(port))].some((key) => recordedBy(key, pinholeKey(port)))
  return new Set(ports.filter(heldElsewhere).map(pinholeKey))
}

/**
 * The ports (`claimKey`) of this Service (`self`, of namespace `namespace`) past its namespace's
 * quota of router entries, IPv4 mappings and IPv6 pinholes alike; undefined when the namespace is within it.
 */
export const quotaDenied = (
  snapshot: ClusterSnapshot,
  options: NeighbourOptions,
  namespace: string,
  self: Claimant<EntryPort>
): ReadonlySet<string> | undefined => {
  const limit = options.maxMappingsPerNamespace
  if (limit <= 0) return undefined
  const indexedSelf = claimantIn(snapshot, options, self.key)?.ports.length ?? 0
  if (namespaceEntries(snapshot.index, namespace) - indexedSelf + self.ports.length <= limit) return undefined
  const members: Array<Claimant<EntryPort>> = [self]
  for (const key of namespaceMembers(snapshot.index, namespace)) {
    const member = key === self.key ? undefined : claimantIn(snapshot, options, key)
    if (member !== undefined) members.push(member)
  }
  return resolveQuota(members, limit).get(self.key)
}

/** Another live Service asking for an internal port (a nodePort), if any. */
export const internalPortHolder = (snapshot: ClusterSnapshot, self: string) => (port: string): string | undefined => {
  for (const key of internalClaimants(snapshot.index, port)) if (key !== self) return key
  return undefined
}

/**
 * Other Services asking for an external port (either family) this one asks (or asked) for, or
 * holds on the router by its records: a port it gives up, or frees once its cleanup is done, is
 * theirs to take.
 */
export const contenders = (
  snapshot: ClusterSnapshot,
  options: NeighbourOptions,
  check: RecordCheck,
  ...versions: ReadonlyArray<Service | undefined>
): ReadonlyArray<string> => {
  const self = versions.find((version) => version !== undefined)
  if (self === undefined) return []
  const ports = new Set<string>()
  for (const version of versions) {
    if (version === undefined) continue
    for (const port of wantedPorts(version, options)) ports.add(port)
    for (const port of recordedKeys(version, check)) ports.add(port)
  }
  const others = new Set<string>()
  for (const port of ports) for (const key of claimants(snapshot.index, port)) others.add(key)
  others.delete(serviceKey(self))
  return [...others]
}

/**
 * The other Services of its namespace when this change moves their shares of the quota: the
 * Service now asks for more or fewer router entries (or came, or goes) while the namespace is
 * (or was, before the change) past its quota. Shares go by age and by count alone, so a change
 * that keeps the count (an echo of our own write, a new label) moves nobody's, and does not
 * send the whole namespace through another pass.
 */
export const quotaContenders = (
  snapshot: ClusterSnapshot,
  options: NeighbourOptions,
  previous: Service | undefined,
  next: Service
): ReadonlyArray<string> => {
  if (options.maxMappingsPerNamespace <= 0) return []
  const namespace = next.metadata?.namespace ?? "default"
  const before = previous === undefined ? 0 : wantedPorts(previous, options).length
  if (before === wantedPorts(next, options).length) return []
  if (before + namespaceEntries(snapshot.index, namespace) <= options.maxMappingsPerNamespace) return []
  return [...namespaceMembers(snapshot.index, namespace)].filter((member) => member !== serviceKey(next))
}
