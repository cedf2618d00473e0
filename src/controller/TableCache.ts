/**
 * The router's table as last seen. A full listing (at resync, after a reboot) makes it
 * complete, so a resync pass reconciles every Service without one call per port; a watch event
 * reads its Service's ports afresh instead. Never the source of a deletion by itself.
 */
import { Effect } from "effect"
import type { MappingEntry, Protocol } from "../gateway/Mapping.ts"
import { portKey } from "./MappingRecord.ts"
import type { ObservedTable } from "./planner.ts"

type PortRef = { readonly protocol: Protocol; readonly externalPort: number }

export interface TableCache {
  readonly set: (port: PortRef, entry: MappingEntry | null) => Effect.Effect<void>
  /** The entries for these ports, or undefined when the cache cannot vouch for an absence. */
  readonly lookup: (ports: ReadonlyArray<PortRef>) => Effect.Effect<ObservedTable | undefined>
  /** Replaces the whole cache with a complete listing. */
  readonly replaceAll: (entries: ReadonlyArray<MappingEntry>) => Effect.Effect<void>
  /** Forgets completeness: the router may have changed behind our back. */
  readonly invalidate: Effect.Effect<void>
  readonly size: Effect.Effect<number>
}

export const makeTableCache = (): TableCache => {
  let entries = new Map<string, MappingEntry | null>()
  let complete = false
  return {
    set: (port, entry) => Effect.sync(() => void entries.set(portKey(port), entry)),
    lookup: (ports) =>
      Effect.sync(() => {
        if (!complete) return undefined
        return new Map(ports.map((port) => [portKey(port), entries.get(portKey(port)) ?? null]))
      }),
    replaceAll: (listing) =>
      Effect.sync(() => {
        entries = new Map(listing.map((entry) => [portKey(entry), entry]))
        complete = true
      }),
    invalidate: Effect.sync(() => {
      complete = false
    }),
    size: Effect.sync(() => [...entries.values()].filter((entry) => entry !== null).length)
  }
}
