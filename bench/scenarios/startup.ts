/**
 * 6. Startup: process start → /readyz 200 with the gateway warm, given its URL or finding it
 * by SSDP, in an empty cluster and with Services of ours whose mappings are held.
 */
import { loadLab } from "../../test/e2e/support/lab.ts"
import { SNAPSHOT_DIR, waitIdle } from "../lib/controller.ts"
import type { Context, ScenarioResult } from "../lib/context.ts"
import { waitTable } from "../lib/gateway.ts"
import { loadBalancer, NAMESPACE, pool, retrying } from "../lib/kube.ts"
import { imageEntry } from "../../test/e2e/support/controller.ts"
import { cpuMs, memoryMiB, nodeFloor, timed } from "../lib/machine.ts"
import { type Row, summarize } from "../lib/stats.ts"

interface Sample {
  readonly variant: string
  readonly readyMs: number
  /** CPU the process used up to the moment it was ready. */
  readonly cpuMs: number | undefined
  readonly rssMiB: number | undefined
}

export async function startup(ctx: Context): Promise<ScenarioResult> {
  const lab = loadLab()
  const samples: Array<Sample> = []
  const once = async (variant: string, flags: ReadonlyArray<string>) => {
    const { controller, readyMs } = await ctx.startController(`startup-${variant}`, flags)
    samples.push({ variant, readyMs, cpuMs: cpuMs(controller.pid), rssMiB: memoryMiB(controller.pid)?.rss })
    await ctx.stopController(controller)
  }
  for (let i = 0; i < ctx.opts.startupSamples; i++) {
    await once("url", ["--gateway-url", lab.rootDescUrl])
    await once("ssdp", [])
  }
  // With Services of ours already mapped: the first pass lists the table and verifies them all.
  // Kept to 2 × 60 mappings: this miniupnpd dies listing more than ~130 of one protocol.
  const held = ctx.opts.quick ? 20 : 60
  const list = Array.from({ length: held }, (_, i) => `held-${String(i).padStart(3, "0")}`)
  ctx.tracker.forget(list)
  {
    const { controller } = await ctx.startController("startup-prepare", [])
    await pool(list, ctx.opts.clientConcurrency, (name, i) =>
      retrying("create", () =>
        ctx.c.core.createNamespacedService({
          namespace: NAMESPACE,
          body: loadBalancer(name, [{ name: "tcp", port: 12000 + i, protocol: "TCP" }, { name: "udp", port: 12000 + i, protocol: "UDP" }], true)
        })
      )
    )
    await ctx.tracker.until(() => ctx.tracker.count(list, (s) => s.statusAt !== undefined) === held, { timeoutMs: 120_000, description: "held statuses" })
    await ctx.stopController(controller)
  }
  const heldSamples = ctx.opts.quick ? 1 : ctx.opts.startupSamples
  for (let i = 0; i < heldSamples; i++) await once(`url-${2 * held}-held`, ["--gateway-url", lab.rootDescUrl])
  {
    const { controller } = await ctx.startController("startup-cleanup", [])
    await pool(list, ctx.opts.clientConcurrency, (name) => retrying("delete", () => ctx.c.core.deleteNamespacedService({ namespace: NAMESPACE, name })))
    await ctx.tracker.until(() => ctx.tracker.count(list, (s) => s.goneAt !== undefined) === held, { timeoutMs: 120_000, description: "held Services gone" })
    await waitTable((count) => count === 0, { intervalMs: 250, timeoutMs: 60_000, description: "an empty table" })
    await waitIdle(controller, { quietMs: 200, timeoutMs: 30_000 })
    await ctx.stopController(controller)
  }
  // The diagnostics CLI as a user meets it: one command, from start to its answer.
  const floor = await nodeFloor(200)
  const cli = Array.from({ length: ctx.opts.startupSamples }, () =>
    timed([...imageEntry(SNAPSHOT_DIR), "gateway", "status", "--gateway-url", lab.rootDescUrl])
  )
  if (cli.some((run) => run.code !== 0)) throw new Error("edge-ccm gateway status failed")
  const section = "6. startup (process start → /readyz 200, gateway warm)"
  const pick = (variant: string, f: (s: Sample) => number | undefined) =>
    summarize(samples.filter((s) => s.variant === variant).flatMap((s) => { const v = f(s); return v === undefined ? [] : [v] }))
  const rows: Array<Row> = [
    { section, figure: "empty cluster, --gateway-url given", unit: "ms", value: pick("url", (s) => s.readyMs) },
    { section, figure: "empty cluster, gateway found by SSDP", unit: "ms", value: pick("ssdp", (s) => s.readyMs) },
    { section, figure: `${held} Services of ours, ${2 * held} mappings held, --gateway-url`, unit: "ms", value: pick(`url-${2 * held}-held`, (s) => s.readyMs) },
    { section, figure: "CPU used until ready (empty, --gateway-url)", unit: "ms", value: pick("url", (s) => s.cpuMs) },
    { section, figure: "RSS when ready (empty, --gateway-url)", unit: "MiB", value: pick("url", (s) => s.rssMiB) },
    {
      section,
      figure: "edge-ccm gateway status --gateway-url, wall",
      unit: "ms",
      value: summarize(cli.map((run) => run.wallMs)),
      floor: summarize([floor.startMs]),
      note: `CPU ${summarize(cli.map((run) => run.cpuMs))?.median.toFixed(0) ?? "?"} ms; floor: node -e 0`
    }
  ]
  return { rows, raw: { samples, cli, floor } }
}
