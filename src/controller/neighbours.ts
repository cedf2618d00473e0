/**
 * The other Services one Service's pass must consider, read from a cluster snapshot: those that
 * want the same external port (the older one wins), those of its namespace (they share a quota),
 * and the one that forwards to a nodePort (NAT-PMP deletes by it). Pure, like the planner.
 */
import type { Service } from "../kube/objects.ts"
import { type ClusterSnapshot, serviceIn } from "./ClusterState.ts"
import { portKey, readRecord, type RecordCheck } from "./MappingRecord.ts"
import { resolveQuota } from "./planner.ts"
import { claimants, internalClaimants, namespaceMembers, type PortIndexOptions, wantedPorts } from "./PortIndex.ts"
import { type DesiredService, liveDesired, serviceKey } from "./ServiceSpec.ts"

/** What reading the neighbours needs: how to read a Service, and the namespace quota. */
export interface NeighbourOptions extends PortIndexOptions {
  /** Router mappings one namespace's Services may hold together; 0: no limit. */
  readonly maxMappingsPerNamespace: number
}

/** This Service and every live one that asks for one of its external ports. */
export const rivalsOf = (
  snapshot: ClusterSnapshot,
  options: NeighbourOptions,
  desired: DesiredService
): ReadonlyArray<DesiredService> => {
  const keys = new Set(desired.ports.flatMap((port) => [...claimants(snapshot.index, portKey(port))]))
  keys.delete(desired.key)
  const result: Array<DesiredService> = [desired]
  for (const key of keys) {
    const service = serviceIn(snapshot, key)
    const other = service === undefined ? undefined : liveDesired(service, options)
    if (other !== undefined) result.push(other)
  }
  return result
}

/** The ports each Service's record holds: the incumbent keeps a port against an equally old rival. */
export const holdingOf = (snapshot: ClusterSnapshot, check: RecordCheck) => (key: string): ReadonlySet<string> => {
  const service = serviceIn(snapshot, key)
  return new Set(service === undefined ? [] : readRecord(service, check).trusted.map(portKey))
}

/** The ports of this Service past its namespace's quota, or undefined when the namespace is within it. */
export const quotaDenied = (
  snapshot: ClusterSnapshot,
  options: NeighbourOptions,
  desired: DesiredService
): ReadonlySet<string> | undefined => {
  const limit = options.maxMappingsPerNamespace
  if (limit <= 0) return undefined
  const members: Array<DesiredService> = []
  let wanted = 0
  for (const key of namespaceMembers(snapshot.index, desired.namespace)) {
    const service = key === desired.key ? undefined : serviceIn(snapshot, key)
    const member = key === desired.key ? desired : service === undefined ? undefined : liveDesired(service, options)
    if (member === undefined) continue
    members.push(member)
    wanted += member.ports.length
  }
  if (!members.includes(desired)) {
    members.push(desired)
    wanted += desired.ports.length
  }
  return wanted <= limit ? undefined : resolveQuota(members, limit).get(desired.key)
}

/** Another live Service asking for an internal port (a nodePort), if any. */
export const internalPortHolder = (snapshot: ClusterSnapshot, self: string) => (port: string): string | undefined => {
  for (const key of internalClaimants(snapshot.index, port)) if (key !== self) return key
  return undefined
}

/**
 * Other Services asking for an external port this one asks (or asked) for, or holds on the
 * router by its record: a port it gives up, or frees once its cleanup is done, is theirs to take.
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
    for (const mapping of readRecord(version, check).trusted) ports.add(portKey(mapping))
  }
  const others = new Set<string>()
  for (const port of ports) for (const key of claimants(snapshot.index, port)) others.add(key)
  others.delete(serviceKey(self))
  return [...others]
}

/**
 * The other Services of its namespace when the namespace is (or was, before this change) past
 * its quota: a change in one may give or take another's share.
 */
export const quotaContenders = (
  snapshot: ClusterSnapshot,
  options: NeighbourOptions,
  previous: Service | undefined,
  next: Service
): ReadonlyArray<string> => {
  if (options.maxMappingsPerNamespace <= 0) return []
  const namespace = next.metadata?.namespace ?? "default"
  const members = namespaceMembers(snapshot.index, namespace)
  let wanted = previous === undefined ? 0 : wantedPorts(previous, options).length
  for (const member of members) {
    const service = serviceIn(snapshot, member)
    if (service !== undefined) wanted += wantedPorts(service, options).length
  }
  if (wanted <= options.maxMappingsPerNamespace) return []
  return [...members].filter((member) => member !== serviceKey(next))
}
