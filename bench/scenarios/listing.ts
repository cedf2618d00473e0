/**
 * Opt-in (`--only listing`): how many mappings of one protocol the lab's miniupnpd can list in
 * one GetListOfPortMappings before it dies, by the minimal client alone, and that the
 * controller's resync lists larger tables without killing it. It kills the gateway on purpose (and reboots it after), so it is not
 * part of the default run; it is the check to repeat when the router or the listing changes.
 */
import { rebootGateway } from "../../test/e2e/support/lab.ts"
import { countDelta, fullPasses, gatewayCalls } from "../lib/controller.ts"
import type { Context, ScenarioResult } from "../lib/context.ts"
import { gatewayAlive } from "../lib/gateway.ts"
import { loadBalancer, NAMESPACE, pool, retrying } from "../lib/kube.ts"
import { now, type Row, sleep, summarize } from "../lib/stats.ts"

const BASE_PORT = 40000

export async function listing(ctx: Context): Promise<ScenarioResult> {
  // The page size (NewNumberOfPorts) is not the limit: the entries in the requested range are.
  const direct: Array<{ entries: number; page: number; inRange: number; survived: boolean }> = []
  const cases: ReadonlyArray<readonly [entries: number, page: number, inRange: number]> = [
    [120, 1000, 120], [128, 1000, 128], [132, 1000, 132], [136, 1000, 136], [150, 1000, 150], [200, 1000, 200],
    [150, 64, 150], [200, 64, 200],
    [300, 1000, 100]
  ]
  for (const [entries, page, inRange] of cases) {
    await rebootGateway()
    for (let i = 0; i < entries; i++) {
      await ctx.soap.addPortMapping({
        externalPort: BASE_PORT + i,
        protocol: "TCP",
        internalPort: 30000,
        internalClient: "192.168.77.10",
        description: `kubernetes/${NAMESPACE}/listing-${i}/tcp`,
        leaseSeconds: 3600
      })
    }
    const answered = await ctx.soap.listCount("TCP", page, BASE_PORT + inRange - 1).then(() => true, () => false)
    await sleep(200)
    // Alive means still answering, whatever the process table says.
    const answers = await ctx.soap.getExternalIPAddress().then(() => true, () => false)
    direct.push({ entries, page, inRange, survived: answered && answers && gatewayAlive() })
    ctx.log(`  one listing (page of ${page}, ${inRange} of ${entries} TCP mappings in range): miniupnpd ${answered && answers && gatewayAlive() ? "alive" : "DEAD"}`)
  }
  await rebootGateway()

  // Through the controller: Services of one TCP port each, resync every 3 s.
  const viaController: Array<{ services: number; listings: number; survived: boolean }> = []
  // No namespace quota: its default (256 mappings) is below the largest level.
  const { controller } = await ctx.startController("listing", ["--resync-interval", "3s", "--max-mappings-per-namespace", "0"])
  const names: Array<string> = []
  try {
    for (const services of [60, 140, 300]) {
      const fresh: Array<string> = []
      for (let i = names.length; i < services; i++) fresh.push(`listing-${String(i).padStart(3, "0")}`)
      ctx.tracker.forget(fresh)
      await pool(fresh, ctx.opts.clientConcurrency, (name) =>
        retrying("create", () =>
          ctx.c.core.createNamespacedService({
            namespace: NAMESPACE,
            body: loadBalancer(name, [{ name: "tcp", port: BASE_PORT + Number(name.slice(-3)), protocol: "TCP" }], true)
          })
        )
      )
      names.push(...fresh)
      await ctx.tracker.until(() => ctx.tracker.count(names, (s) => s.statusAt !== undefined) === names.length || !gatewayAlive(), {
        timeoutMs: 120_000,
        description: "statuses"
      })
      // Two complete resyncs, counted from the end of one to the end of the third, and what
      // each cost the router.
      const deadline = now() + 30_000
      const passesAfter = async (start: Record<string, number>, count: number) => {
        while (gatewayAlive() && now() < deadline) {
          const passes = await fullPasses(controller).catch(() => start)
          if ((countDelta(start, passes)["complete"] ?? 0) >= count) return passes
          await sleep(50)
        }
        return start
      }
      const synced = await passesAfter(await fullPasses(controller), 1)
      const callsBefore = await gatewayCalls(controller)
      await passesAfter(synced, 2)
      const calls = countDelta(callsBefore, await gatewayCalls(controller).catch(() => callsBefore))
      const listings = Math.round(((calls["GetListOfPortMappings"] ?? 0) + (calls["GetGenericPortMappingEntry"] ?? 0)) / 2)
      viaController.push({ services, listings, survived: gatewayAlive() })
      ctx.log(`  controller resync with ${services} TCP mappings: ${listings} listing calls each; miniupnpd ${gatewayAlive() ? "alive" : "DEAD"}`)
      if (!gatewayAlive()) break
    }
  } finally {
    await ctx.stopController(controller)
    await ctx.recover()
  }
  const section = "listing limit of the lab's miniupnpd (opt-in)"
  const rows: Array<Row> = [
    ...direct.map((d): Row => ({
      section,
      figure: `one GetListOfPortMappings (NewNumberOfPorts ${d.page}), ${d.inRange} of ${d.entries} TCP mappings in its range: router alive after`,
      unit: "count",
      value: summarize([d.survived ? 1 : 0]),
      note: d.survived ? "alive" : "miniupnpd died"
    })),
    ...viaController.map((v): Row => ({
      section,
      figure: `controller resyncs with ${v.services} TCP mappings: router alive after`,
      unit: "count",
      value: summarize([v.survived ? 1 : 0]),
      note: `${v.listings} listing calls per resync; ${v.survived ? "alive" : "miniupnpd died"}`
    }))
  ]
  return { rows, raw: { direct, viaController } }
}
