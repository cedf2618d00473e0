/**
 * The router's table as last seen. A full listing (at resync, after a reboot) makes it
 * complete, so a resync pass reconciles every Service without one call per port; a watch event
 * reads its Service's ports afresh instead. For routers that cannot list (NAT-PMP, PCP) it holds
 * what we mapped ourselves. Remaining leases count down from when an entry was seen. Never the
 * source of a deletion by itself.
 */
import { Clock, Effect } from "effect"
import type { MappingEntry, Protocol } from "../gateway/Mapping.ts"
import { portKey } from "./MappingRecord.ts"
import type { ObservedTable } from "./planner.ts"

type PortRef = { readonly protocol: Protocol; readonly externalPort: number }

export interface TableCache {
  readonly set: (port: PortRef, entry: MappingEntry | null) => Effect.Effect<void>
  /** What is known of one port: an entry, absent (null), or unknown (undefined). */
  readonly known: (port: PortRef) => Effect.Effect<MappingEntry | null | undefined>
  /** The entries for these ports, or undefined when the cache cannot vouch for an absence. */
  readonly lookup: (ports: ReadonlyArray<PortRef>) => Effect.Effect<ObservedTable | undefined>
  /** Replaces the whole cache with a complete listing. */
  readonly replaceAll: (entries: ReadonlyArray<MappingEntry>) => Effect.Effect<void>
  /** Forgets everything: the router may have changed behind our back (a reboot, a failure). */
  readonly invalidate: Effect.Effect<void>
}

interface Seen {
  readonly entry: MappingEntry | null
  readonly at: number
}

export const makeTableCache = (): TableCache => {
  let entries = new Map<string, Seen>()
  let complete = false

  const current = (seen: Seen, now: number): MappingEntry | null => {
    const entry = seen.entry
    if (entry === null || entry.leaseDuration === undefined || entry.leaseDuration === 0) return entry
    return { ...entry, leaseDuration: Math.max(0, entry.leaseDuration - Math.floor((now - seen.at) / 1000)) }
  }

  return {
    set: (port, entry) =>
      Clock.currentTimeMillis.pipe(Effect.map((at) => void entries.set(portKey(port), { entry, at }))),
    known: (port) =>
      Clock.currentTimeMillis.pipe(Effect.map((now) => {
        const seen = entries.get(portKey(port))
        if (seen !== undefined) return current(seen, now)
        return complete ? null : undefined
      })),
    lookup: (ports) =>
      Clock.currentTimeMillis.pipe(Effect.map((now) => {
        if (!complete) return undefined
        return new Map(ports.map((port) => {
          const seen = entries.get(portKey(port))
          return [portKey(port), seen === undefined ? null : current(seen, now)]
        }))
      })),
    replaceAll: (listing) =>
      Clock.currentTimeMillis.pipe(Effect.map((at) => {
        entries = new Map(listing.map((entry) => [portKey(entry), { entry, at }]))
        complete = true
      })),
    invalidate: Effect.sync(() => {
      entries = new Map()
      complete = false
    })
  }
}
