/**
 * 1. Time to address: a Service accepted by the apiserver → its mapping on the router (SOAP
 * poll) → `status.loadBalancer.ingress` (watch) → the first HTTP answer from `wan`.
 * Floor, interleaved in the same run: GetExternalIPAddress + AddPortMapping by the minimal
 * client, then one status merge patch.
 */
import * as k8s from "@kubernetes/client-node"
import { kubeConfig, loadLab, serveNodePort } from "../../test/e2e/support/lab.ts"
import type { Context, ScenarioResult } from "../lib/context.ts"
import { loadBalancer, mergePatch, NAMESPACE, retrying } from "../lib/kube.ts"
import { now, sleep, summarize } from "../lib/stats.ts"
import { startWanClient } from "../lib/wan.ts"

interface Sample {
  readonly polled: boolean
  readonly createMs: number
  readonly mappedMs: number | undefined
  readonly statusMs: number
  readonly httpMs: number
  readonly polls: number
  readonly pollRttMs: number | undefined
}

interface FloorSample {
  readonly totalMs: number
  readonly externalIpMs: number
  readonly addMs: number
  readonly patchMs: number
}

export async function timeToAddress(ctx: Context): Promise<ScenarioResult> {
  const { opts } = ctx
  const lab = loadLab()
  const wan = startWanClient()
  const { controller, readyMs } = await ctx.startController("address", [])
  const samples: Array<Sample> = []
  const floors: Array<FloorSample> = []
  try {
    const total = opts.addressSamples + opts.addressUnpolledSamples
    for (let i = 0; i < total; i++) {
      const polled = i < opts.addressSamples
      // Alternate which goes first, so both see the same background.
      if (i % 2 === 0) {
        samples.push(await controllerSample(ctx, i, polled, wan, lab.gatewayWanIp))
        if (i < opts.addressSamples) floors.push(await floorSample(ctx, i, lab.nodeIp))
      } else {
        if (i < opts.addressSamples) floors.push(await floorSample(ctx, i, lab.nodeIp))
        samples.push(await controllerSample(ctx, i, polled, wan, lab.gatewayWanIp))
      }
    }
  } finally {
    await ctx.stopController(controller)
    await wan.close()
  }
  const requests = await requestCost(ctx)
  const polledSamples = samples.filter((s) => s.polled)
  const unpolled = samples.filter((s) => !s.polled)
  const floor = summarize(floors.map((f) => f.totalMs))
  const rttAll = polledSamples.flatMap((s) => (s.pollRttMs === undefined ? [] : [s.pollRttMs]))
  const pollNote = `SOAP poll every ${opts.pollMs} ms, ${summarize(polledSamples.map((s) => s.polls))?.median ?? 0} polls/sample, ` +
    `${(summarize(rttAll)?.median ?? 0).toFixed(2)} ms each`
  return {
    rows: [
      { section: "1. time to address (1 Service, 1 TCP port)", figure: "apiserver accepted → mapping on router", unit: "ms", value: summarize(polledSamples.flatMap((s) => (s.mappedMs === undefined ? [] : [s.mappedMs]))), note: pollNote },
      { section: "1. time to address (1 Service, 1 TCP port)", figure: "accepted → status.loadBalancer set (watch)", unit: "ms", value: summarize(polledSamples.map((s) => s.statusMs)), floor, goal: "well under 1 s" },
      { section: "1. time to address (1 Service, 1 TCP port)", figure: "accepted → first HTTP answer from wan", unit: "ms", value: summarize(polledSamples.map((s) => s.httpMs)), floor },
      { section: "1. time to address (1 Service, 1 TCP port)", figure: "accepted → status set, without the SOAP poll", unit: "ms", value: summarize(unpolled.map((s) => s.statusMs)), floor },
      { section: "1. time to address (1 Service, 1 TCP port)", figure: "floor: GetExternalIPAddress + AddPortMapping + status PATCH", unit: "ms", value: floor },
      { section: "1. time to address (1 Service, 1 TCP port)", figure: "  of which AddPortMapping", unit: "ms", value: summarize(floors.map((f) => f.addMs)) },
      { section: "1. time to address (1 Service, 1 TCP port)", figure: "  of which status PATCH", unit: "ms", value: summarize(floors.map((f) => f.patchMs)) },
      { section: "1. time to address (1 Service, 1 TCP port)", figure: "Service create round trip (not counted)", unit: "ms", value: summarize(samples.map((s) => s.createMs)) },
      { section: "1. time to address (1 Service, 1 TCP port)", figure: "one GET, client-node as configured by makeApiClient", unit: "ms", value: summarize(requests.fresh), note: "a new TCP + TLS connection per request" },
      { section: "1. time to address (1 Service, 1 TCP port)", figure: "one GET, one dispatcher kept for every request", unit: "ms", value: summarize(requests.reused), note: "the connection reused" }
    ],
    raw: { controllerReadyMs: readyMs, samples, floors, requests }
  }
}

/** What one apiserver request costs with client-node's per-request connection, and with one kept. */
async function requestCost(ctx: Context): Promise<{ fresh: Array<number>; reused: Array<number> }> {
  const name = "request-cost"
  await retrying("create", () =>
    ctx.c.core.createNamespacedService({ namespace: NAMESPACE, body: loadBalancer(name, [{ name: "http", port: 8099, protocol: "TCP" }], false) })
  )
  const plain = kubeConfig().makeApiClient(k8s.CoreV1Api)
  const fresh: Array<number> = []
  const reused: Array<number> = []
  try {
    for (let i = 0; i < ctx.opts.addressSamples; i++) {
      for (const [api, into] of [[plain, fresh], [ctx.c.core, reused]] as const) {
        const t0 = now()
        await api.readNamespacedService({ namespace: NAMESPACE, name })
        into.push(now() - t0)
      }
    }
  } finally {
    await retrying("delete", () => ctx.c.core.deleteNamespacedService({ namespace: NAMESPACE, name }))
  }
  return { fresh, reused }
}

async function controllerSample(
  ctx: Context,
  i: number,
  polled: boolean,
  wan: ReturnType<typeof startWanClient>,
  publicIp: string
): Promise<Sample> {
  const { c, tracker, soap, opts } = ctx
  const name = `addr-${i}`
  const port = 8100 + i
  tracker.forget([name])
  const t0 = now()
  const created: k8s.V1Service = await retrying("create", () =>
    c.core.createNamespacedService({ namespace: NAMESPACE, body: loadBalancer(name, [{ name: "http", port, protocol: "TCP" }], true) })
  )
  const accepted = now()
  const nodePort = created.spec?.ports?.[0]?.nodePort ?? 0
  const server = await serveNodePort(nodePort)
  try {
    const status = tracker.until(() => tracker.records.get(name)?.statusAt !== undefined, {
      timeoutMs: 30_000,
      description: `status of ${name}`
    })
    // Awaited below; a failure before that must not become an unhandled rejection.
    status.catch(() => undefined)
    let mappedAt: number | undefined
    let polls = 0
    let rtt = 0
    if (polled) {
      const deadline = accepted + 30_000
      while (now() < deadline) {
        const sent = now()
        const entry = await soap.getSpecific(port, "TCP")
        const answered = now()
        polls++
        rtt += answered - sent
        if (entry !== undefined) {
          mappedAt = (sent + answered) / 2
          break
        }
        await sleep(Math.max(0, opts.pollMs - (answered - sent)))
      }
      if (mappedAt === undefined) throw new Error(`${name}: no mapping on ${port} within 30 s`)
    }
    const statusAt = polled ? undefined : await status
    const answer = await wan.get(`http://${publicIp}:${port}/`, 10_000)
    if (!answer.ok) throw new Error(`${name}: no HTTP answer from wan: ${answer.error}`)
    const statusTime = statusAt ?? (await status)
    return {
      polled,
      createMs: accepted - t0,
      mappedMs: mappedAt === undefined ? undefined : mappedAt - accepted,
      statusMs: statusTime - accepted,
      httpMs: answer.at - accepted,
      polls,
      pollRttMs: polls === 0 ? undefined : rtt / polls
    }
  } finally {
    await server.close()
    await retrying("delete", () => c.core.deleteNamespacedService({ namespace: NAMESPACE, name }))
    await tracker.until(() => tracker.records.get(name)?.goneAt !== undefined, { timeoutMs: 30_000, description: `${name} gone` })
    // The mapping goes before the finalizer; make sure the router is clean for the next sample.
    if ((await soap.getSpecific(port, "TCP")) !== undefined) throw new Error(`${name}: mapping ${port} left behind`)
  }
}

async function floorSample(ctx: Context, i: number, nodeIp: string): Promise<FloorSample> {
  const { c, soap } = ctx
  const name = `addr-floor-${i}`
  const port = 8600 + i
  // Not opted in: the controller leaves it alone.
  const created = await retrying("create", () =>
    c.core.createNamespacedService({ namespace: NAMESPACE, body: loadBalancer(name, [{ name: "http", port, protocol: "TCP" }], false) })
  )
  const nodePort = created.spec?.ports?.[0]?.nodePort ?? 0
  try {
    const t0 = now()
    const ip = await soap.getExternalIPAddress()
    const t1 = now()
    await soap.addPortMapping({
      externalPort: port,
      protocol: "TCP",
      internalPort: nodePort,
      internalClient: nodeIp,
      description: `kubernetes/${NAMESPACE}/${name}/http`,
      leaseSeconds: 3600
    })
    const t2 = now()
    await c.core.patchNamespacedServiceStatus({
      namespace: NAMESPACE,
      name,
      body: { status: { loadBalancer: { ingress: [{ ip, ports: [{ port, protocol: "TCP" }] }] } } }
    }, mergePatch)
    const t3 = now()
    return { totalMs: t3 - t0, externalIpMs: t1 - t0, addMs: t2 - t1, patchMs: t3 - t2 }
  } finally {
    await soap.deletePortMapping(port, "TCP")
    await retrying("delete", () => c.core.deleteNamespacedService({ namespace: NAMESPACE, name }))
  }
}
