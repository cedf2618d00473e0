/**
 * The watches, as one loop: the Services, Nodes and EndpointSlices the apiserver streams go into
 * `ClusterState`, and each change queues the Services it concerns: the Service itself (unless it
 * is not ours), the others that want one of its ports or share its namespace's quota, and a
 * Service with `externalTrafficPolicy: Local` whose endpoints moved. The first lists start the
 * first full pass; a relist queues every Service.
 */
import { Effect, Layer, Stream } from "effect"
import { Kube } from "../kube/Kube.ts"
import { ClusterState, isRelevant } from "./ClusterState.ts"
import { FullPass } from "./FullPass.ts"
import type { RecordCheck } from "./MappingRecord.ts"
import { contenders, type NeighbourOptions, quotaContenders } from "./neighbours.ts"
import { RecordKey } from "./RecordKey.ts"
import { ServiceEvents } from "./ServiceEvents.ts"
import { serviceKey } from "./ServiceSpec.ts"
import { WorkQueue } from "./WorkQueue.ts"

/** Consumes the three watches for as long as the layer lives. */
export const watchesLayer = (options: NeighbourOptions) =>
  Layer.effectDiscard(Effect.gen(function*() {
    const kube = yield* Kube
    const cluster = yield* ClusterState
    const queue = yield* WorkQueue
    const fullPass = yield* FullPass
    const events = yield* ServiceEvents
    const check: RecordCheck = { key: yield* RecordKey, clusterName: options.clusterName }

    yield* kube.watchServices.pipe(
      Stream.runForEach(Effect.fnUntraced(function*(event) {
        const change = yield* cluster.applyService(event)
        if (change._tag === "Listed") return yield* change.first ? fullPass.initial : fullPass.enqueueAll(true)
        if (event._tag === "Synced") return
        const snapshot = yield* cluster.snapshot
        const key = serviceKey(event.object)
        // A port it held or wanted may now go to another Service, and so may a share of the quota.
        const others = new Set([
          ...contenders(snapshot, options, check, change.previous, event.object),
          ...quotaContenders(snapshot, options, change.previous, event.object)
        ])
        if (change.next === undefined) yield* events.forget(key)
        else if (isRelevant(change.next, options)) yield* queue.add(key, { verify: true, onlyIfChanged: true })
        for (const other of others) yield* queue.add(other)
      })),
      Effect.forkScoped
    )

    yield* kube.watchNodes.pipe(
      Stream.runForEach((event) => Effect.flatMap(cluster.applyNode(event), (first) => first ? fullPass.initial : Effect.void)),
      Effect.forkScoped
    )

    yield* kube.watchEndpointSlices.pipe(
      Stream.runForEach(Effect.fnUntraced(function*(event) {
        const key = yield* cluster.applySlice(event)
        if (key === undefined) return
        const owner = yield* cluster.service(key)
        if (owner !== undefined && owner.spec?.externalTrafficPolicy === "Local" && isRelevant(owner, options)) {
          yield* queue.add(key, { verify: false })
        }
      })),
      Effect.forkScoped
    )
  }))
