/**
 * 6. An SSDP flood from a hostile LAN host: 100,000 NOTIFYs and search replies in 60 s from
 * the peer (192.168.77.50), four in ten with their source rewritten to the router's address
 * (an nftables SNAT rule in the peer namespace), one in four of those a forged reboot
 * announcement of the router's own LOCATION with alternating BOOTIDs. Measured: the
 * controller's heap after a forced GC before and after (DevTools protocol over the inspector:
 * HeapProfiler.collectGarbage, then Runtime.getHeapUsage), the full passes started
 * (edge_ccm_full_passes_total) against the reboot-pass window, and the time to address of a
 * Service created a third of the way into the flood. Opt-in: `npm run bench -- --only flood`.
 */
import * as path from "node:path"
import { Duration } from "effect"
import { RESTART_PASS_WINDOW } from "../../src/controller/restartWindow.ts"
import { inNamespace, loadLab, spawnInNamespace } from "../../test/e2e/support/lab.ts"
import { fullPasses, start, waitIdle } from "../lib/controller.ts"
import type { Context, ScenarioResult } from "../lib/context.ts"
import { loadBalancer, NAMESPACE, retrying } from "../lib/kube.ts"
import { cpuWindow, memoryMiB } from "../lib/machine.ts"
import { now, type Row, sleep, summarize } from "../lib/stats.ts"

const root = path.resolve(import.meta.dirname, "../..")
const INSPECTOR_PORT = 9231
const SPOOFED_SOURCE_PORT = 41900
const SERVICE_PORT = 8383
const WINDOW_MS = Duration.toMillis(RESTART_PASS_WINDOW)

/** Rewrites the source of the flood's spoofed socket to the router's address. */
const spoofRules = (routerIp: string) => `table ip edge_ccm_bench_spoof {
  chain post {
    type nat hook postrouting priority srcnat; policy accept;
    udp sport ${SPOOFED_SOURCE_PORT} ip daddr 239.255.255.250 snat to ${routerIp}
  }
}
`

interface Inspector {
  readonly call: (method: string, params?: Record<string, unknown>) => Promise<Record<string, unknown>>
  readonly close: () => void
}

/** A DevTools protocol session with the controller, over Node's built-in WebSocket. */
async function connectInspector(port: number): Promise<Inspector> {
  const targets = (await (await fetch(`http://127.0.0.1:${port}/json/list`)).json()) as Array<{ webSocketDebuggerUrl: string }>
  const url = targets[0]?.webSocketDebuggerUrl
  if (url === undefined) throw new Error("the controller's inspector lists no target")
  const socket = new WebSocket(url)
  await new Promise<void>((resolve, reject) => {
    socket.onopen = () => resolve()
    socket.onerror = () => reject(new Error(`cannot connect to ${url}`))
  })
  let id = 0
  const pending = new Map<number, (message: { result?: Record<string, unknown>; error?: { message: string } }) => void>()
  socket.onmessage = (event) => {
    const message = JSON.parse(String(event.data)) as { id?: number; result?: Record<string, unknown>; error?: { message: string } }
    if (message.id !== undefined) pending.get(message.id)?.(message)
  }
  const call = (method: string, params: Record<string, unknown> = {}) =>
    new Promise<Record<string, unknown>>((resolve, reject) => {
      const n = ++id
      pending.set(n, (message) => {
        pending.delete(n)
        if (message.error !== undefined) reject(new Error(`${method}: ${message.error.message}`))
        else resolve(message.result ?? {})
      })
      socket.send(JSON.stringify({ id: n, method, params }))
    })
  return { call, close: () => socket.close() }
}

/** A counter's value summed over its labels (0 when absent). */
async function counterTotal(controller: { readonly healthUrl: string }, metric: string): Promise<number> {
  const text = await (await fetch(`${controller.healthUrl}/metrics`)).text()
  return text.split("\n")
    .filter((line) => line.startsWith(`${metric} `) || line.startsWith(`${metric}{`))
    .reduce((sum, line) => sum + Number(line.slice(line.lastIndexOf(" ") + 1)), 0)
}

/** Used heap after three forced full GCs, MiB (the smallest of three readings). */
async function heapAfterGc(inspector: Inspector): Promise<number> {
  const readings: Array<number> = []
  for (let i = 0; i < 3; i++) {
    await inspector.call("HeapProfiler.collectGarbage")
    const usage = await inspector.call("Runtime.getHeapUsage")
    readings.push(Number(usage["usedSize"]) / (1024 * 1024))
  }
  return Math.min(...readings)
}

export async function flood(ctx: Context): Promise<ScenarioResult> {
  const { opts } = ctx
  const lab = loadLab()
  const total = opts.quick ? 20_000 : 100_000
  const durationMs = opts.quick ? 15_000 : 60_000
  const section = `6. SSDP flood (${total.toLocaleString("en-US")} datagrams in ${durationMs / 1000} s from a LAN host)`
  const spoof = await inNamespace("peer", ["nft", "-f", "-"], { input: spoofRules(lab.gatewayLanIp) })
  if (spoof.code !== 0) throw new Error(`cannot install the spoofing rule in the peer namespace: ${spoof.stderr}`)
  // Resyncs every 10 minutes: within the run, every full pass is one a reboot announcement started.
  const { controller } = await start({
    flags: ["--resync-interval", "10m"],
    nodeFlags: [...opts.nodeFlags, `--inspect=127.0.0.1:${INSPECTOR_PORT}`]
  })
  const inspector = await connectInspector(INSPECTOR_PORT)
  try {
    await inspector.call("HeapProfiler.enable")
    await waitIdle(controller, { quietMs: 1000, timeoutMs: 60_000 })
    const heapBefore = await heapAfterGc(inspector)
    const rssBefore = memoryMiB(controller.pid)
    const passesBefore = await fullPasses(controller)
    const rebootsBefore = await counterTotal(controller, "edge_ccm_gateway_reboots_total")
    ctx.log(`flood: heap after GC ${heapBefore.toFixed(2)} MiB before; sending ${total} datagrams over ${durationMs / 1000} s`)

    const cpu = cpuWindow(() => ({ controller: controller.pid }))
    const floodStarted = now()
    const sender = spawnInNamespace("peer", [
      process.execPath,
      path.join(root, "bench/flood-sender.ts"),
      String(total),
      String(durationMs),
      String(SPOOFED_SOURCE_PORT),
      lab.rootDescUrl
    ], { cwd: root })

    // A Service created a third of the way in must still get its address.
    await sleep(durationMs / 3)
    const name = "flood-service"
    ctx.tracker.forget([name])
    const body = loadBalancer(name, [{ name: "http", port: SERVICE_PORT, protocol: "TCP" }], true)
    const createdAt = now()
    await retrying("create", () => ctx.c.core.createNamespacedService({ namespace: NAMESPACE, body }))
    const statusAt = await ctx.tracker.until(
      () => ctx.tracker.records.get(name)?.statusAt !== undefined,
      { timeoutMs: 120_000, description: "the flood Service's status" }
    )
    const addressMs = statusAt - createdAt
    const ip = ctx.tracker.records.get(name)?.ip
    ctx.log(`flood: the Service got ${ip} ${addressMs.toFixed(0)} ms after its create`)

    const exit = await sender.exited
    const floodMs = now() - floodStarted
    const cpuDuring = cpu.end()
    const report = sender.stdout().trim().split("\n").at(-1) ?? ""
    if (exit.code !== 0) throw new Error(`the flood sender failed: ${sender.output().slice(-2000)}`)
    const sent = JSON.parse(report) as { sent: Record<string, number>; elapsedMs: number }

    // Announcements of the last window share one pass at its end: wait for it, then measure.
    await sleep(WINDOW_MS + 2_000)
    await waitIdle(controller, { quietMs: 1000, timeoutMs: 60_000 })
    const passes = (await fullPasses(controller))
    const passDelta = Object.entries(passes).reduce((sum, [k, v]) => sum + v - (passesBefore[k] ?? 0), 0)
    const rebootDelta = (await counterTotal(controller, "edge_ccm_gateway_reboots_total")) - rebootsBefore
    const heapAfter = await heapAfterGc(inspector)
    const rssAfter = memoryMiB(controller.pid)
    const windows = Math.floor((floodMs + WINDOW_MS + 2_000) / WINDOW_MS) + 1
    ctx.log(`flood: heap after GC ${heapAfter.toFixed(2)} MiB after; ${passDelta} full passes (at most ${windows} allowed)`)

    await retrying("delete", () => ctx.c.core.deleteNamespacedService({ namespace: NAMESPACE, name }))
    await ctx.tracker.until(() => ctx.tracker.records.get(name)?.goneAt !== undefined, { timeoutMs: 60_000, description: "the flood Service gone" })

    const one = (value: number) => summarize([value])
    const rows: Array<Row> = [
      { section, figure: "controller heap after GC, before the flood", unit: "MiB", value: one(heapBefore), note: `RSS ${rssBefore?.rss.toFixed(0) ?? "-"} MiB` },
      { section, figure: "controller heap after GC, after the flood", unit: "MiB", value: one(heapAfter), note: `RSS ${rssAfter?.rss.toFixed(0) ?? "-"} MiB` },
      { section, figure: "heap growth after GC", unit: "MiB", value: one(heapAfter - heapBefore), goal: "< 5 MiB", goalBound: 5 },
      {
        section,
        figure: `full passes started (flood + ${(WINDOW_MS + 2_000) / 1000} s)`,
        unit: "count",
        value: one(passDelta),
        goal: `≤ 1 per ${WINDOW_MS / 1000} s window (${windows})`,
        goalBound: windows,
        note: `${sent.sent["rebootSpoofed"] ?? 0} forged reboot announcements; reboots counted ${rebootDelta}`
      },
      { section, figure: "Service created during the flood: accepted → status set", unit: "ms", value: one(addressMs), goal: "gets its address", note: `address ${ip ?? "none"}` },
      {
        section,
        figure: `controller CPU during the flood (${(floodMs / 1000).toFixed(0)} s)`,
        unit: "%",
        value: one((100 * (cpuDuring.processes["controller"] ?? 0)) / cpuDuring.wallMs)
      }
    ]
    return {
      rows,
      raw: { total, durationMs, floodMs, sent, heapBefore, heapAfter, rssBefore, rssAfter, passesBefore, passes, passDelta, rebootDelta, windows, addressMs, ip, cpuDuring }
    }
  } finally {
    inspector.close()
    await ctx.stopController(controller)
    await inNamespace("peer", ["nft", "delete", "table", "ip", "edge_ccm_bench_spoof"])
  }
}
