/**
 * 2. Bulk: N Services × 2 ports (TCP and UDP on one port number) created at once → all
 *    mapped and all statuses set.
 * 3. Reboot recovery: with those 2N mappings held, the gateway reboots (all lost) → all back.
 * 4. Delete: the N Services deleted → mappings and finalizers gone.
 * Floors, in the same run, by the minimal client under the controller's own limits (router
 * calls and Services in flight): per Service a metadata patch (finalizer + record), two
 * AddPortMapping and a status merge patch; for delete two DeletePortMapping and a finalizer
 * patch. Also: the controller idle with the 2N mappings held.
 */
import type * as k8s from "@kubernetes/client-node"
import { rebootGateway } from "../../test/e2e/support/lab.ts"
import type { Controller } from "../lib/controller.ts"
import { countDelta, gatewayCalls, readiness, waitIdle } from "../lib/controller.ts"
import type { Context, ScenarioResult } from "../lib/context.ts"
import { gatewayAlive, waitTable, whileGatewayAlive } from "../lib/gateway.ts"
import { apiserverRequests, FLOOR_FINALIZER, loadBalancer, mergePatch, NAMESPACE, pool, requestDelta, retrying } from "../lib/kube.ts"
import { cpuWindow, type CpuWindow, memoryMiB } from "../lib/machine.ts"
import { now, pollUntil, type Row, sleep, summarize } from "../lib/stats.ts"

/**
 * The resync stays out of these timings (its cost is measured on its own: footprint.ts), and one
 * namespace holds the whole bulk (1,000 mappings): past the default quota of 256.
 */
export const SCALE_FLAGS = ["--resync-interval", "1h", "--max-mappings-per-namespace", "0"] as const

const BASE_PORT = 20000

interface Semaphore {
  run<T>(f: () => Promise<T>): Promise<T>
}

const semaphore = (permits: number): Semaphore => {
  let free = permits
  const queue: Array<() => void> = []
  return {
    run: async (f) => {
      if (free > 0) free--
      else await new Promise<void>((resolve) => queue.push(resolve))
      try {
        return await f()
      } finally {
        const next = queue.shift()
        if (next !== undefined) next()
        else free++
      }
    }
  }
}

const names = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}-${String(i).padStart(4, "0")}`)

const servicesFor = (list: ReadonlyArray<string>, ours: boolean) =>
  list.map((name, i) =>
    loadBalancer(name, [
      { name: "tcp", port: BASE_PORT + i, protocol: "TCP" },
      { name: "udp", port: BASE_PORT + i, protocol: "UDP" }
    ], ours)
  )

interface Round {
  readonly create: {
    readonly totalMs: number
    readonly statusesMs: number
    readonly tableAfter: number
    readonly createBurstMs: number
    /** First create sent → the apiserver has taken every Event of the create (seen within 250 ms). */
    readonly eventsMs: number
    readonly portErrors: number
    readonly cpu: CpuWindow
    readonly requests: Record<string, number>
    /** Router calls by action, from the controller's /metrics. */
    readonly routerCalls: Record<string, number>
  }
  readonly reboot: {
    readonly restoredMs: number
    readonly firstBackMs: number
    readonly rebootCallMs: number
    readonly cpu: CpuWindow
    readonly requests: Record<string, number>
    readonly routerCalls: Record<string, number>
  } | undefined
  /** The controller's RSS once the round's Services are gone: growth across rounds is retention. */
  readonly rssAfterMiB: number | undefined
  readonly delete: { readonly totalMs: number; readonly goneMs: number; readonly tableAfter: number; readonly deleteBurstMs: number; readonly cpu: CpuWindow; readonly requests: Record<string, number>; readonly routerCalls: Record<string, number> }
  readonly idle: { readonly windowMs: number; readonly cpuPercent: number; readonly rssMiB: number; readonly hwmMiB: number } | undefined
}

interface FloorRound {
  readonly createMs: number
  readonly deleteMs: number
  readonly addMsMean: number
  readonly deleteMappingMsMean: number
  readonly metadataPatchMsMean: number
  readonly statusPatchMsMean: number
  readonly finalizerPatchMsMean: number
  readonly cpuCreate: CpuWindow
  readonly cpuDelete: CpuWindow
}

export async function bulk(ctx: Context): Promise<ScenarioResult> {
  const n = ctx.opts.bulkServices
  const rounds: Array<Round> = []
  const floorRounds: Array<FloorRound> = []
  const readyTimes: Array<number> = []
  const failures: Array<{
    round: number
    error: string
    gatewayAlive: boolean
    reasserts: ReadonlyArray<string>
    log: string
    /** The controller's router calls by action when it failed. */
    callsAtFailure: Record<string, number> | undefined
  }> = []
  const reassertsByRound: Array<ReadonlyArray<string>> = []
  if (ctx.opts.bulkWarmUp > 0) {
    ctx.log(`bulk: floor warm-up with ${ctx.opts.bulkWarmUp} Services (not timed)`)
    await floorRound(ctx, ctx.opts.bulkWarmUp, "floor warm-up")
  }
  for (let r = 0; r < ctx.opts.bulkRounds; r++) {
    ctx.log(`bulk round ${r + 1}/${ctx.opts.bulkRounds}: floor`)
    floorRounds.push(await floorRound(ctx, n))
    ctx.log(`bulk round ${r + 1}/${ctx.opts.bulkRounds}: controller`)
    const { controller, readyMs } = await ctx.startController(`bulk-${r + 1}`, SCALE_FLAGS)
    readyTimes.push(readyMs)
    let failed: unknown
    let callsAtFailure: Record<string, number> | undefined
    try {
      if (ctx.opts.bulkWarmUp > 0) await warmUp(ctx, controller, ctx.opts.bulkWarmUp)
      rounds.push(await controllerRound(ctx, controller, n, rounds.length === 0))
    } catch (error) {
      failed = error
      callsAtFailure = await gatewayCalls(controller).catch(() => undefined)
    } finally {
      await ctx.stopController(controller)
    }
    // Full passes list the router's table: what started each one (a reboot is expected once a round).
    const reasserts = controller.output().split("\n").filter((line) => line.includes("re-asserting every mapping"))
      .map((line) => {
        try {
          const entry = JSON.parse(line) as { message?: string; timestamp?: string }
          return `${entry.timestamp ?? ""} ${entry.message ?? ""}`
        } catch {
          return line
        }
      })
    reassertsByRound.push(reasserts)
    if (failed !== undefined) {
      const alive = gatewayAlive()
      const log = ctx.saveControllerLog(`bulk-${r + 1}-failed-controller`)
      ctx.log(`  round ${r + 1} FAILED (gateway ${alive ? "alive" : "dead"}): ${String(failed)}; controller log in ${log}; ` +
        `router calls so far ${JSON.stringify(callsAtFailure ?? {})}`)
      failures.push({ round: r + 1, error: String(failed), gatewayAlive: alive, reasserts, log, callsAtFailure })
      await ctx.recover()
    }
  }
  const floorCreate = summarize(floorRounds.map((f) => f.createMs))
  const floorDelete = summarize(floorRounds.map((f) => f.deleteMs))
  const section2 = `2. bulk: ${n} Services × 2 ports created at once`
  const section3 = `3. reboot recovery: ${2 * n} mappings held, gateway rebooted`
  const section4 = `4. delete: ${n} Services deleted`
  const rebootGoal = floorCreate === undefined ? undefined : 5000 + 1.25 * floorCreate.median
  const reboots = rounds.flatMap((round) => (round.reboot === undefined ? [] : [round.reboot]))
  const rows: Array<Row> = [
    { section: section2, figure: "first create sent → all statuses set (all mapped)", unit: "s", value: summarize(rounds.map((x) => x.create.totalMs)), floor: floorCreate, goal: "≤ 1.25×" },
    { section: section2, figure: "  the create burst itself (arrival of the work)", unit: "s", value: summarize(rounds.map((x) => x.create.createBurstMs)) },
    { section: section2, figure: "  first create sent → all its Events recorded (they follow the work)", unit: "s", value: summarize(rounds.map((x) => x.create.eventsMs)) },
    { section: section2, figure: "floor: metadata patch + 2 AddPortMapping + status patch each", unit: "s", value: floorCreate },
    { section: section2, figure: "  floor's AddPortMapping, mean per call", unit: "ms", value: summarize(floorRounds.map((f) => f.addMsMean)) },
    callsRow(section2, "router calls per Service (controller's /metrics)", rounds.map((x) => x.create.routerCalls), n, 2),
    callsRow(section2, "apiserver requests per Service (apiserver's /metrics)", rounds.map((x) => x.create.requests), n, 2, ["POST services", "POST ipaddresses", "PUT leases"]),
    { section: section3, figure: "gateway back → all mappings restored (nft poll)", unit: "s", value: summarize(reboots.map((x) => x.restoredMs)), goal: rebootGoal === undefined ? undefined : `≤ 5 s + 1.25 × floor = ${(rebootGoal / 1000).toFixed(1)} s`, goalBound: rebootGoal },
    { section: section3, figure: "  gateway back → first mapping back (detection)", unit: "s", value: summarize(reboots.map((x) => x.firstBackMs)) },
    { section: section3, figure: "  rebootGateway() itself (stop, flush, start)", unit: "s", value: summarize(reboots.map((x) => x.rebootCallMs)) },
    callsRow(section3, "router calls per mapping restored", reboots.map((x) => x.routerCalls), 2 * n, 1),
    callsRow(section3, "apiserver requests per mapping restored", reboots.map((x) => x.requests), 2 * n, 0, ["PUT leases"]),
    { section: section4, figure: "first delete sent → all Services gone (all unmapped)", unit: "s", value: summarize(rounds.map((x) => x.delete.totalMs)), floor: floorDelete },
    { section: section4, figure: "  the delete burst itself", unit: "s", value: summarize(rounds.map((x) => x.delete.deleteBurstMs)) },
    { section: section4, figure: "floor: 2 DeletePortMapping + finalizer patch each", unit: "s", value: floorDelete },
    { section: section4, figure: "  floor's DeletePortMapping, mean per call", unit: "ms", value: summarize(floorRounds.map((f) => f.deleteMappingMsMean)) },
    callsRow(section4, "router calls per Service (controller's /metrics)", rounds.map((x) => x.delete.routerCalls), n, 2),
    callsRow(section4, "apiserver requests per Service (apiserver's /metrics)", rounds.map((x) => x.delete.requests), n, 1, ["DELETE services", "DELETE ipaddresses", "PUT leases"])
  ]
  const idle = rounds[0]?.idle
  if (idle !== undefined) {
    rows.push(
      { section: "5. footprint", figure: `controller RSS, idle, ${2 * n} mappings held`, unit: "MiB", value: summarize([idle.rssMiB]) },
      {
        section: "5. footprint",
        figure: `controller RSS high-water, through the ${n}-Service bulk`,
        unit: "MiB",
        value: summarize(rounds.flatMap((round) => round.idle === undefined ? [] : [round.idle.hwmMiB])),
        note: "VmHWM after the create, before the reboot and the delete"
      },
      { section: "5. footprint", figure: `controller CPU, idle, ${2 * n} mappings held (${Math.round(idle.windowMs / 1000)} s)`, unit: "%", value: summarize([idle.cpuPercent]), note: "of one core; probe every 2 s, resync off" }
    )
  }
  if (failures.length > 0) {
    rows.push({
      section: section2,
      figure: "controller rounds that failed (excluded above)",
      unit: "count",
      value: summarize([failures.length]),
      note: failures.map((f) => `round ${f.round}: ${f.gatewayAlive ? "" : "miniupnpd died; "}${f.error.slice(0, 80)}`).join("; ")
    })
  }
  return { rows, raw: { services: n, controllerFlags: SCALE_FLAGS, readyTimes, rounds, floorRounds, failures, reassertsByRound } }
}

/**
 * Calls per unit of work, beside what the floor makes (`floor` per unit). Counts under `ignore`
 * are not the controller's doing (the benchmark's own creates, the apiserver's bookkeeping).
 */
const callsRow = (
  section: string,
  figure: string,
  perRound: ReadonlyArray<Record<string, number>>,
  units: number,
  floor: number,
  ignore: ReadonlyArray<string> = []
): Row => {
  const kept = perRound.map((counts) => Object.fromEntries(Object.entries(counts).filter(([k]) => !ignore.includes(k) && !k.startsWith("WATCH") && !k.startsWith("LIST"))))
  const per = kept.map((counts) => Object.values(counts).reduce((a, b) => a + b, 0) / units)
  const last = kept[kept.length - 1] ?? {}
  return {
    section,
    figure,
    unit: "calls",
    value: summarize(per),
    floor: summarize([floor]),
    note: Object.entries(last).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${Math.round((100 * v) / units) / 100}`).join(", ")
  }
}

/**
 * Not timed: Services created and deleted through a just-started controller, so that the bulk
 * measures a running controller rather than code V8 has not compiled yet (startup is measured
 * on its own).
 */
async function warmUp(ctx: Context, controller: Controller, n: number): Promise<void> {
  const { c, tracker } = ctx
  const list = names("warm", n)
  tracker.forget(list)
  ctx.log(`  warm-up with ${n} Services (not timed)`)
  await pool(servicesFor(list, true), ctx.opts.clientConcurrency, (body) =>
    retrying("create", () => c.core.createNamespacedService({ namespace: NAMESPACE, body }))
  )
  await tracker.until(() => tracker.count(list, (s) => s.statusAt !== undefined) === n, { timeoutMs: 120_000, description: "warm-up statuses" })
  await pool(list, ctx.opts.clientConcurrency, (name) => retrying("delete", () => c.core.deleteNamespacedService({ namespace: NAMESPACE, name })))
  await tracker.until(() => tracker.count(list, (s) => s.goneAt !== undefined) === n, { timeoutMs: 120_000, description: "warm-up Services gone" })
  await waitTable((count) => count === 0, { intervalMs: 250, timeoutMs: 60_000, description: "an empty table after the warm-up" })
  await waitIdle(controller, { quietMs: 1000, timeoutMs: 120_000 })
}

async function controllerRound(ctx: Context, controller: Controller, n: number, measureIdle: boolean): Promise<Round> {
  const { c, tracker } = ctx
  const list = names("bulk", n)
  tracker.forget(list)
  const bodies = servicesFor(list, true)

  // Create.
  let requests0 = await apiserverRequests()
  let calls0 = await gatewayCalls(controller)
  let cpu = cpuWindow(() => ctx.pids(controller))
  const t0 = now()
  let lastCreate = 0
  await pool(bodies, ctx.opts.clientConcurrency, async (body) => {
    await retrying("create", () => c.core.createNamespacedService({ namespace: NAMESPACE, body }))
    lastCreate = Math.max(lastCreate, now())
  })
  // The end is read from the watch; nft is asked once afterwards (listing 1,000 rules costs CPU the
  // measured processes would otherwise lose).
  await whileGatewayAlive(
    tracker.until(() => tracker.count(list, (s) => s.statusAt !== undefined) === n, {
      timeoutMs: 600_000,
      description: `${n} statuses`,
      detail: () => `${tracker.count(list, (s) => s.statusAt !== undefined)} set`
    }),
    () => `${n} statuses (${tracker.count(list, (s) => s.statusAt !== undefined)} set so far)`
  )
  const statusesAt = tracker.latest(list, (s) => s.statusAt)
  const createCpu = cpu.end()
  const createCalls = countDelta(calls0, await gatewayCalls(controller))
  // Events yield to the work and follow the burst: an EnsuredLoadBalancer each at least (an
  // EnsuringLoadBalancer too for a Service that took more than a second), none left waiting.
  const eventsDone = await pollUntil(async () => {
    const waiting = (await readiness(controller).catch(() => undefined))?.eventsQueued
    const sent = requestDelta(requests0, await apiserverRequests())
    return waiting === 0 && (sent["POST events"] ?? 0) >= n ? sent : undefined
  }, { intervalMs: 250, timeoutMs: 120_000, description: `${n} Events and none waiting` })
  const createRequests = eventsDone.value
  const mapped = await waitTable((count) => count >= 2 * n, { intervalMs: 250, timeoutMs: 60_000, description: `${2 * n} mappings` })
  const create = {
    // The controller writes a status only after its mappings are made: the last status ends it.
    totalMs: statusesAt - t0,
    statusesMs: statusesAt - t0,
    tableAfter: mapped.count,
    createBurstMs: lastCreate - t0,
    eventsMs: eventsDone.at - t0,
    portErrors: list.reduce((sum, name) => sum + (tracker.records.get(name)?.portErrors ?? 0), 0),
    cpu: createCpu,
    requests: createRequests,
    routerCalls: createCalls
  }
  ctx.log(`  created: all set in ${(create.totalMs / 1000).toFixed(1)} s (burst ${(create.createBurstMs / 1000).toFixed(1)} s)`)
  await waitIdle(controller, { quietMs: 1000, timeoutMs: 120_000 })

  // Idle, with the mappings held.
  let idle: Round["idle"]
  if (measureIdle) {
    const window = cpuWindow(() => ({ controller: controller.pid }))
    await sleep(ctx.opts.idleWindowMs)
    const w = window.end()
    const memory = memoryMiB(controller.pid)
    idle = {
      windowMs: w.wallMs,
      cpuPercent: (100 * (w.processes["controller"] ?? 0)) / w.wallMs,
      rssMiB: memory?.rss ?? Number.NaN,
      hwmMiB: memory?.hwm ?? Number.NaN
    }
  }

  // Reboot.
  let reboot: Round["reboot"]
  {
    requests0 = await apiserverRequests()
    calls0 = await gatewayCalls(controller)
    cpu = cpuWindow(() => ctx.pids(controller))
    const r0 = now()
    await rebootGateway()
    const back = now()
    const first = await whileGatewayAlive(
      waitTable((count) => count > 0, { intervalMs: 100, timeoutMs: 120_000, description: "the first mapping back" }),
      "the first mapping back"
    )
    const all = await whileGatewayAlive(waitTable((count) => count >= 2 * n, {
      intervalMs: 100,
      slowUntil: Math.floor(0.9 * 2 * n),
      slowIntervalMs: 500,
      timeoutMs: 600_000,
      description: `${2 * n} mappings back`
    }), `${2 * n} mappings back`)
    const rebootCpu = cpu.end()
    const routerCalls = countDelta(calls0, await gatewayCalls(controller))
    // The repair's Events follow it: counted once they are out.
    await waitIdle(controller, { quietMs: 1000, timeoutMs: 120_000 })
    reboot = {
      restoredMs: all.at - back,
      firstBackMs: first.at - back,
      rebootCallMs: back - r0,
      cpu: rebootCpu,
      requests: requestDelta(requests0, await apiserverRequests()),
      routerCalls
    }
    ctx.log(`  rebooted: all back ${(reboot.restoredMs / 1000).toFixed(1)} s after the gateway answered`)
  }

  // Delete.
  requests0 = await apiserverRequests()
  calls0 = await gatewayCalls(controller)
  cpu = cpuWindow(() => ctx.pids(controller))
  const d0 = now()
  let lastDelete = 0
  await pool(list, ctx.opts.clientConcurrency, async (name) => {
    await retrying("delete", () => c.core.deleteNamespacedService({ namespace: NAMESPACE, name }))
    lastDelete = Math.max(lastDelete, now())
  })
  await whileGatewayAlive(
    tracker.until(() => tracker.count(list, (s) => s.goneAt !== undefined) === n, {
      timeoutMs: 600_000,
      description: `${n} Services gone`,
      detail: () => `${tracker.count(list, (s) => s.goneAt !== undefined)} gone`
    }),
    `${n} Services gone`
  )
  const goneAt = tracker.latest(list, (s) => s.goneAt)
  const cpuDelete = cpu.end()
  const callsDelete = countDelta(calls0, await gatewayCalls(controller))
  await waitIdle(controller, { quietMs: 500, timeoutMs: 60_000 })
  const requestsDelete = requestDelta(requests0, await apiserverRequests())
  const unmapped = await waitTable((count) => count === 0, { intervalMs: 250, timeoutMs: 60_000, description: "an empty table" })
  const deleted = {
    // The finalizer goes only after the mappings: the last Service gone ends it.
    totalMs: goneAt - d0,
    goneMs: goneAt - d0,
    tableAfter: unmapped.count,
    deleteBurstMs: lastDelete - d0,
    cpu: cpuDelete,
    requests: requestsDelete,
    routerCalls: callsDelete
  }
  ctx.log(`  deleted: all gone in ${(deleted.totalMs / 1000).toFixed(1)} s`)
  return { create, reboot, delete: deleted, idle, rssAfterMiB: memoryMiB(controller.pid)?.rss }
}

/** The minimal client, with the controller stopped: the same result by the shortest path. */
async function floorRound(ctx: Context, n: number, label = "floor"): Promise<FloorRound> {
  const { c, tracker, soap, opts } = ctx
  const list = names("floor", n)
  tracker.forget(list)
  const nodeIp = "192.168.77.10"
  // Not timed: the Services exist before the floor starts, as they do when the controller reacts.
  const created: Array<k8s.V1Service> = await pool(servicesFor(list, false), opts.clientConcurrency, (body) =>
    retrying("create", () => c.core.createNamespacedService({ namespace: NAMESPACE, body }))
  )
  await tracker.until(() => tracker.count(list, () => true) === n, { timeoutMs: 60_000, description: "floor Services seen" })
  const ip = await soap.getExternalIPAddress()
  const router = semaphore(opts.gatewayConcurrency)
  const durations = { add: [] as Array<number>, del: [] as Array<number>, meta: [] as Array<number>, status: [] as Array<number>, fin: [] as Array<number> }
  const timed = async <T>(into: Array<number>, f: () => Promise<T>): Promise<T> => {
    const s = now()
    const result = await f()
    into.push(now() - s)
    return result
  }

  let cpu = cpuWindow(() => ctx.pids())
  const t0 = now()
  await pool(created, opts.workers, async (service) => {
    const name = service.metadata?.name ?? ""
    const ports = service.spec?.ports ?? []
    const record = JSON.stringify(ports.map((p) => ({
      protocol: p.protocol,
      externalPort: p.port,
      internalClient: nodeIp,
      internalPort: p.nodePort,
      description: `kubernetes/${NAMESPACE}/${name}/${p.name}`
    })))
    await timed(durations.meta, () =>
      c.core.patchNamespacedService({
        namespace: NAMESPACE,
        name,
        body: {
          metadata: {
            resourceVersion: service.metadata?.resourceVersion,
            finalizers: [FLOOR_FINALIZER],
            annotations: { "bench.edge-ccm.test/mappings": record }
          }
        }
      }, mergePatch)
    )
    await Promise.all(ports.map((p) =>
      router.run(() =>
        timed(durations.add, () =>
          soap.addPortMapping({
            externalPort: p.port,
            protocol: p.protocol ?? "TCP",
            internalPort: p.nodePort ?? 0,
            internalClient: nodeIp,
            description: `kubernetes/${NAMESPACE}/${name}/${p.name}`,
            leaseSeconds: 3600
          })
        )
      )
    ))
    await timed(durations.status, () =>
      c.core.patchNamespacedServiceStatus({
        namespace: NAMESPACE,
        name,
        body: { status: { loadBalancer: { ingress: [{ ip, ports: ports.map((p) => ({ port: p.port, protocol: p.protocol ?? "TCP" })) }] } } }
      }, mergePatch)
    )
  })
  await tracker.until(() => tracker.count(list, (s) => s.statusAt !== undefined) === n, {
    timeoutMs: 60_000,
    description: "floor statuses seen"
  })
  // As for the controller: when the watch delivered the last status.
  const createMs = tracker.latest(list, (s) => s.statusAt) - t0
  const cpuCreate = cpu.end()
  await waitTable((x) => x >= 2 * n, { intervalMs: 250, timeoutMs: 60_000, description: "floor mappings" })
  ctx.log(`  ${label} create: ${(createMs / 1000).toFixed(1)} s`)

  // Delete: the Services are marked for deletion first (not timed), held by the floor's finalizer.
  await pool(list, opts.clientConcurrency, (name) => retrying("delete", () => c.core.deleteNamespacedService({ namespace: NAMESPACE, name })))
  await tracker.until(() => tracker.count(list, (s) => s.deletingAt !== undefined) === n, { timeoutMs: 60_000, description: "floor Services deleting" })
  cpu = cpuWindow(() => ctx.pids())
  const d0 = now()
  await pool(created, opts.workers, async (service) => {
    const name = service.metadata?.name ?? ""
    await Promise.all((service.spec?.ports ?? []).map((p) =>
      router.run(() => timed(durations.del, () => soap.deletePortMapping(p.port, p.protocol ?? "TCP")))
    ))
    await timed(durations.fin, () =>
      c.core.patchNamespacedService({
        namespace: NAMESPACE,
        name,
        body: { metadata: { finalizers: [], annotations: { "bench.edge-ccm.test/mappings": null } } }
      }, mergePatch)
    )
  })
  await tracker.until(() => tracker.count(list, (s) => s.goneAt !== undefined) === n, { timeoutMs: 60_000, description: "floor Services gone" })
  const deleteMs = tracker.latest(list, (s) => s.goneAt) - d0
  const cpuDelete = cpu.end()
  await waitTable((x) => x === 0, { intervalMs: 250, timeoutMs: 60_000, description: "floor mappings gone" })
  ctx.log(`  ${label} delete: ${(deleteMs / 1000).toFixed(1)} s`)
  const mean = (xs: ReadonlyArray<number>) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length)
  return {
    createMs,
    deleteMs,
    addMsMean: mean(durations.add),
    deleteMappingMsMean: mean(durations.del),
    metadataPatchMsMean: mean(durations.meta),
    statusPatchMsMean: mean(durations.status),
    finalizerPatchMsMean: mean(durations.fin),
    cpuCreate,
    cpuDelete
  }
}
