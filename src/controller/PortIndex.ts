/**
 * Which live Services ask for each external port (by port key), kept in step with the watch's
 * store, so finding a Service's rivals or contenders costs its own ports, not a scan of every
 * Service in the cluster.
 */
import type { V1Service } from "@kubernetes/client-node"
import { portKey } from "./MappingRecord.ts"
import { type DesiredOptions, liveDesired, type SelectionOptions, serviceKey } from "./ServiceSpec.ts"

export interface PortIndex {
  /** After the store's entry for this Service changed (undefined: deleted). */
  readonly update: (previous: V1Service | undefined, next: V1Service | undefined) => void
  /** After a relist replaced the whole store. */
  readonly rebuild: (services: Iterable<V1Service>) => void
  /** Keys of the live Services that ask for this port. */
  readonly claimants: (port: string) => ReadonlySet<string>
}

const none: ReadonlySet<string> = new Set()

/** The port keys a Service asks for: ours and not being deleted, else none. */
export const wantedPorts = (service: V1Service, options: SelectionOptions & DesiredOptions): ReadonlyArray<string> =>
  liveDesired(service, options)?.ports.map(portKey) ?? []

export const makePortIndex = (options: SelectionOptions & DesiredOptions): PortIndex => {
  const byPort = new Map<string, Set<string>>()

  const remove = (service: V1Service) => {
    const key = serviceKey(service)
    for (const port of wantedPorts(service, options)) {
      const keys = byPort.get(port)
      keys?.delete(key)
      if (keys?.size === 0) byPort.delete(port)
    }
  }
  const add = (service: V1Service) => {
    const key = serviceKey(service)
    for (const port of wantedPorts(service, options)) {
      const keys = byPort.get(port) ?? new Set<string>()
      keys.add(key)
      byPort.set(port, keys)
    }
  }

  return {
    update: (previous, next) => {
      if (previous !== undefined) remove(previous)
      if (next !== undefined) add(next)
    },
    rebuild: (services) => {
      byPort.clear()
      for (const service of services) add(service)
    },
    claimants: (port) => byPort.get(port) ?? none
  }
}
