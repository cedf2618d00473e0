/**
 * The everyday case, the way a user meets it: a controller just started with its default flags
 * (ready, not warmed up), 100 Services × 2 ports (TCP and UDP) applied with one `kubectl apply`,
 * left alone for 60 s (the default 30 s resync runs twice over the 200 mappings), then deleted
 * with one `kubectl delete -l`.
 *
 * Floors, in the same run, with the controller stopped and no concurrency limit of ours: the
 * same kubectl calls on Services the controller would not touch, then the router work as bare
 * serial AddPortMapping / DeletePortMapping calls (miniupnpd answers one at a time), then the
 * apiserver work as bare PATCHes sent all at once (the record and finalizer, the status; the
 * finalizer's removal). Each floor is those three stages in sequence.
 */
import { kubectl } from "../../test/e2e/support/lab.ts"
import type { Context, ScenarioResult } from "../lib/context.ts"
import { countDelta, gatewayCalls, histogramTotals, meanMsBetween, waitIdle } from "../lib/controller.ts"
import { waitTable } from "../lib/gateway.ts"
import { apiserverRequests, FLOOR_FINALIZER, mergePatch, NAMESPACE, OPT_IN, requestDelta } from "../lib/kube.ts"
import { cpuWindow, memoryMiB } from "../lib/machine.ts"
import { now, type Row, sleep, summarize } from "../lib/stats.ts"

const SERVICES = 100
const BASE_PORT = 21000
const LABEL = "bench.edge-ccm.test/everyday"
const IDLE_WINDOW_MS = 60_000
/** What the apiserver counts that no client of ours asked for, or that only the watches ask. */
const BOOKKEEPING = (key: string) =>
  key.startsWith("WATCH") || key.startsWith("LIST") || key === "POST ipaddresses" || key === "PUT leases"

const names = (prefix: string) => Array.from({ length: SERVICES }, (_, i) => `${prefix}-${String(i).padStart(3, "0")}`)

/** One kubectl-appliable List of the Services (JSON is YAML). */
const manifest = (list: ReadonlyArray<string>, ours: boolean): string =>
  JSON.stringify({
    apiVersion: "v1",
    kind: "List",
    items: list.map((name, i) => ({
      apiVersion: "v1",
      kind: "Service",
      metadata: { name, namespace: NAMESPACE, labels: { [LABEL]: ours ? "ours" : "floor" }, ...(ours ? { annotations: { ...OPT_IN } } : {}) },
      spec: {
        type: "LoadBalancer",
        selector: { app: name },
        ports: [
          { name: "tcp", port: BASE_PORT + i, targetPort: 80, protocol: "TCP" },
          { name: "udp", port: BASE_PORT + i, targetPort: 80, protocol: "UDP" }
        ]
      }
    }))
  })

const run = async (args: ReadonlyArray<string>, input?: string): Promise<number> => {
  const t0 = now()
  const result = await kubectl(args, input === undefined ? { timeoutMs: 120_000 } : { input, timeoutMs: 120_000 })
  if (result.code !== 0) throw new Error(`kubectl ${args.join(" ")} failed: ${result.stderr.trim()}`)
  return now() - t0
}

interface Floor {
  readonly applyMs: number
  readonly addsMs: number
  readonly patchesMs: number
  readonly deleteMs: number
  readonly deletesMs: number
  readonly finalizersMs: number
  /** The apiserver requests of `kubectl apply` itself, by verb and resource. */
  readonly kubectlRequests: Record<string, number>
  /** The delete's work overlapped by a minimal client (`pipelinedDeleteFloor`). */
  readonly pipelinedDeleteMs: number
  readonly pipelinedKubectlMs: number
  readonly pipelinedCpu: ReturnType<ReturnType<typeof cpuWindow>["end"]>
}

interface FloorPort {
  readonly name: string
  readonly protocol: "TCP" | "UDP"
  readonly port: number
}

/**
 * The floor's create: `kubectl apply` of Services the controller leaves alone, 200 serial
 * AddPortMapping, then each Service's record-and-finalizer PATCH and status PATCH, all at once.
 */
async function floorCreate(ctx: Context, list: ReadonlyArray<string>) {
  const { c, soap, tracker } = ctx
  tracker.forget(list)
  const before = await apiserverRequests()
  const t0 = now()
  await run(["apply", "-f", "-"], manifest(list, false))
  await tracker.until(() => tracker.count(list, () => true) === SERVICES, { timeoutMs: 60_000, description: "floor Services seen" })
  const applyMs = tracker.latest(list, (s) => s.seenAt) - t0
  const kubectlRequests = Object.fromEntries(Object.entries(requestDelta(before, await apiserverRequests())).filter(([k]) => !BOOKKEEPING(k)))

  const ip = await soap.getExternalIPAddress()
  const nodeIp = "192.168.77.10"
  const ports: ReadonlyArray<FloorPort> = list.flatMap((name, i) =>
    (["TCP", "UDP"] as const).map((protocol) => ({ name, protocol, port: BASE_PORT + i }))
  )
  let s = now()
  for (const p of ports) {
    await soap.addPortMapping({
      externalPort: p.port,
      protocol: p.protocol,
      internalPort: tracker.records.get(p.name)?.nodePorts[p.protocol === "TCP" ? 0 : 1] ?? 0,
      internalClient: nodeIp,
      description: `kubernetes/${NAMESPACE}/${p.name}/${p.protocol.toLowerCase()}`,
      leaseSeconds: 3600
    })
  }
  const addsMs = now() - s
  s = now()
  await Promise.all(list.map((name, i) =>
    c.core.patchNamespacedService({
      namespace: NAMESPACE,
      name,
      body: { metadata: { finalizers: [FLOOR_FINALIZER], annotations: { "bench.edge-ccm.test/mappings": String(BASE_PORT + i) } } }
    }, mergePatch).then(() =>
      c.core.patchNamespacedServiceStatus({
        namespace: NAMESPACE,
        name,
        body: {
          status: {
            loadBalancer: { ingress: [{ ip, ports: [{ port: BASE_PORT + i, protocol: "TCP" }, { port: BASE_PORT + i, protocol: "UDP" }] }] }
          }
        }
      }, mergePatch)
    )
  ))
  await tracker.until(() => tracker.count(list, (r) => r.statusAt !== undefined) === SERVICES, { timeoutMs: 60_000, description: "floor statuses" })
  const patchesMs = tracker.latest(list, (r) => r.statusAt) - s
  return { ports, applyMs, addsMs, patchesMs, kubectlRequests }
}

/** The floor's finalizer removal for one Service. */
const releaseFloor = (ctx: Context, name: string) =>
  ctx.c.core.patchNamespacedService({
    namespace: NAMESPACE,
    name,
    body: { metadata: { finalizers: [], annotations: { "bench.edge-ccm.test/mappings": null } } }
  }, mergePatch)

async function floor(ctx: Context): Promise<Floor> {
  const { soap, tracker } = ctx
  const list = names("floor-day")
  const { ports, applyMs, addsMs, patchesMs, kubectlRequests } = await floorCreate(ctx, list)
  ctx.log(`  floor create: kubectl ${(applyMs / 1000).toFixed(2)} s, adds ${(addsMs / 1000).toFixed(2)} s, patches ${(patchesMs / 1000).toFixed(2)} s`)

  let s = now()
  await run(["delete", "services", "-n", NAMESPACE, "-l", `${LABEL}=floor`, "--wait=false"])
  await tracker.until(() => tracker.count(list, (r) => r.deletingAt !== undefined) === SERVICES, { timeoutMs: 60_000, description: "floor deleting" })
  const deleteMs = tracker.latest(list, (r) => r.deletingAt) - s
  s = now()
  for (const p of ports) await soap.deletePortMapping(p.port, p.protocol)
  const deletesMs = now() - s
  s = now()
  await Promise.all(list.map((name) => releaseFloor(ctx, name)))
  await tracker.until(() => tracker.count(list, (r) => r.goneAt !== undefined) === SERVICES, { timeoutMs: 60_000, description: "floor gone" })
  const finalizersMs = tracker.latest(list, (r) => r.goneAt) - s
  await waitTable((count) => count === 0, { intervalMs: 250, timeoutMs: 30_000, description: "floor mappings gone" })
  ctx.log(`  floor delete: kubectl ${(deleteMs / 1000).toFixed(2)} s, deletes ${(deletesMs / 1000).toFixed(2)} s, patches ${(finalizersMs / 1000).toFixed(2)} s`)
  const pipelined = await pipelinedDeleteFloor(ctx)
  return { applyMs, addsMs, patchesMs, deleteMs, deletesMs, finalizersMs, kubectlRequests, ...pipelined }
}

/**
 * The delete's work as a minimal client would do it with the stages overlapped, the way the
 * controller must: as the watch shows each Service marked for deletion, its two
 * DeletePortMapping join one serial chain (miniupnpd answers one at a time) and its finalizer
 * PATCH follows them; no read, no record, no Event, no Effect. What this costs on this
 * machine against the three stages run apart says how far below the sequential floor any
 * controller sharing the machine's cores with kubectl and the apiserver can go.
 */
async function pipelinedDeleteFloor(ctx: Context) {
  const { soap, tracker } = ctx
  const list = names("floor-pipe")
  const { ports } = await floorCreate(ctx, list)
  const cpu = cpuWindow(() => ctx.pids(undefined))
  let chain = Promise.resolve()
  const t0 = now()
  const released = list.map((name) =>
    tracker.until(() => tracker.records.get(name)?.deletingAt !== undefined, { timeoutMs: 60_000, description: `${name} deleting` }).then(() => {
      for (const p of ports) if (p.name === name) chain = chain.then(() => soap.deletePortMapping(p.port, p.protocol))
      return chain.then(() => releaseFloor(ctx, name))
    })
  )
  const pipelinedKubectlMs = await run(["delete", "services", "-n", NAMESPACE, "-l", `${LABEL}=floor`, "--wait=false"])
  await Promise.all(released)
  await tracker.until(() => tracker.count(list, (r) => r.goneAt !== undefined) === SERVICES, { timeoutMs: 60_000, description: "pipelined floor gone" })
  const pipelinedDeleteMs = tracker.latest(list, (r) => r.goneAt) - t0
  const pipelinedCpu = cpu.end()
  await waitTable((count) => count === 0, { intervalMs: 250, timeoutMs: 30_000, description: "pipelined floor mappings gone" })
  ctx.log(`  floor delete, overlapped: all gone ${(pipelinedDeleteMs / 1000).toFixed(2)} s (kubectl ${(pipelinedKubectlMs / 1000).toFixed(2)} s)`)
  return { pipelinedDeleteMs, pipelinedKubectlMs, pipelinedCpu }
}

/** CPU by process over a window, in seconds, and the machine's busy share. */
const cpuNote = (window: ReturnType<ReturnType<typeof cpuWindow>["end"]>): string =>
  `${Object.entries(window.processes).filter(([, ms]) => ms > 0).map(([name, ms]) => `${name} ${(ms / 1000).toFixed(2)}`).join(", ")}` +
  `, others ${(window.othersMs / 1000).toFixed(2)}; machine ${(window.machineMs / 1000).toFixed(2)} s of CPU in ${(window.wallMs / 1000).toFixed(2)} s`

/** The everyday case and its floors, once each (the module comment says how). */
export async function everyday(ctx: Context): Promise<ScenarioResult> {
  const { tracker } = ctx
  ctx.log(`everyday: floor`)
  const f = await floor(ctx)
  ctx.log(`everyday: controller, default flags`)
  const { controller, readyMs } = await ctx.startController("everyday", [])
  const list = names("day")
  tracker.forget(list)
  try {
    // Apply.
    const latencies = async () => ({
      pass: await histogramTotals(controller, "edge_ccm_reconcile_duration_seconds"),
      call: await histogramTotals(controller, "edge_ccm_gateway_request_duration_seconds")
    })
    let latencies0 = await latencies()
    let requests0 = await apiserverRequests()
    let cpu = cpuWindow(() => ctx.pids(controller))
    const t0 = now()
    const applyCallMs = await run(["apply", "-f", "-"], manifest(list, true))
    await tracker.until(() => tracker.count(list, (r) => r.statusAt !== undefined) === SERVICES, {
      timeoutMs: 300_000,
      description: `${SERVICES} statuses`
    })
    const createMs = tracker.latest(list, (r) => r.statusAt) - t0
    const createCpu = cpu.end()
    const createLatencies = await latencies()
    const createPassMs = meanMsBetween(latencies0.pass, createLatencies.pass)
    const createRouterCallMs = meanMsBetween(latencies0.call, createLatencies.call)
    // The Events follow the work; the requests are counted once they are out too.
    await waitIdle(controller, { quietMs: 1000, timeoutMs: 120_000 })
    const created = requestDelta(requests0, await apiserverRequests())
    const controllerRequests = Object.fromEntries(Object.entries(created).flatMap(([key, count]) => {
      if (BOOKKEEPING(key)) return []
      const left = count - (f.kubectlRequests[key] ?? 0)
      return left > 0 ? [[key, left]] : []
    }))
    const perService = Object.values(controllerRequests).reduce((a, b) => a + b, 0) / SERVICES
    await waitTable((count) => count >= 2 * SERVICES, { intervalMs: 250, timeoutMs: 30_000, description: "200 mappings" })
    ctx.log(`  applied: all statuses ${(createMs / 1000).toFixed(2)} s after kubectl started; ${perService.toFixed(2)} apiserver requests per Service`)

    // Idle, with the defaults: the resync lists the table twice in the window.
    const idleWindow = cpuWindow(() => ({ controller: controller.pid }))
    const idleCalls0 = await gatewayCalls(controller)
    const idleRequests0 = await apiserverRequests()
    await sleep(IDLE_WINDOW_MS)
    const idle = idleWindow.end()
    const idleCalls = countDelta(idleCalls0, await gatewayCalls(controller))
    const idleRequests = Object.fromEntries(
      Object.entries(requestDelta(idleRequests0, await apiserverRequests())).filter(([key]) => !BOOKKEEPING(key))
    )
    const idlePercent = (100 * (idle.processes["controller"] ?? 0)) / idle.wallMs
    const rss = memoryMiB(controller.pid)

    // Delete.
    latencies0 = await latencies()
    requests0 = await apiserverRequests()
    cpu = cpuWindow(() => ctx.pids(controller))
    const d0 = now()
    const d0Us = process.hrtime.bigint() / 1000n
    const deleteCallMs = await run(["delete", "services", "-n", NAMESPACE, "-l", `${LABEL}=ours`, "--wait=false"])
    await tracker.until(() => tracker.count(list, (r) => r.goneAt !== undefined) === SERVICES, {
      timeoutMs: 300_000,
      description: `${SERVICES} Services gone`
    })
    const deleteMs = tracker.latest(list, (r) => r.goneAt) - d0
    const deleteCpu = cpu.end()
    if (ctx.profileDir !== undefined) ctx.log(`  the delete on the profiles' clock: --window ${d0Us},${process.hrtime.bigint() / 1000n}`)
    const deleteLatencies = await latencies()
    const deletePassMs = meanMsBetween(latencies0.pass, deleteLatencies.pass)
    const deleteRouterCallMs = meanMsBetween(latencies0.call, deleteLatencies.call)
    await waitIdle(controller, { quietMs: 500, timeoutMs: 60_000 })
    const deleted = requestDelta(requests0, await apiserverRequests())
    await waitTable((count) => count === 0, { intervalMs: 250, timeoutMs: 30_000, description: "an empty table" })
    ctx.log(`  deleted: all gone ${(deleteMs / 1000).toFixed(2)} s after kubectl started`)

    const createFloor = f.applyMs + f.addsMs + f.patchesMs
    const deleteFloor = f.deleteMs + f.deletesMs + f.finalizersMs
    const section = `everyday: ${SERVICES} Services × 2 ports, one kubectl apply, one kubectl delete -l (default flags)`
    const one = (v: number) => summarize([v])
    const rows: Array<Row> = [
      { section, figure: "controller start → ready (not warmed up)", unit: "s", value: one(readyMs) },
      { section, figure: "kubectl apply started → all statuses set", unit: "s", value: one(createMs), floor: one(createFloor), goal: "≤ 1.25×" },
      {
        section,
        figure: "  floor: kubectl apply, 200 serial AddPortMapping, 200 PATCHes at once",
        unit: "s",
        value: one(createFloor),
        note: `kubectl ${(f.applyMs / 1000).toFixed(2)} s + adds ${(f.addsMs / 1000).toFixed(2)} s + patches ${(f.patchesMs / 1000).toFixed(2)} s`
      },
      { section, figure: "  the kubectl apply call itself", unit: "s", value: one(applyCallMs) },
      { section, figure: "  a Service's pass, mean (apply)", unit: "ms", value: one(createPassMs) },
      { section, figure: "  a router call, mean (apply)", unit: "ms", value: one(createRouterCallMs) },
      { section, figure: "  controller CPU over the apply", unit: "ms", value: one(createCpu.processes["controller"] ?? Number.NaN) },
      {
        section,
        figure: "apiserver requests per Service, the controller's (kubectl's own subtracted)",
        unit: "calls",
        value: one(perService),
        goal: "≤ 3",
        goalBound: 3,
        note: Object.entries(controllerRequests).map(([k, v]) => `${k} ${v / SERVICES}`).join(", ")
      },
      {
        section,
        figure: `controller CPU, idle, ${2 * SERVICES} mappings, ${IDLE_WINDOW_MS / 1000} s, default 30 s resync`,
        unit: "%",
        value: one(idlePercent),
        goal: "< 1 %",
        goalBound: 1,
        note: "of one core"
      },
      {
        section,
        figure: `  router calls in that window`,
        unit: "calls",
        value: one(Object.values(idleCalls).reduce((a, b) => a + b, 0)),
        note: Object.entries(idleCalls).map(([k, v]) => `${k} ${v}`).join(", ")
      },
      {
        section,
        figure: `  apiserver requests in that window`,
        unit: "calls",
        value: one(Object.values(idleRequests).reduce((a, b) => a + b, 0)),
        note: Object.entries(idleRequests).map(([k, v]) => `${k} ${v}`).join(", ")
      },
      { section, figure: "controller RSS after the idle window", unit: "MiB", value: one(rss?.rss ?? Number.NaN) },
      { section, figure: "kubectl delete -l started → all Services gone", unit: "s", value: one(deleteMs), floor: one(deleteFloor), goal: "≤ 1.25×" },
      {
        section,
        figure: "  floor: kubectl delete -l, 200 serial DeletePortMapping, 100 PATCHes at once",
        unit: "s",
        value: one(deleteFloor),
        note: `kubectl ${(f.deleteMs / 1000).toFixed(2)} s + deletes ${(f.deletesMs / 1000).toFixed(2)} s + patches ${(f.finalizersMs / 1000).toFixed(2)} s`
      },
      {
        section,
        figure: "  the same work overlapped by a minimal client (no read, record or Event)",
        unit: "s",
        value: one(f.pipelinedDeleteMs),
        note: `${(f.pipelinedDeleteMs / deleteFloor).toFixed(2)}× the floor; kubectl ${(f.pipelinedKubectlMs / 1000).toFixed(2)} s; CPU ${cpuNote(f.pipelinedCpu)}`
      },
      { section, figure: "  the kubectl delete call itself", unit: "s", value: one(deleteCallMs) },
      { section, figure: "  a Service's pass, mean (delete)", unit: "ms", value: one(deletePassMs) },
      { section, figure: "  a router call, mean (delete)", unit: "ms", value: one(deleteRouterCallMs) },
      { section, figure: "  controller CPU over the delete", unit: "ms", value: one(deleteCpu.processes["controller"] ?? Number.NaN), note: `all: ${cpuNote(deleteCpu)}` }
    ]
    return {
      rows,
      raw: { services: SERVICES, readyMs, floor: f, createMs, applyCallMs, createCpu, controllerRequests, created, idle, idlePercent, idleCalls, idleRequests, deleteMs, deleteCallMs, deleteCpu, deleted }
    }
  } finally {
    await ctx.stopController(controller)
  }
}

