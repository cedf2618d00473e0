/**
 * Listing a router's whole table without ever sending a request miniupnpd dies of (2.3.1 and
 * earlier crash when one GetListOfPortMappings range holds more than 128 mappings of a
 * protocol: README, "Large tables on miniupnpd"). Stateful: each listing is guided by the ranges
 * the previous one found mappings in, and by its count, kept in a `Ref`.
 */
import { Effect, Ref, Result } from "effect"
import { GatewayProtocolError } from "../GatewayError.ts"
import type { MappingEntry, Protocol } from "../Mapping.ts"
import {
  getGenericPortMappingEntry,
  getListOfPortMappings,
  type IgdEndpoint,
  isListingUnusable,
  isUpnp,
  type Listing
} from "./IgdActions.ts"
import type { SoapError, SoapTransport } from "./SoapTransport.ts"

/** How a table is listed: range sizes and limits. */
export interface ListingOptions {
  /**
   * Entries per GetListOfPortMappings page (NewNumberOfPorts). The ranges asked for hold at most
   * `rangeCapacity` entries, so a page never needs a next one on miniupnpd (whose pages follow
   * its rule order, not the port order, so "the next page starts after the highest port" would
   * skip entries).
   */
  readonly pageSize: number
  /**
   * The most mappings of one protocol one GetListOfPortMappings range may hold. miniupnpd
   * (2.3.1 and earlier) gathers a range's ports into an array of 128 and, past that, writes
   * beyond its end and dies; a range no wider than this can never hold more.
   */
  readonly rangeCapacity: number
  /**
   * With fewer mappings than this in the whole table, one full-range request per protocol is
   * safe. Kept well under `rangeCapacity` so that mappings added between the count and the
   * listing cannot push a range over it.
   */
  readonly fullRangeLimit: number
  /** A listing longer than this is taken as a router that never ends it (no 713). */
  readonly maxEntries: number
  /** This many unreadable entries in a row and the listing is taken as broken. */
  readonly maxConsecutiveUnreadable: number
}

/** miniupnpd-safe: 128-port ranges, whole-range requests below 64 mappings. */
export const defaultListingOptions: ListingOptions = {
  pageSize: 1000,
  rangeCapacity: 128,
  fullRangeLimit: 64,
  maxEntries: 8192,
  maxConsecutiveUnreadable: 32
}

/** The highest port; listings cover 1 to this. */
const LAST_PORT = 65535

/** One router's table, listed the safe way; the ranges a port read shares. */
export interface TableListing {
  /**
   * The whole table. Where the router has IGDv2 and holds fewer than `fullRangeLimit`
   * mappings, one GetListOfPortMappings per protocol; with more, the cheaper of
   * GetGenericPortMappingEntry from index 0 until 713 and GetListOfPortMappings over ranges
   * of `rangeCapacity` ports, so no request can hold more than miniupnpd survives. Without
   * IGDv2 (or on 401/402/404/501/602 or an unreadable listing), the generic listing. Fails
   * rather than returning a listing that broke off.
   */
  readonly listAll: Effect.Effect<Listing, SoapError>
  /** The first port of the `rangeCapacity`-port range that holds this port. */
  readonly rangeOf: (port: number) => number
  /**
   * One protocol's mappings on the ports from `first` to `last`, which lie in one
   * `rangeCapacity`-port range (a span miniupnpd can always answer).
   */
  readonly listSpan: (protocol: Protocol, first: number, last: number) => Effect.Effect<Listing, SoapError>
  /**
   * A mapping was just made at this port: the next listing asks its range directly. Without it,
   * a table that grew from empty since the last listing is listed entry by entry (a call per
   * mapping) where a few range requests would do.
   */
  readonly noteMapped: (protocol: Protocol, port: number) => Effect.Effect<void>
}

/** The listing of one router's table; `provide` gives each call the SOAP transport. */
export const makeTableListing = Effect.fnUntraced(function*(
  endpoint: IgdEndpoint,
  provide: <A, E>(effect: Effect.Effect<A, E, SoapTransport>) => Effect.Effect<A, E>,
  options?: Partial<ListingOptions>
) {
  const listing = { ...defaultListingOptions, ...options }
  const router = endpoint.controlUrl

  const listGeneric = Effect.gen(function*() {
    const entries: Array<MappingEntry> = []
    let unreadable = 0
    let consecutive = 0
    for (let index = 0; ; index++) {
      if (index >= listing.maxEntries) {
        return yield* new GatewayProtocolError({
          router,
          action: "GetGenericPortMappingEntry",
          reason: `listing did not end (no 713) after ${listing.maxEntries} entries`
        })
      }
      const result = yield* Effect.result(provide(getGenericPortMappingEntry(endpoint, index)))
      if (Result.isSuccess(result)) {
        entries.push(result.success)
        consecutive = 0
        continue
      }
      const error = result.failure
      if (isUpnp(error, 713)) break
      // A broken connection leaves the rest unknown: never return what was read so far.
      if (error._tag === "GatewayUnreachable") return yield* error
      // Some routers index from 1 and answer index 0 with an error of their own.
      if (index === 0 && error._tag === "UpnpError") continue
      unreadable++
      consecutive++
      if (consecutive >= listing.maxConsecutiveUnreadable) {
        return yield* new GatewayProtocolError({
          router,
          action: "GetGenericPortMappingEntry",
          reason: `listing broke off: ${consecutive} unreadable entries in a row up to index ${index} (last: ${error.message})`
        })
      }
    }
    return { entries, unreadable } satisfies Listing
  })

  /** One protocol's mappings with external ports in [first, last], page after page. */
  const listRange = (protocol: Protocol, first: number, last: number) =>
    Effect.gen(function*() {
      const entries: Array<MappingEntry> = []
      let unreadable = 0
      let startPort = first
      while (startPort <= last) {
        const page = yield* provide(getListOfPortMappings(endpoint, {
          protocol,
          startPort,
          endPort: last,
          numberOfPorts: listing.pageSize
        })).pipe(
          // 714/730: nothing in the range.
          Effect.catchIf((error) => isUpnp(error, 714, 730), () => Effect.succeed<Listing>({ entries: [], unreadable: 0 }))
        )
        entries.push(...page.entries)
        unreadable += page.unreadable
        if (page.entries.length + page.unreadable < listing.pageSize) break
        // A full page: the next one starts after its highest port, which holds only if the page
        // came in port order. A page we cannot read, one in another order (miniupnpd's rule
        // order), or a router that ignores NewStartPort, would leave the rest unknown.
        const ports = page.entries.map((entry) => entry.externalPort)
        const next = Math.max(0, ...ports) + 1
        if (page.unreadable > 0 || next <= startPort || ports.some((port, index) => index > 0 && port < ports[index - 1]!)) {
          return yield* new GatewayProtocolError({
            router,
            action: "GetListOfPortMappings",
            reason: `a full page from port ${startPort} is not in port order: the rest of the range cannot be asked for`
          })
        }
        startPort = next
        if (entries.length > listing.maxEntries) {
          return yield* new GatewayProtocolError({
            router,
            action: "GetListOfPortMappings",
            reason: `listing did not end after ${listing.maxEntries} entries`
          })
        }
      }
      return { entries, unreadable } satisfies Listing
    })

  const merged = (listings: ReadonlyArray<Listing>): Listing => ({
    entries: listings.flatMap((part) => part.entries),
    unreadable: listings.reduce((sum, part) => sum + part.unreadable, 0)
  })

  const fullRanges = Effect.map(
    Effect.all([listRange("TCP", 1, LAST_PORT), listRange("UDP", 1, LAST_PORT)]),
    merged
  )

  const rangeOf = (port: number) => Math.floor((port - 1) / listing.rangeCapacity) * listing.rangeCapacity + 1
  const rangeEnd = (first: number) => Math.min(LAST_PORT, first + listing.rangeCapacity - 1)

  const windowsPerProtocol = Math.ceil(LAST_PORT / listing.rangeCapacity)
  const windowed = Effect.map(
    Effect.forEach(
      (["TCP", "UDP"] as const).flatMap((protocol) =>
        Array.from({ length: windowsPerProtocol }, (_, window) => {
          const first = 1 + window * listing.rangeCapacity
          return [protocol, first, rangeEnd(first)] as const
        })
      ),
      ([protocol, first, last]) => listRange(protocol, first, last),
      { concurrency: 4 }
    ),
    merged
  )

  /**
   * Whether the table holds an entry at this index (so more than `index` mappings, counting
   * from 0), or undefined where the router cannot say. An entry that does not decode is there.
   */
  const holdsIndex = (index: number) =>
    provide(getGenericPortMappingEntry(endpoint, index)).pipe(
      Effect.as<boolean | undefined>(true),
      Effect.catchIf(
        (error) => error._tag !== "GatewayUnreachable",
        (error) => Effect.succeed(error._tag === "GatewayProtocolError" ? true : isUpnp(error, 713) ? false : undefined)
      )
    )

  // What the last listing found: the ranges (first port, by protocol) that held mappings, and
  // the count of the table. A listing is guided by them.
  const previous = yield* Ref.make<{
    readonly ranges: ReadonlyMap<Protocol, ReadonlySet<number>> | undefined
    readonly count: number | undefined
  }>({ ranges: undefined, count: undefined })

  /**
   * How many mappings the table holds (both protocols), found by GetGenericPortMappingEntry at
   * doubling, then halving, indexes (about 2 log2 n calls); undefined where the router cannot
   * say, or past `maxEntries`.
   */
  const countEntries = Effect.gen(function*() {
    const previousCount = (yield* Ref.get(previous)).count
    // Unchanged since the last count (the usual resync): two calls say so.
    if (previousCount !== undefined && previousCount > listing.fullRangeLimit) {
      const [last, past] = yield* Effect.all([holdsIndex(previousCount - 1), holdsIndex(previousCount)])
      if (last === true && past === false) return previousCount
    }
    let held = listing.fullRangeLimit
    let free = 2 * listing.fullRangeLimit
    for (;;) {
      const holds = yield* holdsIndex(free)
      if (holds === undefined) return undefined
      if (!holds) break
      held = free
      free *= 2
      if (held >= listing.maxEntries) return undefined
    }
    while (free - held > 1) {
      const middle = Math.floor((held + free) / 2)
      const holds = yield* holdsIndex(middle)
      if (holds === undefined) return undefined
      if (holds) held = middle
      else free = middle
    }
    return free
  })

  /**
   * Guided by the last listing: the ranges that held mappings then, one request each; then,
   * if what is left of the count is small enough for any range, the gaps between them in one
   * request each. Undefined when too many mappings may lie outside those ranges.
   */
  const listGuided = (count: number, ranges: ReadonlyMap<Protocol, ReadonlySet<number>>) =>
    Effect.gen(function*() {
      const protocols = ["TCP", "UDP"] as const
      const known = protocols.flatMap((protocol) =>
        [...(ranges.get(protocol) ?? [])].map((first) =>
          [protocol, first, rangeEnd(first)] as const
        )
      )
      const inRanges = yield* Effect.forEach(known, ([protocol, first, last]) => listRange(protocol, first, last), {
        concurrency: 4
      })
      const found = inRanges.reduce((sum, part) => sum + part.entries.length + part.unreadable, 0)
      if (count - found > listing.fullRangeLimit) return undefined
      const gaps = protocols.flatMap((protocol) => {
        const starts = [...(ranges.get(protocol) ?? [])].sort((a, b) => a - b)
        const result: Array<readonly [Protocol, number, number]> = []
        let next = 1
        for (const first of starts) {
          if (first > next) result.push([protocol, next, first - 1])
          next = first + listing.rangeCapacity
        }
        if (next <= LAST_PORT) result.push([protocol, next, LAST_PORT])
        return result
      })
      const outside = yield* Effect.forEach(gaps, ([protocol, first, last]) => listRange(protocol, first, last), {
        concurrency: 4
      })
      return merged([...inRanges, ...outside])
    })

  const listLarge = Effect.gen(function*() {
    const count = yield* countEntries
    const previousRanges = (yield* Ref.updateAndGet(previous, (last) => ({ ...last, count }))).ranges
    if (count !== undefined && previousRanges !== undefined) {
      const rangesToAsk = [...previousRanges.values()].reduce((sum, set) => sum + set.size, 0)
      if (rangesToAsk < count) {
        const guided = yield* listGuided(count, previousRanges)
        if (guided !== undefined) return guided
      }
    }
    // Entry by entry costs a call per mapping; ranges of `rangeCapacity` ports a flat 1,024.
    return count !== undefined && count < 2 * windowsPerProtocol ? yield* listGeneric : yield* windowed
  })

  const listV2 = Effect.gen(function*() {
    // A router without the generic action is not the miniupnpd this guards against.
    const result = (yield* holdsIndex(listing.fullRangeLimit)) !== true ? yield* fullRanges : yield* listLarge
    const ranges = new Map<Protocol, Set<number>>([["TCP", new Set()], ["UDP", new Set()]])
    for (const entry of result.entries) ranges.get(entry.protocol)?.add(rangeOf(entry.externalPort))
    yield* Ref.update(previous, (last) => ({ ...last, ranges }))
    return result
  })

  const listAll: Effect.Effect<Listing, SoapError> = endpoint.igdV2
    ? listV2.pipe(
      Effect.catchIf(
        isListingUnusable,
        (error) =>
          Effect.logDebug(`GetListOfPortMappings unusable on ${router} (${error.message}); listing entry by entry`).pipe(
            Effect.andThen(listGeneric)
          )
      )
    )
    : listGeneric

  const noteMapped = (protocol: Protocol, port: number) =>
    Ref.update(previous, (last) => {
      const first = rangeOf(port)
      if (last.ranges?.get(protocol)?.has(first) === true) return last
      const ranges = new Map(last.ranges ?? [])
      ranges.set(protocol, new Set([...(ranges.get(protocol) ?? []), first]))
      return { ...last, ranges }
    })

  return {
    listAll,
    rangeOf,
    listSpan: (protocol, first, last) => listRange(protocol, first, Math.min(last, rangeEnd(rangeOf(first)))),
    noteMapped
  } satisfies TableListing
})
