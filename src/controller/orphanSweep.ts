/**
 * The orphan sweep: after each complete listing a full pass makes, the mappings there that are
 * this cluster's (its description prefix, to one of its Nodes) but that no Service wants or
 * records are deleted. Only from a complete listing, and only once the Service and Node lists
 * are in: a partial view must never delete anything. Only what the controller itself recorded
 * keeps a mapping alive: a forged or broken record protects nothing, and blocks nothing.
 */
import { Effect, HashMap, Layer, Ref, Stream, SubscriptionRef } from "effect"
import { ClusterState, ownershipOf } from "./ClusterState.ts"
import { describePort } from "./conditions.ts"
import { FullPass, type Listing } from "./FullPass.ts"
import { readRecord, type RecordCheck } from "./MappingRecord.ts"
import { planOrphans } from "./planner.ts"
import { RecordKey } from "./RecordKey.ts"
import { Routers } from "./Routers.ts"
import { type DesiredOptions, liveDesired, type SelectionOptions } from "./ServiceSpec.ts"

/** Sweeps after every full pass for as long as the layer lives. */
export const orphanSweepLayer = (options: SelectionOptions & DesiredOptions) =>
  Layer.effectDiscard(Effect.gen(function*() {
    const cluster = yield* ClusterState
    const routers = yield* Routers
    const fullPass = yield* FullPass
    const check: RecordCheck = { key: yield* RecordKey, clusterName: options.clusterName }
    const swept = yield* Ref.make(0)

    const sweep = Effect.fnUntraced(function*({ entries, router }: Listing) {
      const snapshot = yield* cluster.snapshot
      if (!snapshot.synced.services || !snapshot.synced.nodes) return
      const live = new Set<string>()
      for (const service of HashMap.values(snapshot.services)) {
        for (const port of liveDesired(service, options)?.ports ?? []) live.add(port.description)
        for (const mapping of readRecord(service, check).trusted) live.add(mapping.description)
      }
      const ownership = ownershipOf(snapshot, options.clusterName, yield* routers.localAddresses)
      for (const orphan of planOrphans(entries, live, ownership)) {
        yield* router.mapper.unmap(orphan.entry).pipe(
          Effect.tap(() => router.table.set(orphan.entry, null)),
          Effect.tap(() => Effect.log(`deleted orphaned mapping ${describePort(orphan.entry)} '${orphan.entry.description}'`)),
          Effect.catch((error) => Effect.logWarning(`could not delete orphaned mapping: ${error.message}`))
        )
      }
    })

    yield* SubscriptionRef.changes(fullPass.listings).pipe(
      Stream.runForEach((published) =>
        Effect.flatMap(
          Ref.modify(swept, (last) => [published.pass > last, Math.max(last, published.pass)] as const),
          (fresh) => fresh ? Effect.forEach(published.listings, sweep, { discard: true }) : Effect.void
        )
      ),
      Effect.forkScoped
    )
  }))
