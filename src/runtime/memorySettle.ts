/**
 * Gives a burst's memory back once the controller is quiet. V8's own memory reducer collects
 * after a burst but leaves most of what the burst committed in place (free old-generation pages,
 * a grown young generation): 500 Services applied at once left the process at 139 MiB RSS 40 s
 * later, and one "last resort" collection (which compacts and shrinks the young generation)
 * brought it to 99 MiB. That collection costs 140-240 ms of CPU in the call and about 380 ms
 * in all (its background threads and what follows; docs/benchmarks.md), so it runs only after
 * the heap has grown by `growth` since the last one, at most once in `minInterval`, once no
 * Service is queued or being reconciled.
 */
import * as v8 from "node:v8"
import * as vm from "node:vm"
import { Clock, Duration, Effect } from "effect"

/** When memory is given back. */
export interface MemorySettleOptions {
  /** How often the heap's size is looked at. */
  readonly checkEvery: Duration.Input
  /** Bytes the heap (the young generation aside) must have grown by since the last collection (or the start). */
  readonly growth: number
  /** The least time between two collections: the old generation's garbage at idle is not a burst. */
  readonly minInterval: Duration.Input
}

export const defaultMemorySettleOptions: MemorySettleOptions = {
  checkEvery: Duration.seconds(15),
  // 100 new Services grew it by 4-14 MiB, 500 by more than 20; the young generation's 3 MiB
  // of regrowth at idle would otherwise bring a collection every 30-45 s.
  growth: 4 * 1024 * 1024,
  // With 100 Services held and a 30 s resync, the garbage reached 4 MiB about every 90 s.
  minInterval: Duration.minutes(5)
}

/** What the loop acts on: the controller's queue, the heap's size, and the collection itself. */
export interface MemorySettleDeps {
  /** Completes when no Service is queued or being reconciled. */
  readonly idle: Effect.Effect<void>
  readonly heapSize: () => number
  readonly collect: () => void
}

/** The process's V8 heap: what it holds beyond the young generation, and a memory-reducing full collection. */
export const processHeap: Pick<MemorySettleDeps, "heapSize" | "collect"> = {
  // Without the young generation, which regrows to its size between any two collections.
  heapSize: () =>
    v8.getHeapSpaceStatistics().reduce((sum, space) => space.space_name.startsWith("new_") ? sum : sum + space.space_size, 0),
  collect: () => lastResortGc()({ type: "major", execution: "sync", flavor: "last-resort" })
}

type GcFunction = (options: { type: "major"; execution: "sync"; flavor: "last-resort" }) => void
let gc: GcFunction | undefined
/** V8's `gc`, exposed at the first use (not at load: the startup snapshot is built without it). */
const lastResortGc = (): GcFunction => {
  if (gc === undefined) {
    v8.setFlagsFromString("--expose-gc")
    gc = vm.runInNewContext("gc") as GcFunction
  }
  return gc
}

/**
 * Runs for as long as its fiber lives: after each `checkEvery`, when the heap has grown by
 * `growth` and `minInterval` has passed since the last collection, waits for the work in hand to
 * end and collects.
 */
export const settleMemory = (deps: MemorySettleDeps, options: MemorySettleOptions = defaultMemorySettleOptions) =>
  Effect.gen(function*() {
    let baseline = deps.heapSize()
    let last = Number.NEGATIVE_INFINITY
    const minInterval = Duration.toMillis(options.minInterval)
    while (true) {
      yield* Effect.sleep(options.checkEvery)
      if (deps.heapSize() - baseline < options.growth || (yield* Clock.currentTimeMillis) - last < minInterval) continue
      yield* deps.idle
      last = yield* Clock.currentTimeMillis
      const before = deps.heapSize()
      deps.collect()
      baseline = deps.heapSize()
      yield* Effect.logDebug(`memory given back after a burst: V8 heap ${mib(before)} -> ${mib(baseline)} MiB`)
    }
  })

const mib = (bytes: number) => (bytes / 1048576).toFixed(1)
