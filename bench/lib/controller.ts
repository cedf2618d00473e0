/**
 * The controller under test, started as the image runs it (the startup snapshot of the one-file
 * bundle, dist/snapshot/edge-ccm.blob; bench/run.sh builds it) or from the sources, with the
 * e2e tests' `startController()` (optionally under Node's --cpu-prof), and what its /metrics
 * say about its queue. /metrics is served on the controller's loopback over plain HTTP here: the
 * benchmarks poll it every 50 ms, and TLS and token reviews would be measured with the controller.
 */
import * as path from "node:path"
import {
  type ControllerProcessOptions,
  type ControllerUnderTest,
  imageEntry,
  metricsText,
  sample,
  startController
} from "../../test/e2e/support/controller.ts"

export { countDelta, fullPasses, gatewayCalls } from "../../test/e2e/support/controller.ts"
import { loadLab } from "../../test/e2e/support/lab.ts"
import { now, sleep } from "./stats.ts"

const root = path.resolve(import.meta.dirname, "../..")

export type Controller = ControllerUnderTest

export interface StartOptions {
  readonly flags: ReadonlyArray<string>
  /** Write a V8 CPU profile here when the process exits. */
  readonly profileDir?: string | undefined
  readonly profileName?: string | undefined
  /** Node flags for the controller process, e.g. --max-old-space-size=128. */
  readonly nodeFlags?: ReadonlyArray<string> | undefined
  /** Environment of the controller process besides the benchmark's own (e.g. MALLOC_ARENA_MAX). */
  readonly env?: Readonly<Record<string, string>> | undefined
  /** Run src/bin.ts instead of the bundle (for the side-by-side figure). */
  readonly fromSources?: boolean | undefined
}

/** Where the image's startup snapshot is: built by `scripts/bundle.ts --snapshot-blob`. */
export const SNAPSHOT_DIR = path.join(root, "dist/snapshot")

export interface Started {
  readonly controller: Controller
  /** startController() called → first /readyz 200 seen by our own 5 ms poll. */
  readonly readyMs: number
}

/**
 * Starts the controller and times process start → /readyz 200 with a 5 ms poll of our own
 * (startController's own wait polls every 100 ms, too coarse for this figure).
 */
export async function start(options: StartOptions): Promise<Started> {
  const nodeFlags = [
    ...(options.nodeFlags ?? []),
    ...(options.profileDir === undefined
      ? []
      : ["--cpu-prof", "--cpu-prof-dir", options.profileDir, ...(options.profileName === undefined ? [] : ["--cpu-prof-name", options.profileName])])
  ]
  const entry = options.fromSources === true
    ? [process.execPath, ...nodeFlags, path.join(root, "src/bin.ts")]
    : imageEntry(SNAPSHOT_DIR, nodeFlags)
  const startOptions: ControllerProcessOptions = {
    flags: options.flags,
    metricsOn: "loopback",
    entry,
    ...(options.env === undefined ? {} : { env: options.env })
  }
  const started = now()
  let readyAt: number | undefined
  let polling = true
  // startController's default health address: the node's, port 10258.
  const readyz = `http://${loadLab().nodeIp}:10258/readyz`
  const poll = (async () => {
    while (polling && readyAt === undefined) {
      try {
        const response = await fetch(readyz)
        if (response.status === 200) readyAt = now()
        else await response.arrayBuffer()
      } catch {
        // not listening yet
      }
      if (readyAt === undefined) await sleep(5)
    }
  })()
  try {
    const controller = await startController(startOptions)
    await poll
    return { controller, readyMs: (readyAt ?? now()) - started }
  } finally {
    polling = false
  }
}

export interface Readiness {
  readonly ok: boolean
  readonly queueDepth: number
  readonly eventsQueued: number
  readonly gatewayReachable: boolean
}

/** From the health gauges of /metrics (/readyz says only ok). */
export async function readiness(controller: Controller): Promise<Readiness> {
  const text = await metricsText(controller)
  return {
    ok: sample(text, "edge_ccm_ready") === 1,
    queueDepth: sample(text, "edge_ccm_queue_depth") ?? -1,
    eventsQueued: sample(text, "edge_ccm_events_queued") ?? 0,
    gatewayReachable: sample(text, "edge_ccm_gateway_reachable") === 1
  }
}

/** A histogram of /metrics summed over its label sets: observations and their total. */
export async function histogramTotals(controller: Controller, metric: string): Promise<{ readonly count: number; readonly sum: number }> {
  const text = await metricsText(controller)
  let count = 0
  let sum = 0
  for (const line of text.split("\n")) {
    const value = Number(line.slice(line.lastIndexOf(" ") + 1))
    if (line.startsWith(`${metric}_count`)) count += value
    else if (line.startsWith(`${metric}_sum`)) sum += value
  }
  return { count, sum }
}

/** The mean of the observations made between two readings of a histogram, in ms. */
export const meanMsBetween = (before: { readonly count: number; readonly sum: number }, after: { readonly count: number; readonly sum: number }) =>
  after.count > before.count ? (1000 * (after.sum - before.sum)) / (after.count - before.count) : Number.NaN

/** Waits until the work queue has stayed empty for `quietMs`. */
export async function waitIdle(controller: Controller, options: { quietMs: number; timeoutMs: number }): Promise<void> {
  const deadline = now() + options.timeoutMs
  let quietSince: number | undefined
  while (now() < deadline) {
    const r = await readiness(controller).catch(() => undefined)
    // Events follow the work: they too must be out before the next window.
    if (r !== undefined && r.queueDepth === 0 && r.eventsQueued === 0) {
      quietSince ??= now()
      if (now() - quietSince >= options.quietMs) return
    } else {
      quietSince = undefined
    }
    await sleep(50)
  }
  throw new Error(`the controller's queue did not stay empty for ${options.quietMs} ms within ${options.timeoutMs} ms`)
}

/** SIGTERM by PID and wait: a clean exit also writes the CPU profile. */
export async function stop(controller: Controller): Promise<void> {
  await controller.stop({ signal: "SIGTERM", timeoutMs: 15_000 })
}

