/**
 * The router's table as last seen. A full listing (at resync, after a reboot) makes it
 * complete, so a resync pass reconciles every Service without one call per port; a watch event
 * reads its Service's ports afresh instead. For routers that cannot list (NAT-PMP, PCP) it holds
 * what we mapped ourselves. Remaining leases count down from when an entry was seen. Never the
 * source of a deletion by itself.
 *
 * It also keeps which of our adds no listing has confirmed yet: a first add is not read back
 * (that would cost a router call per port), so a port the next listing lacks, without a reboot
 * between, is suspect, and is read back after every add until the router is seen to hold it.
 */
import { Clock, Effect } from "effect"
import type { MappingEntry, Protocol } from "../gateway/Mapping.ts"
import { portKey } from "./MappingRecord.ts"
import type { ObservedTable } from "./planner.ts"

type PortRef = { readonly protocol: Protocol; readonly externalPort: number }

export interface TableCache {
  /** The outcome of our own add or delete; `unconfirmed` for an add that was not read back. */
  readonly set: (port: PortRef, entry: MappingEntry | null, options?: { readonly unconfirmed?: boolean }) => Effect.Effect<void>
  /** What a read of one port showed. */
  readonly seen: (port: PortRef, entry: MappingEntry | null) => Effect.Effect<void>
  /** Whether the router once reported this port added but a later listing lacked it. */
  readonly suspect: (port: PortRef) => Effect.Effect<boolean>
  /** What is known of one port: an entry, absent (null), or unknown (undefined). */
  readonly known: (port: PortRef) => Effect.Effect<MappingEntry | null | undefined>
  /** The entries for these ports, or undefined when the cache cannot vouch for an absence. */
  readonly lookup: (ports: ReadonlyArray<PortRef>) => Effect.Effect<ObservedTable | undefined>
  /**
   * Replaces the cache with a complete listing asked for at `listedAt`, keeping what our own
   * calls saw after that, and judges the adds made before it.
   */
  readonly replaceAll: (entries: ReadonlyArray<MappingEntry>, listedAt: number) => Effect.Effect<void>
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
  // Port keys: added (when) but not yet seen in a listing; and added, then missing from one.
  let unconfirmed = new Map<string, number>()
  const suspects = new Set<string>()

  const current = (seen: Seen, now: number): MappingEntry | null => {
    const entry = seen.entry
    if (entry === null || entry.leaseDuration === undefined || entry.leaseDuration === 0) return entry
    return { ...entry, leaseDuration: Math.max(0, entry.leaseDuration - Math.floor((now - seen.at) / 1000)) }
  }

  return {
    set: (port, entry, options) =>
      Clock.currentTimeMillis.pipe(Effect.map((at) => {
        const key = portKey(port)
        entries.set(key, { entry, at })
        if (entry !== null && options?.unconfirmed === true) unconfirmed.set(key, at)
        else {
          unconfirmed.delete(key)
          // Read back and held, or deleted: nothing left to doubt.
          suspects.delete(key)
        }
      })),
    seen: (port, entry) =>
      Clock.currentTimeMillis.pipe(Effect.map((at) => {
        const key = portKey(port)
        entries.set(key, { entry, at })
        if (entry !== null) suspects.delete(key)
        else if (unconfirmed.has(key)) suspects.add(key)
        unconfirmed.delete(key)
      })),
    suspect: (port) => Effect.sync(() => suspects.has(portKey(port))),
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
    replaceAll: (listing, listedAt) =>
      Effect.sync(() => {
        const listed = new Map<string, Seen>(listing.map((entry) => [portKey(entry), { entry, at: listedAt }]))
        for (const [key, seen] of entries) if (seen.at > listedAt) listed.set(key, seen)
        entries = listed
        complete = true
        for (const [key, since] of unconfirmed) {
          // Added while the listing was read: the next one judges it.
          if (since >= listedAt) continue
          if ((listed.get(key)?.entry ?? null) === null) suspects.add(key)
          unconfirmed.delete(key)
        }
      }),
    invalidate: Effect.sync(() => {
      entries = new Map()
      complete = false
      // A reboot or a failure explains a loss: it says nothing about the router's word.
      unconfirmed = new Map()
    })
  }
}
