/**
 * The planner: a pure function from what Services want, what the router holds and what the
 * Service records say, to the steps that reconcile them. No Effect services, no I/O: every
 * decision about ownership, conflicts, renewal and cleanup is made here and tested with data.
 */
import type { ExternalAddress, MappingEntry, Protocol } from "../gateway/Mapping.ts"
import { portKey, type RecordedMapping } from "./MappingRecord.ts"
import { type DesiredPort, type DesiredService, isClusterDescription } from "./ServiceSpec.ts"

/** What the router's table says about one port: an entry, or verified absent (null). */
export type ObservedTable = ReadonlyMap<string, MappingEntry | null>

/** How a mapping is recognised as this cluster's: its description prefix and the Nodes' addresses. */
export interface Ownership {
  readonly clusterName: string
  /** Addresses of this cluster's Nodes: a mapping to one of them under our description prefix is ours. */
  readonly nodeAddresses: ReadonlySet<string>
}

/** What the planner needs of the router: who it is, our address toward it, its external address. */
export interface GatewayView {
  readonly router: string
  readonly backend: string
  /** Our internal client: the local address of our connection to the router. */
  readonly localAddress: string
  readonly externalAddress: ExternalAddress
}

/** Whether a router entry is one this cluster made (and may therefore change or delete). */
export const isOwned = (entry: MappingEntry, ownership: Ownership): boolean =>
  isClusterDescription(ownership.clusterName, entry.description) && ownership.nodeAddresses.has(entry.internalClient)

// ---------------------------------------------------------------------------------------------
// Claims: two Services on one external port. Decided before any router call.

/**
 * A port as claims and the quota see it: an IPv4 mapping's external port, or (`family: "IPv6"`)
 * the port of an IPv6 pinhole, which opens the node's address at the Service port.
 */
export interface ClaimedPort {
  readonly protocol: Protocol
  readonly externalPort: number
  readonly family?: "IPv6"
}

/** `TCP/8080`, or `TCP/8080/IPv6` for a pinhole: each family's ports are contended for apart. */
export const claimKey = (port: ClaimedPort): string =>
  port.family === "IPv6" ? `${portKey(port)}/IPv6` : portKey(port)

/** Who asks for router entries, as claims and the quota weigh it (a `DesiredService` is one). */
export interface Claimant<P extends ClaimedPort = DesiredPort> {
  readonly key: string
  /** creationTimestamp in ms: the oldest wins. */
  readonly createdAt: number
  readonly ports: ReadonlyArray<P>
}

/** A port a Service wants that another Service has a better claim to. */
export interface ContestedPort<P extends ClaimedPort = DesiredPort> {
  readonly port: P
  /**
   * The Service that holds the port: the oldest by creationTimestamp; among equally old ones
   * (the timestamp has one-second resolution), the one already holding it; then namespace/name.
   */
  readonly holder: string
}

/** Which of a Service's ports it may map, and which go to other Services. */
export interface Claims<P extends ClaimedPort = DesiredPort> {
  readonly granted: ReadonlyArray<P>
  readonly contested: ReadonlyArray<ContestedPort<P>>
  /** Ports past the namespace's quota of mappings (see `resolveQuota`). */
  readonly overQuota: ReadonlyArray<P>
}

/** Gives each contested port to the oldest Service that wants it (the one holding it among equals). */
export const resolveClaims = <P extends ClaimedPort = DesiredPort>(
  services: ReadonlyArray<Claimant<P>>,
  /** Which ports (`claimKey`) each Service's record says it holds now, by Service key. */
  holding: (serviceKey: string) => ReadonlySet<string> = () => new Set()
): ReadonlyMap<string, Claims<P>> => {
  const winners = new Map<string, Claimant<P>>()
  for (const service of services) {
    for (const port of service.ports) {
      const key = claimKey(port)
      const current = winners.get(key)
      if (current === undefined || comesFirst(service, current, key, holding)) winners.set(key, service)
    }
  }
  const claims = new Map<string, Claims<P>>()
  for (const service of services) {
    const granted: Array<P> = []
    const contested: Array<ContestedPort<P>> = []
    for (const port of service.ports) {
      const holder = winners.get(claimKey(port))!
      if (holder.key === service.key) granted.push(port)
      else contested.push({ port, holder: holder.key })
    }
    claims.set(service.key, { granted, contested, overQuota: [] })
  }
  return claims
}

const comesFirst = (
  a: Claimant<ClaimedPort>,
  b: Claimant<ClaimedPort>,
  port: string,
  holding: (serviceKey: string) => ReadonlySet<string>
): boolean => {
  if (a.createdAt !== b.createdAt) return a.createdAt < b.createdAt
  const aHolds = holding(a.key).has(port)
  if (aHolds !== holding(b.key).has(port)) return aHolds
  return a.key < b.key
}

// ---------------------------------------------------------------------------------------------
// Quota: how many router entries (IPv4 mappings and IPv6 pinholes) one namespace's Services may hold.

/**
 * The ports (`claimKey`) of each Service past its namespace's quota. The namespace's Services
 * are served oldest first (creationTimestamp, then name), each in its own port order, so a
 * newcomer never takes mappings away from Services that had them. `limit` 0 means no quota.
 */
export const resolveQuota = (
  namespaceServices: ReadonlyArray<Claimant<ClaimedPort>>,
  limit: number
): ReadonlyMap<string, ReadonlySet<string>> => {
  const denied = new Map<string, ReadonlySet<string>>()
  if (limit <= 0) return denied
  let used = 0
  const ordered = [...namespaceServices].sort((a, b) => a.createdAt - b.createdAt || (a.key < b.key ? -1 : 1))
  for (const service of ordered) {
    const over = new Set<string>()
    for (const port of service.ports) {
      if (used < limit) used++
      else over.add(claimKey(port))
    }
    if (over.size > 0) denied.set(service.key, over)
  }
  return denied
}

/** Why a port past the namespace's quota gets no router entry (IPv4 and IPv6 alike). */
export const overQuotaReason = (namespace: string, quota: number | undefined): string =>
  `namespace ${namespace} already holds its quota of ${quota ?? "?"} router entries ` +
  "(IPv4 mappings and IPv6 pinholes, --max-mappings-per-namespace); older Services come first"

/** Why a port another Service holds gets no router entry (`port`: as Events name it). */
export const contestedReason = (holder: string, port: string): string =>
  `Service ${holder} is older and already claims ${port}`

/** Moves the ports the quota denies out of `granted`. */
export const withQuota = <P extends ClaimedPort>(claims: Claims<P>, denied: ReadonlySet<string> | undefined): Claims<P> =>
  denied === undefined || denied.size === 0 ? claims : {
    granted: claims.granted.filter((port) => !denied.has(claimKey(port))),
    contested: claims.contested,
    overQuota: [...claims.overQuota, ...claims.granted.filter((port) => denied.has(claimKey(port)))]
  }

// ---------------------------------------------------------------------------------------------
// Steps

/** One router step of a pass. */
export type Step =
  /** Nothing holds the port: map it. `repair` when the record says we had mapped it before. */
  | { readonly _tag: "Add"; readonly port: DesiredPort; readonly repair: boolean }
  /** Ours and correct, but past half its lease: send the identical mapping again. */
  | { readonly _tag: "Renew"; readonly port: DesiredPort }
  /** Ours, but pointing elsewhere (another of our nodes after a failover, or an old nodePort). */
  | { readonly _tag: "Replace"; readonly port: DesiredPort; readonly previous: MappingEntry }
  /** Held by someone else, or by us under another description: never touched. */
  | { readonly _tag: "Conflict"; readonly port: DesiredPort; readonly holder: string; readonly reason: string }
  /** Past the namespace's quota of mappings: not mapped. */
  | { readonly _tag: "OverQuota"; readonly port: DesiredPort; readonly reason: string }
  /** A recorded mapping this Service no longer wants, still ours on the router. */
  | { readonly _tag: "Delete"; readonly mapping: RecordedMapping }
  /** A mapping of ours whose Service is gone. */
  | { readonly _tag: "Orphan"; readonly entry: MappingEntry }

/** Everything a pass will do for a Service, decided before any of it is done. */
export interface ServicePlan {
  /** The record to write (with the finalizer) before any router call; undefined when it already holds it. */
  readonly recordBefore: ReadonlyArray<RecordedMapping> | undefined
  readonly steps: ReadonlyArray<Step>
  /** Ports already correct on the router. */
  readonly inPlace: ReadonlyArray<DesiredPort>
  /** Recorded mappings that are no longer on the router as ours: dropped from the record. */
  readonly forgotten: ReadonlyArray<RecordedMapping>
  /** Ports not attempted because the router cannot publish them (double NAT, disconnected). */
  readonly blocked: ReadonlyArray<DesiredPort>
}

/** What planning a Service's pass reads. */
export interface ServicePlanInput {
  readonly service: DesiredService
  readonly claims: Claims
  /** The trusted entries of the Service's record (MappingRecord.ts), for this protocol. */
  readonly record: ReadonlyArray<RecordedMapping>
  readonly observed: ObservedTable
  readonly gateway: GatewayView
  readonly ownership: Ownership
  /** The namespace's quota, for the over-quota ports' message. */
  readonly quota?: number | undefined
  /**
   * Where the router deletes by internal port (NAT-PMP): another Service that asks for this
   * internal port (`TCP/30080`), if any. A recorded mapping whose nodePort now belongs to another
   * Service is that Service's to keep, never ours to delete. Absent where deletes name the
   * external port.
   */
  readonly internalPortHolder?: ((internalPortKey: string) => string | undefined) | undefined
}

/** The record entry for a port mapped on this router. */
export const toRecorded = (port: DesiredPort, gateway: GatewayView): RecordedMapping => ({
  backend: gateway.backend,
  gateway: gateway.router,
  protocol: port.protocol,
  externalPort: port.externalPort,
  internalClient: gateway.localAddress,
  internalPort: port.internalPort,
  description: port.description
})

/** Plans one live Service: what to add, renew, replace or delete, and what to leave alone. */
export const planService = (input: ServicePlanInput): ServicePlan => {
  const { claims, gateway, observed, ownership, record, service } = input
  const steps: Array<Step> = []
  for (const port of claims.overQuota) {
    steps.push({
      _tag: "OverQuota",
      port,
      reason: overQuotaReason(service.namespace, input.quota)
    })
  }
  const inPlace: Array<DesiredPort> = []
  const blocked: Array<DesiredPort> = []
  const recordedKeys = new Set(record.map(portKey))
  const publishable = gateway.externalAddress.class === "public"

  for (const { holder, port } of claims.contested) {
    steps.push({
      _tag: "Conflict",
      port,
      holder: `Service ${holder}`,
      reason: contestedReason(holder, `${port.protocol} ${port.externalPort}`)
    })
  }
  for (const port of claims.granted) {
    const entry = observed.get(portKey(port)) ?? null
    if (entry === null) {
      if (publishable) steps.push({ _tag: "Add", port, repair: recordedKeys.has(portKey(port)) })
      else blocked.push(port)
      continue
    }
    const owned = isOwned(entry, ownership)
    if (!owned || entry.description !== port.description) {
      steps.push({ _tag: "Conflict", port, holder: describeHolder(entry), reason: conflictReason(entry, owned) })
      continue
    }
    if (entry.internalClient !== gateway.localAddress || entry.internalPort !== port.internalPort) {
      if (publishable) steps.push({ _tag: "Replace", port, previous: entry })
      else blocked.push(port)
      continue
    }
    if (needsRenewal(entry, service.leaseSeconds)) steps.push({ _tag: "Renew", port })
    else inPlace.push(port)
  }

  const wanted = new Set(claims.granted.map(portKey))
  const forgotten: Array<RecordedMapping> = []
  for (const mapping of record) {
    if (wanted.has(portKey(mapping))) continue
    if (stillOurs(mapping, observed, ownership, input.internalPortHolder)) steps.push({ _tag: "Delete", mapping })
    else forgotten.push(mapping)
  }

  // The record gains only the ports we are about to hold; one held by someone else leaves it
  // (so a conflict is not written in and out on every pass).
  const held = steps.flatMap((step) =>
    step._tag === "Add" || step._tag === "Renew" || step._tag === "Replace" ? [step.port] : []
  )
  const conflicted = new Set(steps.flatMap((step) => step._tag === "Conflict" ? [portKey(step.port)] : []))
  const desiredRecord = mergeRecord(
    record.filter((mapping) => !conflicted.has(portKey(mapping))),
    [...held, ...inPlace].map((port) => toRecorded(port, gateway))
  )
  return {
    recordBefore: sameRecord(desiredRecord, record) ? undefined : desiredRecord,
    steps,
    inPlace,
    forgotten,
    blocked
  }
}

/**
 * The delete rule, for live Services and cleanup alike: a recorded mapping is deleted only
 * while the router still holds it as ours under the recorded description, and, where the
 * router deletes by internal port (NAT-PMP: the caller then passes `internalPortHolder`), no
 * other Service asks for that port.
 */
const stillOurs = (
  mapping: RecordedMapping,
  observed: ObservedTable,
  ownership: Ownership,
  internalPortHolder: ((internalPortKey: string) => string | undefined) | undefined
): boolean => {
  const entry = observed.get(portKey(mapping)) ?? null
  if (entry === null || !isOwned(entry, ownership) || entry.description !== mapping.description) return false
  return internalPortHolder?.(`${mapping.protocol}/${mapping.internalPort}`) === undefined
}

/** A finite lease is renewed once half of it has passed; an unknown remaining lease is renewed. */
export const needsRenewal = (entry: MappingEntry, leaseSeconds: number): boolean => {
  if (leaseSeconds === 0) return false
  if (entry.leaseDuration === undefined) return true
  // A permanent mapping where we asked for a lease: the router ignored it (725 routers); keep it.
  if (entry.leaseDuration === 0) return false
  return entry.leaseDuration <= leaseSeconds / 2
}

const describeHolder = (entry: MappingEntry): string =>
  `${entry.internalClient}:${entry.internalPort}${entry.description ? ` '${entry.description}'` : ""}`

const conflictReason = (entry: MappingEntry, owned: boolean): string =>
  owned
    ? `the port maps to this cluster under another description '${entry.description}'`
    : `the port is mapped to ${entry.internalClient}:${entry.internalPort}` +
      (entry.description ? ` ('${entry.description}')` : "") + ", which is not ours"

/**
 * Entries for the same port are replaced by the newer one, keeping a PCP nonce (it owns the
 * mapping); others are kept until cleaned up.
 */
const mergeRecord = (
  record: ReadonlyArray<RecordedMapping>,
  desired: ReadonlyArray<RecordedMapping>
): ReadonlyArray<RecordedMapping> => {
  const merged = new Map(record.map((mapping) => [portKey(mapping), mapping]))
  for (const mapping of desired) {
    const previous = merged.get(portKey(mapping))
    merged.set(
      portKey(mapping),
      previous?.nonce !== undefined && previous.backend === mapping.backend ? { ...mapping, nonce: previous.nonce } : mapping
    )
  }
  return [...merged.values()]
}

/** Whether two records hold the same mappings, in any order. */
export const sameRecord = (a: ReadonlyArray<RecordedMapping>, b: ReadonlyArray<RecordedMapping>): boolean => {
  if (a.length !== b.length) return false
  const byKey = new Map(b.map((mapping) => [portKey(mapping), mapping]))
  return a.every((mapping) => {
    const other = byKey.get(portKey(mapping))
    return other !== undefined && other.internalClient === mapping.internalClient &&
      other.internalPort === mapping.internalPort && other.description === mapping.description &&
      other.gateway === mapping.gateway && other.backend === mapping.backend && other.nonce === mapping.nonce
  })
}

// ---------------------------------------------------------------------------------------------
// Cleanup: the Service is deleted, no longer a LoadBalancer, or opted out.

/** What cleaning up a Service will do: the deletes, and the recorded mappings already gone. */
export interface CleanupPlan {
  readonly steps: ReadonlyArray<Extract<Step, { _tag: "Delete" }>>
  /** Recorded mappings already gone, or now held by someone else: nothing to undo. */
  readonly alreadyGone: ReadonlyArray<RecordedMapping>
}

/**
 * Deletes exactly the recorded mappings that the router still holds as ours. When the record
 * is unreadable, the caller passes the router entries under the Service's descriptions instead.
 */
export const planCleanup = (
  record: ReadonlyArray<RecordedMapping>,
  observed: ObservedTable,
  ownership: Ownership,
  internalPortHolder?: (internalPortKey: string) => string | undefined
): CleanupPlan => {
  const steps: Array<Extract<Step, { _tag: "Delete" }>> = []
  const alreadyGone: Array<RecordedMapping> = []
  for (const mapping of record) {
    if (stillOurs(mapping, observed, ownership, internalPortHolder)) steps.push({ _tag: "Delete", mapping })
    else alreadyGone.push(mapping)
  }
  return { steps, alreadyGone }
}

/**
 * Owned router entries that no Service wants or records any more. Only called with a complete
 * listing and a synced Service list: a partial view must never delete anything.
 */
export const planOrphans = (
  table: ReadonlyArray<MappingEntry>,
  liveDescriptions: ReadonlySet<string>,
  ownership: Ownership
): ReadonlyArray<Extract<Step, { _tag: "Orphan" }>> =>
  table
    .filter((entry) => isOwned(entry, ownership) && !liveDescriptions.has(entry.description))
    .map((entry) => ({ _tag: "Orphan", entry }))
