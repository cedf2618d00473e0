/**
 * The full pass: list every readable router's table, then queue every Service to be reconciled
 * from the fresh table. It runs at startup (once the Service and Node lists are in), at every
 * resync, and when a router rebooted; one at a time. Each complete listing is published for the
 * orphan sweep (orphanSweep.ts). A pass that takes long says every 30 s what it waits for.
 */
import { Clock, Context, Duration, Effect, HashMap, Layer, Metric, Option, Ref, Semaphore, SubscriptionRef } from "effect"
import type { Backend, MappingEntry } from "../gateway/Mapping.ts"
import { ClusterState, isRelevant, ownershipOf } from "./ClusterState.ts"
import { portKey, readRecord, recordedBackend, type RecordCheck } from "./MappingRecord.ts"
import * as metrics from "./metrics.ts"
import { pinholePorts } from "./pinholePlan.ts"
import { RecordKey } from "./RecordKey.ts"
import { isOwned } from "./planner.ts"
import { type Router, Routers } from "./Routers.ts"
import { type FreshTable, settledByListing } from "./settled.ts"
import { liveDesired, selectService, type SelectionOptions, serviceKey, type DesiredOptions } from "./ServiceSpec.ts"
import { WorkQueue } from "./WorkQueue.ts"

/** A complete listing of one router's table, as a full pass read it. */
export interface Listing {
  readonly router: Router
  readonly entries: ReadonlyArray<MappingEntry>
}

/** The complete listings of one full pass, numbered. */
export interface PassListings {
  readonly pass: number
  readonly listings: ReadonlyArray<Listing>
}

/** How the full passes are going, for the health report. */
export interface FullPassProgress {
  /** The first full pass (routers found, tables listed, every Service queued) has run. */
  readonly initialPassDone: boolean
  /** When the last full pass ended (Clock time). */
  readonly lastResyncAt: number
}

/** Full passes, one at a time. */
export class FullPass extends Context.Service<FullPass, {
  /** Lists every readable router's table and queues every Service, as after a reboot. */
  readonly run: Effect.Effect<void>
  /**
   * The first pass, once both the Service and the Node lists are in (orphans are judged by
   * Services and by Node addresses); later calls do nothing.
   */
  readonly initial: Effect.Effect<void>
  /** Queues every Service the controller acts on (`verify`: read their ports afresh). */
  readonly enqueueAll: (verify: boolean) => Effect.Effect<void>
  /** The complete listings of the latest full pass. */
  readonly listings: SubscriptionRef.SubscriptionRef<PassListings>
  readonly progress: Effect.Effect<FullPassProgress>
}>()("edge-ccm/controller/FullPass") {
  /** Full passes over these routers and this cluster. */
  static layer(options: SelectionOptions & DesiredOptions): Layer.Layer<FullPass, never, ClusterState | Routers | WorkQueue | RecordKey> {
    return Layer.effect(FullPass, make(options))
  }
}

const make = Effect.fnUntraced(function*(options: SelectionOptions & DesiredOptions) {
  const recordCheck: RecordCheck = { key: yield* RecordKey, clusterName: options.clusterName }
  const cluster = yield* ClusterState
  const routers = yield* Routers
  const queue = yield* WorkQueue
  const lock = yield* Semaphore.make(1)
  const listings = yield* SubscriptionRef.make<PassListings>({ pass: 0, listings: [] })
  const progress = yield* Ref.make<FullPassProgress & { readonly initialPassStarted: boolean }>({
    initialPassStarted: false,
    initialPassDone: false,
    lastResyncAt: yield* Clock.currentTimeMillis
  })

  const enqueueAll = Effect.fn("FullPass.enqueueAll")(function*(verify: boolean) {
    yield* enqueueUnsettled(verify, [])
  })

  /** Queues every Service the controller acts on, but those a fresh table shows settled. */
  const enqueueUnsettled = Effect.fnUntraced(function*(verify: boolean, tables: ReadonlyArray<FreshTable>) {
    const snapshot = yield* cluster.snapshot
    let skipped = 0
    for (const service of HashMap.values(snapshot.services)) {
      if (!isRelevant(service, options)) continue
      if (tables.some((table) => settledByListing(service, options, recordCheck, table))) skipped++
      else yield* queue.add(serviceKey(service), { verify })
    }
    if (skipped > 0) yield* Effect.logDebug(`full pass: ${skipped} Services settled as the routers' tables show them`)
  })

  /**
   * Every protocol a Service asks for, or a record names, has its router before the pass:
   * cleanup and orphans need the routers even when no live Service uses them any more.
   */
  const registerRouters = Effect.gen(function*() {
    const snapshot = yield* cluster.snapshot
    const types = new Set<Backend | "auto">()
    for (const service of HashMap.values(snapshot.services)) {
      const selection = selectService(service, options)
      if (selection._tag === "Ours") types.add(selection.backend)
      for (const mapping of readRecord(service, recordCheck).trusted) types.add(recordedBackend(mapping))
    }
    yield* Effect.forEach(types, (type) => Effect.ignore(routers.forType(type)), { discard: true })
  })

  const steps = (progress: Ref.Ref<string>) =>
    Effect.gen(function*() {
      yield* Ref.set(progress, "finding the routers in use")
      yield* registerRouters
      let complete = true
      let owned = 0
      const fresh: Array<Listing> = []
      const tables: Array<FreshTable> = []
      for (const router of yield* routers.inUse) {
        if (!router.mapper.capabilities.readsTable) continue
        if (yield* routers.failing(router)) {
          // Not answering: its Services read their ports afresh (and fail fast) instead.
          yield* router.table.invalidate
          complete = false
          continue
        }
        yield* Ref.set(progress, `listing the table of ${router.backend}`)
        const listedAt = yield* Clock.currentTimeMillis
        const listing = yield* Effect.result(router.mapper.list)
        if (listing._tag === "Success" && listing.success !== undefined) {
          yield* routers.listed(router, listedAt)
          yield* router.table.replaceAll(listing.success, listedAt)
          const ownership = ownershipOf(yield* cluster.snapshot, options.clusterName, yield* routers.localAddresses)
          owned += listing.success.filter((entry) => isOwned(entry, ownership)).length
          fresh.push({ router, entries: listing.success })
          const view = yield* Effect.option(routers.view(router))
          if (Option.isSome(view)) {
            tables.push({
              backend: router.backend,
              view: view.value,
              entries: new Map(listing.success.map((entry) => [portKey(entry), entry]))
            })
          }
        } else {
          if (listing._tag === "Failure") yield* Effect.logWarning(`router table unreadable: ${listing.failure.message}`)
          yield* router.table.invalidate
          complete = false
        }
      }
      yield* SubscriptionRef.update(listings, (previous) => ({ pass: previous.pass + 1, listings: fresh }))
      yield* Metric.update(Metric.withAttributes(metrics.ownedMappings, { family: "ipv4" }), owned)
      yield* metrics.count(metrics.fullPasses, { result: complete ? "complete" : "incomplete" })
      yield* Ref.set(progress, "queueing every Service")
      // After a complete listing, a Service it shows settled has nothing to repair.
      yield* enqueueUnsettled(!complete, complete ? tables : [])
      const snapshot = yield* cluster.snapshot
      let desired = 0
      let pinholes = 0
      for (const service of HashMap.values(snapshot.services)) {
        const ports = liveDesired(service, options)?.ports.length
        if (ports === undefined) continue
        desired += ports
        pinholes += pinholePorts(service).length
      }
      yield* Metric.update(Metric.withAttributes(metrics.desiredMappings, { family: "ipv4" }), desired)
      yield* Metric.update(Metric.withAttributes(metrics.desiredMappings, { family: "ipv6" }), pinholes)
    })

  const run = Effect.gen(function*() {
    const step = yield* Ref.make("waiting for the previous full pass")
    const startedAt = yield* Clock.currentTimeMillis
    const watchdog = Effect.sleep(Duration.seconds(30)).pipe(
      Effect.andThen(Clock.currentTimeMillis),
      Effect.flatMap((now) =>
        Effect.flatMap(Ref.get(step), (waiting) =>
          Effect.logWarning(`full pass running for ${Math.round((now - startedAt) / 1000)} s: ${waiting}`))
      ),
      Effect.forever
    )
    yield* Effect.raceFirst(Semaphore.withPermit(lock)(steps(step)), watchdog)
    const endedAt = yield* Clock.currentTimeMillis
    yield* Ref.update(progress, (now) => ({ ...now, lastResyncAt: endedAt }))
  }).pipe(Effect.withSpan("FullPass.run"))

  const initial = Effect.gen(function*() {
    const snapshot = yield* cluster.snapshot
    if (!snapshot.synced.services || !snapshot.synced.nodes) return
    const first = yield* Ref.modify(progress, (now) => [!now.initialPassStarted, { ...now, initialPassStarted: true }] as const)
    if (!first) return
    yield* routers.lookForTableReader.pipe(
      Effect.andThen(run),
      Effect.ensuring(Ref.update(progress, (now) => ({ ...now, initialPassDone: true })))
    )
  }).pipe(Effect.withSpan("FullPass.initial"))

  return FullPass.of({
    run,
    initial,
    enqueueAll,
    listings,
    progress: Effect.map(Ref.get(progress), ({ initialPassDone, lastResyncAt }) => ({ initialPassDone, lastResyncAt }))
  })
})
