/**
 * A table larger than miniupnpd 2.3.1 can list in one GetListOfPortMappings range: it gathers a
 * range's ports into an array of 128 and dies when a range holds more of one protocol. The
 * controller holds 200 TCP mappings through several resyncs, each listing the whole table in a
 * few dozen calls; the router stays up, and a mapping removed behind the controller's back is
 * found missing and put back.
 */
import { afterAll, beforeAll, expect, it } from "vitest"
import {
  countDelta,
  deleteTestServices,
  fullPasses,
  gatewayCalls,
  getService,
  loadBalancerService,
  type ControllerUnderTest,
  type ServiceView,
  startController
} from "./support/controller.ts"
import { gatewayAlive, kubectl, kubectlJson, loadLab, nftMappings, upnpcDelete, waitFor } from "./support/lab.ts"

const SERVICES = 100
const FIRST_PORT = 42000
// Two TCP ports per Service: 200 mappings, all in one stretch of ports.
const portsOf = (index: number) => [FIRST_PORT + 2 * index, FIRST_PORT + 2 * index + 1]
const MAPPINGS = 2 * SERVICES

let controller: ControllerUnderTest

const ourRules = async () => {
  const nodeIp = loadLab().nodeIp
  return (await nftMappings()).filter((m) => m.internalClient === nodeIp && m.externalPort >= FIRST_PORT && m.externalPort < FIRST_PORT + MAPPINGS)
}

beforeAll(async () => {
  controller = await startController({ flags: ["--resync-interval", "2s"] })
})

afterAll(async () => {
  await deleteTestServices()
  await controller?.stop()
})

it(`holds ${MAPPINGS} TCP mappings through resyncs without killing miniupnpd`, async () => {
  const items = Array.from({ length: SERVICES }, (_, index) =>
    JSON.parse(loadBalancerService(`table-${String(index).padStart(3, "0")}`, {
      ports: portsOf(index).map((port, n) => ({ name: `p${n}`, port }))
    })) as unknown
  )
  const created = await kubectl(["create", "-f", "-"], { input: JSON.stringify({ apiVersion: "v1", kind: "List", items }) })
  expect(created.code, created.stderr).toBe(0)

  await waitFor(async () => {
    if (!gatewayAlive()) throw new Error("miniupnpd died while the Services were being mapped")
    const list = await kubectlJson<{ items: Array<ServiceView> }>(["get", "services", "-n", "default"])
    return list.items.filter((s) => s.metadata.name.startsWith("table-") && s.status?.loadBalancer?.ingress?.[0]?.ip).length === SERVICES
  }, { description: `all ${SERVICES} Services published`, timeoutMs: 90_000 })
  expect(await ourRules()).toHaveLength(MAPPINGS)

  // Complete resyncs, each listing a table that one request would have died on. The first may
  // read it entry by entry (the listing before it saw fewer mappings); from then on a count and
  // the 128-port ranges that held mappings, plus the gaps between them.
  const completeAfter = async (start: Record<string, number>, count: number) => {
    let passes = start
    await waitFor(async () => {
      if (!gatewayAlive()) throw new Error("miniupnpd died during a resync")
      passes = await fullPasses(controller)
      return (countDelta(start, passes)["complete"] ?? 0) >= count
    }, { description: `${count} complete resyncs of the whole table`, timeoutMs: 30_000 })
    return passes
  }
  const settled = await completeAfter(await fullPasses(controller), 2)
  const callsBefore = await gatewayCalls(controller)
  await completeAfter(settled, 2)
  const calls = countDelta(callsBefore, await gatewayCalls(controller))
  const perResync = ((calls["GetGenericPortMappingEntry"] ?? 0) + (calls["GetListOfPortMappings"] ?? 0)) / 2
  console.log(`listing calls per resync with ${MAPPINGS} mappings: ${perResync} (${JSON.stringify(calls)})`)
  expect(calls["GetListOfPortMappings"]).toBeGreaterThan(0)
  expect(perResync).toBeLessThan(30)
  expect(gatewayAlive()).toBe(true)

  // The listing sees the table: a mapping removed behind the controller's back comes back.
  const removed = portsOf(42)[1]!
  const deletion = await upnpcDelete({ externalPort: removed })
  expect(deletion.ok, deletion.raw).toBe(true)
  await waitFor(async () => (await ourRules()).some((m) => m.externalPort === removed), {
    description: `port ${removed} mapped again by a resync`,
    timeoutMs: 15_000
  })
  expect(await ourRules()).toHaveLength(MAPPINGS)
  expect(gatewayAlive()).toBe(true)
  expect(await getService("table-042")).toBeDefined()

  // All deleted at once: their ports are read in shared range listings before each delete,
  // and not one mapping may be left behind.
  await deleteTestServices()
  await waitFor(async () => (await ourRules()).length === 0, { description: "every mapping deleted", timeoutMs: 30_000 })
  expect(gatewayAlive()).toBe(true)
})
