/**
 * Which live Services ask for each external port (an IPv4 mapping's, or an IPv6 pinhole's under
 * its family-qualified key, familyClaims.ts), each internal port (nodePort), which are in each
 * namespace, and which Services' pinhole records name each port, kept in step with the watch's
 * store, so finding a Service's rivals, the holder of a nodePort or a namespace's quota costs
 * its own ports, not a scan of every Service in the cluster. It also counts the router entries
 * each namespace's live Services ask for, so a namespace within its quota is known to be within
 * it without a look at its members (one event's cost would otherwise grow with its namespace,
 * and a burst's with the square of it). An immutable value: each change returns a new index
 * (persistent maps, so a change costs the Service's own ports), and `ClusterState` keeps the
 * current one in its `Ref`.
 */
import type { Service } from "../kube/objects.ts"
import { HashMap, HashSet, Option } from "effect"
import { claimantOf } from "./familyClaims.ts"
import { recordedPinholeKeys } from "./PinholeRecord.ts"
import { claimKey } from "./planner.ts"
import { type DesiredOptions, liveDesired, type SelectionOptions, serviceKey } from "./ServiceSpec.ts"

/** Value (a port key, a namespace) → keys of the Services that ask for it. */
type Multimap = HashMap.HashMap<string, HashSet.HashSet<string>>

/** The four indexes, by external port, internal port, namespace and recorded pinhole. */
export interface PortIndex {
  readonly external: Multimap
  readonly internal: Multimap
  readonly namespaces: Multimap
  /** By namespace, the router entries (`wantedPorts`) its live Services ask for together. */
  readonly entriesByNamespace: HashMap.HashMap<string, number>
  /** By `pinholeKey`, every Service (live or going) whose pinhole record names it, signed or not. */
  readonly pinholeRecords: Multimap
}

/** What the index needs to read a Service's ports. */
export type PortIndexOptions = SelectionOptions & DesiredOptions

/** No Service at all. */
export const emptyPortIndex: PortIndex = {
  external: HashMap.empty(),
  internal: HashMap.empty(),
  namespaces: HashMap.empty(),
  entriesByNamespace: HashMap.empty(),
  pinholeRecords: HashMap.empty()
}

/** The claim keys of the router entries a Service asks for (both families): ours and not being deleted, else none. */
export const wantedPorts = (service: Service, options: PortIndexOptions): ReadonlyArray<string> => {
  const desired = liveDesired(service, options)
  return desired === undefined ? [] : claimantOf(service, desired).ports.map(claimKey)
}

const internalPorts = (service: Service, options: PortIndexOptions): ReadonlyArray<string> =>
  liveDesired(service, options)?.ports.map((port) => `${port.protocol}/${port.internalPort}`) ?? []

const add = (index: Multimap, value: string, key: string): Multimap =>
  HashMap.set(index, value, HashSet.add(Option.getOrElse(HashMap.get(index, value), () => HashSet.empty<string>()), key))

const remove = (index: Multimap, value: string, key: string): Multimap => {
  const keys = HashMap.get(index, value)
  if (Option.isNone(keys)) return index
  const left = HashSet.remove(keys.value, key)
  return HashSet.size(left) === 0 ? HashMap.remove(index, value) : HashMap.set(index, value, left)
}

const countIn = (counts: HashMap.HashMap<string, number>, namespace: string): number =>
  Option.getOrElse(HashMap.get(counts, namespace), () => 0)

const change = (
  index: PortIndex,
  service: Service,
  options: PortIndexOptions,
  apply: (multimap: Multimap, value: string, key: string) => Multimap,
  sign: 1 | -1
): PortIndex => {
  const key = serviceKey(service)
  const wanted = wantedPorts(service, options)
  let { external, internal, namespaces, entriesByNamespace, pinholeRecords } = index
  for (const port of wanted) external = apply(external, port, key)
  for (const port of internalPorts(service, options)) internal = apply(internal, port, key)
  if (liveDesired(service, options) !== undefined) {
    const namespace = service.metadata?.namespace ?? "default"
    namespaces = apply(namespaces, namespace, key)
    const entries = countIn(entriesByNamespace, namespace) + sign * wanted.length
    entriesByNamespace = entries === 0
      ? HashMap.remove(entriesByNamespace, namespace)
      : HashMap.set(entriesByNamespace, namespace, entries)
  }
  for (const port of recordedPinholeKeys(service)) pinholeRecords = apply(pinholeRecords, port, key)
  return { external, internal, namespaces, entriesByNamespace, pinholeRecords }
}

/** The index after the store's entry for a Service changed (`next` undefined: deleted). */
export const updatePortIndex = (
  index: PortIndex,
  previous: Service | undefined,
  next: Service | undefined,
  options: PortIndexOptions
): PortIndex => {
  const without = previous === undefined ? index : change(index, previous, options, remove, -1)
  return next === undefined ? without : change(without, next, options, add, 1)
}

/** The index of a whole store (after a relist). */
export const buildPortIndex = (services: Iterable<Service>, options: PortIndexOptions): PortIndex => {
  let index = emptyPortIndex
  for (const service of services) index = change(index, service, options, add, 1)
  return index
}

const keysOf = (multimap: Multimap, value: string): ReadonlySet<string> =>
  Option.match(HashMap.get(multimap, value), { onNone: () => none, onSome: (keys) => new Set(keys) })

const none: ReadonlySet<string> = new Set()

/** Keys of the live Services that ask for this external port (`TCP/8080`, a pinhole's `TCP/8080/IPv6`). */
export const claimants = (index: PortIndex, port: string): ReadonlySet<string> => keysOf(index.external, port)

/** Keys of the live Services that forward to this internal port (`TCP/30080`). */
export const internalClaimants = (index: PortIndex, port: string): ReadonlySet<string> => keysOf(index.internal, port)

/** Keys of the Services whose pinhole record (unchecked) names this port (`TCP/8080`). */
export const pinholeRecorders = (index: PortIndex, port: string): ReadonlySet<string> => keysOf(index.pinholeRecords, port)

/** Keys of the live Services of this namespace. */
export const namespaceMembers = (index: PortIndex, namespace: string): ReadonlySet<string> =>
  keysOf(index.namespaces, namespace)

/** The router entries (`wantedPorts`, both families) the live Services of this namespace ask for together. */
export const namespaceEntries = (index: PortIndex, namespace: string): number =>
  countIn(index.entriesByNamespace, namespace)
