/**
 * Hearing the router (issue 18). Two figures, with the controller as the image runs it:
 *
 * 1. WAN address changed on the router → every Service's `status.loadBalancer.ingress` shows it,
 *    over 20 renumberings, with eventing (the default) and without (`--upnp-events=false`: the
 *    2 s probe). The clock starts when the new address is put on the router's WAN veth (just
 *    before `ip addr add`, so the figure includes that command's own start) and stops at the
 *    watch event that makes the last Service show it. Between the old address going and the new
 *    one coming, each change waits until the controller logged the removal's NOTIFY (with
 *    eventing) or every Service withdrew its address (without): miniupnpd sends no NOTIFY for
 *    a change made while its previous one is in flight. Floors, interleaved: the issue's, one
 *    GetExternalIPAddress and one status merge patch; and what a minimal client does for the
 *    same result, one GetExternalIPAddress, then a status merge patch of each of as many
 *    Services, as many at a time as the controller's workers.
 * 2. Router calls at rest with 100 Services held, eventing on and off: the controller's own count
 *    of SOAP calls (edge_ccm_gateway_requests_total) over a window, extrapolated to an hour.
 *    GENA's own requests (SUBSCRIBE renewals, every 15 min) are not SOAP calls and are added by
 *    count, not measured.
 */
import { setGatewayWanAddress } from "../../test/e2e/support/lab.ts"
import type { Context, ScenarioResult } from "../lib/context.ts"
import { type Controller, countDelta, gatewayCalls, waitIdle } from "../lib/controller.ts"
import { loadBalancer, mergePatch, NAMESPACE, pool, retrying } from "../lib/kube.ts"
import { now, pollUntil, type Row, summarize } from "../lib/stats.ts"

const SECTION = "9. hearing the router (UPnP events)"
const BASE_PORT = 23000
const ADDRESSES = ["122.112.219.230", "122.112.219.229"]

const names = (prefix: string, count: number) => Array.from({ length: count }, (_, i) => `${prefix}-${String(i).padStart(3, "0")}`)

/** The controller's JSON log messages so far. */
const messages = (controller: Controller): Array<string> =>
  controller.output().split("\n").flatMap((line) => {
    if (!line.startsWith("{")) return []
    try {
      return [String((JSON.parse(line) as { readonly message?: unknown }).message)]
    } catch {
      return []
    }
  })

async function createServices(ctx: Context, list: ReadonlyArray<string>, ours: boolean): Promise<void> {
  ctx.tracker.forget(list)
  await pool(list, ctx.opts.clientConcurrency, (name, i) =>
    retrying("create", () =>
      ctx.c.core.createNamespacedService({
        namespace: NAMESPACE,
        body: loadBalancer(name, [{ name: "http", port: BASE_PORT + i + (ours ? 0 : 500), protocol: "TCP" }], ours)
      })))
}

async function deleteServices(ctx: Context, list: ReadonlyArray<string>): Promise<void> {
  await pool(list, ctx.opts.clientConcurrency, (name) => retrying("delete", () => ctx.c.core.deleteNamespacedService({ namespace: NAMESPACE, name })))
  await ctx.tracker.until(() => ctx.tracker.count(list, (s) => s.goneAt !== undefined) === list.length, {
    timeoutMs: 120_000,
    description: "the benchmark's Services gone"
  })
}

/** One renumbering: ms from the new address on the router to every Service showing it. */
async function renumber(ctx: Context, controller: Controller, list: ReadonlyArray<string>, ip: string, eventing: boolean): Promise<number> {
  const removals = () => messages(controller).filter((m) => /^NOTIFY SID .* ExternalIPAddress 0\.0\.0\.0;/.test(m)).length
  const before = removals()
  let addedAt = 0
  await setGatewayWanAddress(`${ip}/24`, {
    afterRemoval: async () => {
      if (eventing) {
        // The log is no watch event: it is looked at every 5 ms.
        await pollUntil(async () => removals() > before ? true : undefined, {
          intervalMs: 5,
          timeoutMs: 15_000,
          description: "the removal's NOTIFY logged"
        })
      } else {
        await ctx.tracker.until(() => ctx.tracker.count(list, (s) => s.ip === undefined) === list.length, {
          timeoutMs: 15_000,
          description: "every Service withdrawn"
        })
      }
      addedAt = now()
    }
  })
  const at = await ctx.tracker.until(() => ctx.tracker.count(list, (s) => s.ip === ip) === list.length, {
    timeoutMs: 30_000,
    description: `every Service at ${ip}`
  })
  return at - addedAt
}

/**
 * The floor: one GetExternalIPAddress, then a status merge patch of each of the floor's Services
 * (which nobody acts on), as many at a time as the controller has workers.
 */
async function floorSample(ctx: Context, list: ReadonlyArray<string>): Promise<number> {
  const t0 = now()
  const ip = await ctx.soap.getExternalIPAddress()
  await pool(list, ctx.opts.workers, (name, i) =>
    ctx.c.core.patchNamespacedServiceStatus({
      namespace: NAMESPACE,
      name,
      body: { status: { loadBalancer: { ingress: [{ ip, ports: [{ port: BASE_PORT + 500 + i, protocol: "TCP" }] }] } } }
    }, mergePatch))
  return now() - t0
}

/** SOAP calls by action over `windowMs` at rest. */
async function callsAtRest(controller: Controller, windowMs: number): Promise<Record<string, number>> {
  const before = await gatewayCalls(controller)
  await new Promise((resolve) => setTimeout(resolve, windowMs))
  return countDelta(before, await gatewayCalls(controller))
}

export async function eventing(ctx: Context): Promise<ScenarioResult> {
  const { opts, log } = ctx
  const changes = opts.quick ? 6 : 20
  const heldServices = 100
  const latencyServices = opts.quick ? 3 : 10
  // Whole resync periods (30 s by default), so both sides see the same number of listings.
  const windowMs = opts.quick ? 30_000 : 180_000
  const rows: Array<Row> = []
  const raw: Record<string, unknown> = {}

  const floorNames = names("eventing-floor", latencyServices)
  await createServices(ctx, floorNames, false)
  const floors: Array<number> = []
  const singleFloors: Array<number> = []
  const latency: Record<string, Array<number>> = { on: [], off: [] }
  const held = names("eventing", heldServices)
  try {
    for (const mode of ["on", "off"] as const) {
      const flags = mode === "on" ? [] : ["--upnp-events=false"]
      const { controller } = await ctx.startController(`eventing-${mode}`, flags)
      try {
        const list = held.slice(0, latencyServices)
        await createServices(ctx, list, true)
        await ctx.tracker.until(() => ctx.tracker.count(list, (s) => s.ip === ADDRESSES[1]) === list.length, {
          timeoutMs: 60_000,
          description: "the Services published"
        })
        await waitIdle(controller, { quietMs: 500, timeoutMs: 60_000 })
        for (let i = 0; i < changes; i++) {
          const ip = ADDRESSES[i % 2]!
          latency[mode]!.push(await renumber(ctx, controller, list, ip, mode === "on"))
          // The second read (1.5 s after the NOTIFY) done before the next change.
          await waitIdle(controller, { quietMs: 2_000, timeoutMs: 30_000 })
          if (mode === "on") {
            singleFloors.push(await floorSample(ctx, floorNames.slice(0, 1)))
            floors.push(await floorSample(ctx, floorNames))
          }
        }
        log(`eventing ${mode}: ${changes} renumberings, p95 ${summarize(latency[mode]!)?.p95?.toFixed(0)} ms`)
        // The rest of the 100, then the window at rest.
        await createServices(ctx, held.slice(latencyServices), true)
        await ctx.tracker.until(() => ctx.tracker.count(held, (s) => s.ip !== undefined) === held.length, {
          timeoutMs: 120_000,
          description: "100 Services published"
        })
        await waitIdle(controller, { quietMs: 1_000, timeoutMs: 120_000 })
        const calls = await callsAtRest(controller, windowMs)
        raw[`callsAtRest-${mode}`] = calls
        const total = Object.values(calls).reduce((sum, n) => sum + n, 0)
        const perHour = Math.round((total * 3_600_000) / windowMs)
        const breakdown = Object.entries(calls).sort(([, a], [, b]) => b - a).map(([action, n]) => `${action} ${n}`).join(", ")
        rows.push({
          section: SECTION,
          figure: `router SOAP calls per hour at rest, 100 Services, eventing ${mode}`,
          unit: "calls",
          value: summarize([perHour]),
          note: `${total} in ${windowMs / 1000} s (${breakdown}) × ${3_600_000 / windowMs}` +
            (mode === "on" ? "; plus 4 SUBSCRIBE renewals/h (not SOAP)" : "")
        })
        await deleteServices(ctx, held)
      } finally {
        await ctx.stopController(controller)
      }
    }
  } finally {
    await setGatewayWanAddress(`${ADDRESSES[1]}/24`)
    await deleteServices(ctx, floorNames)
  }
  const floor = summarize(floors)
  rows.unshift(
    {
      section: SECTION,
      figure: `WAN address changed → ${latencyServices} Services' status show it, eventing on`,
      unit: "ms",
      value: summarize(latency["on"]!),
      floor,
      goal: "p95 ≤ 200 ms"
    },
    {
      section: SECTION,
      figure: `the same, eventing off (--upnp-events=false, 2 s probe)`,
      unit: "ms",
      value: summarize(latency["off"]!),
      floor
    },
    { section: SECTION, figure: `floor: GetExternalIPAddress + ${latencyServices} status PATCHes, ${ctx.opts.workers} at a time`, unit: "ms", value: floor },
    { section: SECTION, figure: "floor as the issue sets it: GetExternalIPAddress + one status PATCH", unit: "ms", value: summarize(singleFloors) }
  )
  raw["latency"] = latency
  raw["floors"] = floors
  raw["singleFloors"] = singleFloors
  return { rows, raw }
}
