/**
 * 5. Footprint: the controller's RSS and CPU idle with a large cluster (many Services, few of
 * them ours), and the router calls a resync makes as a function of the mappings held — from
 * the controller's own counter (edge_ccm_gateway_requests_total), checked against a counting
 * proxy in front of the gateway, over whole resync periods (edge_ccm_full_passes_total).
 */
import { loadLab } from "../../test/e2e/support/lab.ts"
import { countDelta, fullPasses, gatewayCalls, waitIdle } from "../lib/controller.ts"
import type { Context, ScenarioResult } from "../lib/context.ts"
import { waitTable } from "../lib/gateway.ts"
import { clusterIp, loadBalancer, NAMESPACE, pool, retrying } from "../lib/kube.ts"
import { cpuWindow, memoryMiB, nodeFloor } from "../lib/machine.ts"
import { startCountingProxy } from "../lib/proxy.ts"
import { now, type Row, sleep, summarize } from "../lib/stats.ts"
import { SCALE_FLAGS } from "./bulk.ts"

// Below the ephemeral range (32768-60999), where an outgoing connection of the node may hold it.
const PROXY_PORT = 18600

/**
 * Calls the probe and the resync make on their own clock, whatever the Services do
 * (GetListOfPortMappings also serves batched port reads, so it stays counted).
 */
const BACKGROUND = new Set(["GetStatusInfo", "GetExternalIPAddress", "GetGenericPortMappingEntry"])
const perService = (counts: Record<string, number>, services: number): Record<string, number> =>
  Object.fromEntries(
    Object.entries(counts)
      .filter(([k]) => !BACKGROUND.has(k) && !k.startsWith("GET "))
      .map(([k, v]) => [k, Math.round((100 * v) / Math.max(1, services)) / 100])
  )

export async function footprint(ctx: Context): Promise<ScenarioResult> {
  const floor = await idleFloors(ctx)
  const scale = await scaleFootprint(ctx)
  const calls = await soapPerResync(ctx)
  return { rows: [...floor.rows, ...scale.rows, ...calls.rows], raw: { floor: floor.raw, scale: scale.raw, soap: calls.raw } }
}

/**
 * Node's own floor (a bare process waiting on a timer), and the controller idle on an empty
 * cluster run from the sources, beside the figure of the image's way, the startup snapshot of the
 * bundle (in `scaleFootprint`): what the bundle and its snapshot save.
 */
async function idleFloors(ctx: Context): Promise<{ rows: Array<Row>; raw: Record<string, unknown> }> {
  const floor = await nodeFloor()
  const { controller } = await ctx.startController("footprint-sources", SCALE_FLAGS, { fromSources: true })
  let sources: number | undefined
  try {
    await waitIdle(controller, { quietMs: 1000, timeoutMs: 60_000 })
    await sleep(ctx.opts.idleWindowMs)
    sources = memoryMiB(controller.pid)?.rss
  } finally {
    await ctx.stopController(controller)
  }
  const section = "5. footprint"
  return {
    rows: [
      { section, figure: "Node's floor: RSS of a bare node -e waiting on a timer", unit: "MiB", value: summarize([floor.idleRssMiB]) },
      {
        section,
        figure: "controller RSS, idle, empty cluster, run from the sources",
        unit: "MiB",
        value: summarize(sources === undefined ? [] : [sources]),
        note: "the same as the next row, but src/bin.ts instead of the image's snapshot of the bundle"
      }
    ],
    raw: { floor, sourcesRssMiB: sources }
  }
}

async function createAll(ctx: Context, others: number, ours: number, basePort: number) {
  const otherNames = Array.from({ length: others }, (_, i) => `other-${String(i).padStart(5, "0")}`)
  const ourNames = Array.from({ length: ours }, (_, i) => `ours-${String(i).padStart(4, "0")}`)
  ctx.tracker.forget([...otherNames, ...ourNames])
  // Ours are spread among the others, as they would be in a real cluster.
  const bodies = [
    ...otherNames.map((name) => clusterIp(name)),
    ...ourNames.map((name, i) =>
      loadBalancer(name, [
        { name: "tcp", port: basePort + i, protocol: "TCP" },
        { name: "udp", port: basePort + i, protocol: "UDP" }
      ], true)
    )
  ].sort((a, b) => hash(a.metadata?.name ?? "") - hash(b.metadata?.name ?? ""))
  await pool(bodies, ctx.opts.clientConcurrency, (body) =>
    retrying("create", () => ctx.c.core.createNamespacedService({ namespace: NAMESPACE, body }))
  )
  return { otherNames, ourNames }
}

const hash = (s: string) => {
  let h = 2166136261
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619)
  return h >>> 0
}

async function deleteAll(ctx: Context, list: ReadonlyArray<string>, timeoutMs: number) {
  await pool(list, ctx.opts.clientConcurrency, (name) =>
    retrying("delete", () => ctx.c.core.deleteNamespacedService({ namespace: NAMESPACE, name }))
  )
  await ctx.tracker.until(() => ctx.tracker.count(list, (s) => s.goneAt !== undefined) === list.length, {
    timeoutMs,
    description: `${list.length} Services gone`,
    detail: () => `${ctx.tracker.count(list, (s) => s.goneAt !== undefined)} gone`
  })
}

async function scaleFootprint(ctx: Context): Promise<{ rows: Array<Row>; raw: Record<string, unknown> }> {
  const { opts, tracker } = ctx
  const total = opts.scaleOthers + opts.scaleOurs
  ctx.log(`footprint: ${total} Services, ${opts.scaleOurs} ours`)
  const { controller, readyMs } = await ctx.startController("footprint-scale", SCALE_FLAGS)
  try {
    // Empty cluster first: the baseline.
    await waitIdle(controller, { quietMs: 1000, timeoutMs: 60_000 })
    const base = cpuWindow(() => ({ controller: controller.pid }))
    await sleep(opts.idleWindowMs)
    const baseCpu = base.end()
    const baseMemory = memoryMiB(controller.pid)

    const t0 = now()
    const { otherNames, ourNames } = await createAll(ctx, opts.scaleOthers, opts.scaleOurs, 30000 - 2 * opts.scaleOurs)
    await tracker.until(() => tracker.count(ourNames, (s) => s.statusAt !== undefined) === ourNames.length, {
      timeoutMs: 600_000,
      description: `${ourNames.length} statuses`
    })
    const settledMs = now() - t0
    await waitTable((count) => count >= 2 * ourNames.length, { intervalMs: 250, timeoutMs: 120_000, description: "mappings" })
    await waitIdle(controller, { quietMs: 2000, timeoutMs: 120_000 })
    const loaded = cpuWindow(() => ({ controller: controller.pid }))
    await sleep(opts.idleWindowMs)
    const loadedCpu = loaded.end()
    const loadedMemory = memoryMiB(controller.pid)
    ctx.log(`  idle RSS ${loadedMemory?.rss.toFixed(0)} MiB with ${total} Services`)

    await deleteAll(ctx, [...otherNames, ...ourNames], 600_000)
    await waitTable((count) => count === 0, { intervalMs: 250, timeoutMs: 120_000, description: "an empty table" })
    const pct = (w: typeof baseCpu) => (100 * (w.processes["controller"] ?? 0)) / w.wallMs
    const section = "5. footprint"
    const windowS = Math.round(opts.idleWindowMs / 1000)
    return {
      rows: [
        { section, figure: "controller RSS, idle, empty cluster (as the image runs it)", unit: "MiB", value: summarize(baseMemory === undefined ? [] : [baseMemory.rss]) },
        { section, figure: `controller CPU, idle, empty cluster (${windowS} s)`, unit: "%", value: summarize([pct(baseCpu)]) },
        { section, figure: `controller RSS, idle, ${total} Services, ${opts.scaleOurs} ours`, unit: "MiB", value: summarize(loadedMemory === undefined ? [] : [loadedMemory.rss]), note: `high-water ${loadedMemory?.hwm.toFixed(0) ?? "-"} MiB` },
        { section, figure: `controller CPU, idle, ${total} Services, ${opts.scaleOurs} ours (${windowS} s)`, unit: "%", value: summarize([pct(loadedCpu)]) }
      ],
      raw: { readyMs, settledMs, baseCpu, baseMemory, loadedCpu, loadedMemory, total, ours: opts.scaleOurs }
    }
  } finally {
    await ctx.stopController(controller)
  }
}

interface Level {
  readonly mappings: number
  readonly resyncs: number
  readonly windowMs: number
  /** Calls per resync period, by action, from the controller's /metrics. */
  readonly perResync: Record<string, number>
  /** The same window as the proxy saw it on the wire. */
  readonly wirePerResync: Record<string, number>
  /** Calls per resync besides the probe's GetStatusInfo/GetExternalIPAddress. */
  readonly resyncCalls: number
  /** Calls made while this level's new Services were created, per new Service. */
  readonly perCreatedService: Record<string, number>
}

async function soapPerResync(ctx: Context): Promise<{ rows: Array<Row>; raw: Record<string, unknown> }> {
  const { opts, tracker } = ctx
  const lab = loadLab()
  const proxy = await startCountingProxy({ listenIp: lab.nodeIp, listenPort: PROXY_PORT, target: new URL(lab.rootDescUrl) })
  const interval = opts.resyncCountInterval
  // No namespace quota: with the default (256 mappings) the larger levels would hold 256, not what they say.
  const { controller } = await ctx.startController("footprint-resync", [
    "--gateway-url", proxy.url, "--resync-interval", interval, "--max-mappings-per-namespace", "0"
  ])
  const levels: Array<Level> = []
  const all: Array<string> = []
  let deletion: Record<string, number> = {}
  try {
    for (const services of opts.resyncLevels) {
      const fresh: Array<string> = []
      for (let i = all.length; i < services; i++) fresh.push(`resync-${String(i).padStart(4, "0")}`)
      tracker.forget(fresh)
      proxy.reset()
      const beforeCreate = await gatewayCalls(controller)
      await pool(fresh, opts.clientConcurrency, (name) => {
        const i = Number(name.slice(-4))
        return retrying("create", () =>
          ctx.c.core.createNamespacedService({
            namespace: NAMESPACE,
            body: loadBalancer(name, [{ name: "tcp", port: 10000 + i, protocol: "TCP" }, { name: "udp", port: 10000 + i, protocol: "UDP" }], true)
          })
        )
      })
      all.push(...fresh)
      await tracker.until(() => tracker.count(all, (s) => s.statusAt !== undefined) === all.length, { timeoutMs: 120_000, description: "statuses" })
      await waitIdle(controller, { quietMs: 1500, timeoutMs: 120_000 })
      const created = countDelta(beforeCreate, await gatewayCalls(controller))
      // Count whole resync periods: from the end of one complete full pass to the end of the
      // `resyncWindows`-th after it (the counter counts a call when it ends, the proxy when it
      // starts; between two passes nothing is in flight but the probe).
      const periodMs = durationMs(interval)
      const deadline = now() + (opts.resyncWindows + 2) * periodMs + 60_000
      const passesAfter = async (start: Record<string, number>, count: number) => {
        while (now() < deadline) {
          const passes = await fullPasses(controller)
          if ((countDelta(start, passes)["complete"] ?? 0) >= count) return passes
          await sleep(20)
        }
        throw new Error(`fewer than ${count} complete resyncs with ${2 * all.length} mappings before the deadline`)
      }
      const synced = await passesAfter(await fullPasses(controller), 1)
      proxy.reset()
      const beforeWindow = await gatewayCalls(controller)
      const windowStart = now()
      await passesAfter(synced, opts.resyncWindows)
      const counts = countDelta(beforeWindow, await gatewayCalls(controller))
      const wire = proxy.counts()
      const windowMs = now() - windowStart
      const resyncs = opts.resyncWindows
      const per = (c: Record<string, number>) => Object.fromEntries(Object.entries(c).map(([k, v]) => [k, Math.round((100 * v) / resyncs) / 100]))
      const perResync = per(counts)
      const probe = (counts["GetStatusInfo"] ?? 0) + (counts["GetExternalIPAddress"] ?? 0)
      const total = Object.values(counts).reduce((a, b) => a + b, 0)
      levels.push({
        mappings: 2 * all.length,
        resyncs,
        windowMs,
        perResync,
        wirePerResync: per(wire),
        resyncCalls: (total - probe) / resyncs,
        perCreatedService: fresh.length === 0 ? {} : perService(created, fresh.length)
      })
      ctx.log(`  ${2 * all.length} mappings: ${JSON.stringify(perResync)} per resync`)
    }
    const beforeDelete = await gatewayCalls(controller)
    await deleteAll(ctx, all, 300_000)
    await waitIdle(controller, { quietMs: 500, timeoutMs: 60_000 })
    deletion = perService(countDelta(beforeDelete, await gatewayCalls(controller)), all.length)
  } finally {
    await ctx.stopController(controller)
    await proxy.close()
  }
  const section = `5. router calls (controller's /metrics; resync every ${interval})`
  const rows: Array<Row> = levels.map((level) => ({
    section,
    figure: `per resync with ${level.mappings} mappings (besides the probe)`,
    unit: "calls" as const,
    value: summarize([level.resyncCalls]),
    note: (Object.entries(level.perResync).filter(([k]) => k !== "GetStatusInfo" && k !== "GetExternalIPAddress").map(([k, v]) => `${k} ${v}`).join(", ") || "none") +
      (sameCounts(level.perResync, level.wirePerResync) ? "; the proxy saw the same" : `; on the wire: ${JSON.stringify(level.wirePerResync)}`)
  }))
  const lastCreate = [...levels].reverse().find((l) => Object.keys(l.perCreatedService).length > 0)
  if (lastCreate !== undefined) {
    rows.push({
      section,
      figure: "per Service created (2 ports; probe and resync calls apart)",
      unit: "calls",
      value: summarize([Object.values(lastCreate.perCreatedService).reduce((a, v) => a + v, 0)]),
      note: Object.entries(lastCreate.perCreatedService).map(([k, v]) => `${k} ${v}`).join(", ")
    })
  }
  rows.push({
    section,
    figure: "per Service deleted (2 ports; probe and resync calls apart)",
    unit: "calls",
    value: summarize([Object.values(deletion).reduce((a, v) => a + v, 0)]),
    note: Object.entries(deletion).map(([k, v]) => `${k} ${v}`).join(", ")
  })
  return { rows, raw: { interval, levels, perServiceDeleted: deletion } }
}

/** Whether two per-action counts agree (description fetches aside). */
const sameCounts = (a: Record<string, number>, b: Record<string, number>): boolean => {
  const norm = (c: Record<string, number>) => JSON.stringify(Object.entries(c).filter(([k]) => !k.startsWith("GET ")).sort())
  return norm(a) === norm(b)
}

const durationMs = (text: string): number => {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(text)
  if (match === null) throw new Error(`not a duration: ${text}`)
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[match[2] as "ms" | "s" | "m" | "h"]
  return Number(match[1]) * unit
}
