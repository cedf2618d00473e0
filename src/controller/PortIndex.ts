/**
 * Which live Services ask for each external port, each internal port (nodePort), and which are
 * in each namespace, kept in step with the watch's store, so finding a Service's rivals, the
 * holder of a nodePort or a namespace's quota costs its own ports, not a scan of every Service
 * in the cluster.
 */
import type { Service } from "../kube/objects.ts"
import { portKey } from "./MappingRecord.ts"
import { type DesiredOptions, liveDesired, type SelectionOptions, serviceKey } from "./ServiceSpec.ts"

export interface PortIndex {
  /** After the store's entry for this Service changed (undefined: deleted). */
  readonly update: (previous: Service | undefined, next: Service | undefined) => void
  /** After a relist replaced the whole store. */
  readonly rebuild: (services: Iterable<Service>) => void
  /** Keys of the live Services that ask for this external port (`TCP/8080`). */
  readonly claimants: (port: string) => ReadonlySet<string>
  /** Keys of the live Services that forward to this internal port (`TCP/30080`). */
  readonly internalClaimants: (port: string) => ReadonlySet<string>
  /** Keys of the live Services of this namespace. */
  readonly namespaceMembers: (namespace: string) => ReadonlySet<string>
}

const none: ReadonlySet<string> = new Set()

/** The port keys a Service asks for: ours and not being deleted, else none. */
export const wantedPorts = (service: Service, options: SelectionOptions & DesiredOptions): ReadonlyArray<string> =>
  liveDesired(service, options)?.ports.map(portKey) ?? []

const internalPorts = (service: Service, options: SelectionOptions & DesiredOptions): ReadonlyArray<string> =>
  liveDesired(service, options)?.ports.map((port) => `${port.protocol}/${port.internalPort}`) ?? []

/** A multimap of string → Service keys that drops empty entries. */
const makeIndex = () => {
  const byValue = new Map<string, Set<string>>()
  return {
    add: (value: string, key: string) => {
      const keys = byValue.get(value) ?? new Set<string>()
      keys.add(key)
      byValue.set(value, keys)
    },
    remove: (value: string, key: string) => {
      const keys = byValue.get(value)
      keys?.delete(key)
      if (keys?.size === 0) byValue.delete(value)
    },
    get: (value: string): ReadonlySet<string> => byValue.get(value) ?? none,
    clear: () => byValue.clear()
  }
}

export const makePortIndex = (options: SelectionOptions & DesiredOptions): PortIndex => {
  const external = makeIndex()
  const internal = makeIndex()
  const namespaces = makeIndex()

  const change = (service: Service, apply: (index: ReturnType<typeof makeIndex>, value: string, key: string) => void) => {
    const key = serviceKey(service)
    for (const port of wantedPorts(service, options)) apply(external, port, key)
    for (const port of internalPorts(service, options)) apply(internal, port, key)
    if (liveDesired(service, options) !== undefined) apply(namespaces, service.metadata?.namespace ?? "default", key)
  }
  const add = (service: Service) => change(service, (index, value, key) => index.add(value, key))
  const remove = (service: Service) => change(service, (index, value, key) => index.remove(value, key))

  return {
    update: (previous, next) => {
      if (previous !== undefined) remove(previous)
      if (next !== undefined) add(next)
    },
    rebuild: (services) => {
      external.clear()
      internal.clear()
      namespaces.clear()
      for (const service of services) add(service)
    },
    claimants: external.get,
    internalClaimants: internal.get,
    namespaceMembers: namespaces.get
  }
}
