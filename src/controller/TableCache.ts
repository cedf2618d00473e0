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
 *
 * One `Ref` holds it all, as an immutable value.
 */
import { Clock, Effect, HashMap, HashSet, Option, Ref } from "effect"
import type { MappingEntry, Protocol } from "../gateway/Mapping.ts"
import { portKey } from "./MappingRecord.ts"
import type { ObservedTable } from "./planner.ts"

type PortRef = { readonly protocol: Protocol; readonly externalPort: number }

/** What we know of one router's table; each method reads or replaces the one `Ref`. */
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

interface Table {
  readonly entries: HashMap.HashMap<string, Seen>
  /** A listing made it complete: a port it lacks is absent. */
  readonly complete: boolean
  /** Port keys added (when) but not yet seen in a listing. */
  readonly unconfirmed: HashMap.HashMap<string, number>
  /** Port keys added, then missing from a listing. */
  readonly suspects: HashSet.HashSet<string>
}

const empty: Table = { entries: HashMap.empty(), complete: false, unconfirmed: HashMap.empty(), suspects: HashSet.empty() }

/** The entry as it is now: its remaining lease counted down since it was seen. */
const current = (seen: Seen, now: number): MappingEntry | null => {
  const entry = seen.entry
  if (entry === null || entry.leaseDuration === undefined || entry.leaseDuration === 0) return entry
  return { ...entry, leaseDuration: Math.max(0, entry.leaseDuration - Math.floor((now - seen.at) / 1000)) }
}

/** An empty cache: nothing known until a listing or our own calls. */
export const makeTableCache: Effect.Effect<TableCache> = Effect.map(Ref.make(empty), (ref): TableCache => {
  const update = (change: (table: Table, now: number) => Table) =>
    Effect.flatMap(Clock.currentTimeMillis, (now) => Ref.update(ref, (table) => change(table, now)))
  const read = <A>(f: (table: Table, now: number) => A) =>
    Effect.flatMap(Clock.currentTimeMillis, (now) => Effect.map(Ref.get(ref), (table) => f(table, now)))

  return {
    set: (port, entry, options) =>
      update((table, at) => {
        const key = portKey(port)
        const entries = HashMap.set(table.entries, key, { entry, at })
        return entry !== null && options?.unconfirmed === true
          ? { ...table, entries, unconfirmed: HashMap.set(table.unconfirmed, key, at) }
          // Read back and held, or deleted: nothing left to doubt.
          : { ...table, entries, unconfirmed: HashMap.remove(table.unconfirmed, key), suspects: HashSet.remove(table.suspects, key) }
      }),
    seen: (port, entry) =>
      update((table, at) => {
        const key = portKey(port)
        const suspects = entry !== null
          ? HashSet.remove(table.suspects, key)
          : HashMap.has(table.unconfirmed, key)
          ? HashSet.add(table.suspects, key)
          : table.suspects
        return {
          ...table,
          entries: HashMap.set(table.entries, key, { entry, at }),
          unconfirmed: HashMap.remove(table.unconfirmed, key),
          suspects
        }
      }),
    suspect: (port) => Effect.map(Ref.get(ref), (table) => HashSet.has(table.suspects, portKey(port))),
    known: (port) =>
      read((table, now) =>
        Option.match(HashMap.get(table.entries, portKey(port)), {
          onNone: () => table.complete ? null : undefined,
          onSome: (seen) => current(seen, now)
        })
      ),
    lookup: (ports) =>
      read((table, now): ObservedTable | undefined => {
        if (!table.complete) return undefined
        return new Map(ports.map((port) => {
          const seen = HashMap.get(table.entries, portKey(port))
          return [portKey(port), Option.isNone(seen) ? null : current(seen.value, now)]
        }))
      }),
    replaceAll: (listing, listedAt) =>
      Ref.update(ref, (table) => {
        let entries = HashMap.fromIterable(listing.map((entry): readonly [string, Seen] => [portKey(entry), { entry, at: listedAt }]))
        // What our own calls saw after the listing was asked for is newer than the listing.
        for (const [key, seen] of table.entries) if (seen.at > listedAt) entries = HashMap.set(entries, key, seen)
        let unconfirmed = table.unconfirmed
        let suspects = table.suspects
        for (const [key, since] of table.unconfirmed) {
          // Added while the listing was read: the next one judges it.
          if (since >= listedAt) continue
          const listed = HashMap.get(entries, key)
          if (Option.isNone(listed) || listed.value.entry === null) suspects = HashSet.add(suspects, key)
          unconfirmed = HashMap.remove(unconfirmed, key)
        }
        return { entries, complete: true, unconfirmed, suspects }
      }),
    // A reboot or a failure explains a loss: it says nothing about the router's word, so the
    // adds awaiting a listing are forgotten too (the suspects stay).
    invalidate: Ref.update(ref, (table) => ({ ...table, entries: HashMap.empty(), complete: false, unconfirmed: HashMap.empty() }))
  }
})
