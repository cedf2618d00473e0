/**
 * IPv6 pinholes under the tenancy rules, on the real lab: two namespaces' IPv6 Services asking
 * for one port (the older keeps its pinhole in miniupnpd's chain, the younger gets the port
 * error and one Event and sends no AddPinhole, counted by the controller's
 * edge_ccm_gateway_requests_total; the older deleted, the younger gets the very pinhole), and a
 * namespace quota (`--max-mappings-per-namespace 2`) that a dual-stack Service's mapping and
 * pinhole fill.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { showOutputOnFailure } from "./support/failureOutput.ts"
import {
  type ControllerUnderTest,
  countDelta,
  eventsFor,
  fullPasses,
  gatewayCalls,
  getService,
  type ServiceView,
  startController
} from "./support/controller.ts"
import {
  curlFromWan,
  kubectl,
  type LabState,
  loadLab,
  nftMappingOn,
  type NodePortServer,
  pinholesOn,
  serveNodePort,
  waitFor
} from "./support/lab.ts"

const PROD = "v6-prod"
const TENANT = "v6-tenant"
const SHOP = "v6-shop"
const NAMESPACES = [PROD, TENANT, SHOP]
const PORT = 8443
const FIRST_PORT = 9443
const SECOND_PORT = 9444

let state: LabState
let controller: ControllerUnderTest
const servers: Array<NodePortServer> = []

const apply = async (manifest: unknown) => {
  const result = await kubectl(["apply", "-f", "-"], { input: JSON.stringify(manifest) })
  expect(result.code, result.stderr).toBe(0)
}

/** A LoadBalancer Service of ours with one TCP port, IPv6 only unless `families` says otherwise. */
const service = (namespace: string, name: string, port: number, families: ReadonlyArray<string> = ["IPv6"]) => ({
  apiVersion: "v1",
  kind: "Service",
  metadata: { name, namespace, annotations: { "midokura.com/load-balancer-type": "upnp-igd" } },
  spec: {
    type: "LoadBalancer",
    ipFamilyPolicy: families.length === 2 ? "PreferDualStack" : "SingleStack",
    ipFamilies: families,
    selector: { app: name },
    ports: [{ name: "https", port, targetPort: 443, protocol: "TCP" }]
  }
})

/** The ports of the Service's IPv6 ingress entry (the node's address). */
const ipv6Ports = (s: ServiceView | undefined) => s?.status?.loadBalancer?.ingress?.find((i) => i.ip === state.nodeIp6)?.ports ?? []
const recordedIds = (s: ServiceView | undefined) =>
  [...(s?.metadata.annotations?.["midokura.com/pinholes"] ?? "").matchAll(/"uniqueId":(\d+)/g)].map((m) => Number(m[1]))
const pinholeCalls = async () => {
  const calls = await gatewayCalls(controller)
  return { AddPinhole: calls["AddPinhole"] ?? 0, DeletePinhole: calls["DeletePinhole"] ?? 0 }
}
/** Waits for `count` more complete full passes (a resync every 5 s): passes over every Service. */
const fullPassesMore = async (count: number) => {
  const complete = async () => (await fullPasses(controller)).complete ?? 0
  const before = await complete()
  await waitFor(async () => (await complete()) >= before + count, { description: `${count} more full passes`, timeoutMs: 8_000 * count })
}

beforeAll(async () => {
  state = loadLab()
  for (const namespace of NAMESPACES) await apply({ apiVersion: "v1", kind: "Namespace", metadata: { name: namespace } })
  controller = await startController({
    flags: [
      "--gateway-url", state.rootDescUrl,
      "--gateway-address6", state.gatewayLanIp6,
      "--pinhole-lease", "60s",
      "--resync-interval", "5s",
      "--max-mappings-per-namespace", "2"
    ]
  })
  servers.push(await serveNodePort(PORT, { ip: state.nodeIp6, body: "the Service on TCP 8443 over IPv6\n" }))
})

afterAll(async () => {
  for (const namespace of NAMESPACES) {
    await kubectl(["delete", "service", "--all", "-n", namespace, "--wait=false"])
    await waitFor(async () => (await kubectl(["get", "services", "-n", namespace, "-o", "name"])).stdout.trim() === "", {
      description: `Services in ${namespace} gone`,
      timeoutMs: 30_000
    })
  }
  await Promise.all(servers.map((server) => server.close()))
  await controller?.stop()
})

showOutputOnFailure({ controller: () => controller })

describe("two namespaces' Services asking for one IPv6 port", () => {
  it("the older keeps its pinhole; the younger gets the port error and one Event and sends no AddPinhole; the older deleted, the younger gets it", async () => {
    await apply(service(PROD, "web", PORT))
    const prod = await waitFor(async () => {
      const s = await getService("web", PROD)
      return ipv6Ports(s)[0] !== undefined && ipv6Ports(s)[0]?.error === undefined && recordedIds(s).length === 1 ? s : undefined
    }, { description: "v6-prod/web's pinhole recorded and published", timeoutMs: 10_000 })
    const [held] = await pinholesOn(PORT)
    expect(held?.internalClient).toBe(state.nodeIp6)
    expect(recordedIds(prod)).toEqual([held!.uniqueId])
    const reached = await curlFromWan(`http://[${state.nodeIp6}]:${PORT}/`)
    expect(reached.ok, reached.error).toBe(true)

    const before = await pinholeCalls()
    await apply(service(TENANT, "x", PORT))
    const tenant = await waitFor(async () => {
      const s = await getService("x", TENANT)
      const conflicts = (await eventsFor("x", TENANT)).filter((e) => e.reason === "PortConflict")
      return ipv6Ports(s)[0]?.error === "midokura.com/PortConflict" && conflicts.length > 0 ? s : undefined
    }, { description: "v6-tenant/x refused with PortConflict", timeoutMs: 10_000 })
    console.log(`v6-tenant/x status: ${JSON.stringify(tenant.status?.loadBalancer)}`)
    expect(recordedIds(tenant)).toEqual([])

    // Three full passes over both Services later: still no pinhole call for it, one Event, one pinhole.
    await fullPassesMore(3)
    const after = await pinholeCalls()
    console.log(`pinhole calls while v6-tenant/x waited: ${JSON.stringify(countDelta(before, after))}`)
    expect(after).toEqual(before)
    const events = (await eventsFor("x", TENANT)).filter((e) => e.reason === "PortConflict")
    console.log(events.map((e) => `${e.type} ${e.reason}: ${e.note}`).join("\n"))
    expect(events.map((e) => [e.type, e.note])).toEqual([
      ["Warning", `TCP ${PORT} (IPv6): Service ${PROD}/web is older and already claims TCP ${PORT} (IPv6)`]
    ])
    expect((await pinholesOn(PORT)).map((p) => p.uniqueId)).toEqual([held!.uniqueId])

    // The holder goes: its cleanup leaves the pinhole (v6-tenant/x asks for it), which v6-tenant/x then opens.
    await kubectl(["delete", "service", "web", "-n", PROD, "--wait=false"])
    const taken = await waitFor(async () => {
      const s = await getService("x", TENANT)
      return (await getService("web", PROD)) === undefined && ipv6Ports(s)[0] !== undefined &&
          ipv6Ports(s)[0]?.error === undefined && recordedIds(s).length === 1
        ? s
        : undefined
    }, { description: "v6-tenant/x's pinhole once v6-prod/web is gone", timeoutMs: 15_000 })
    const handover = countDelta(after, await pinholeCalls())
    console.log(`pinhole calls for the hand-over: ${JSON.stringify(handover)}`)
    expect(handover["DeletePinhole"]).toBeUndefined()
    expect(handover["AddPinhole"]).toBeGreaterThanOrEqual(1)
    const pinholes = await pinholesOn(PORT)
    expect(pinholes.map((p) => p.uniqueId)).toEqual([held!.uniqueId])
    expect(recordedIds(taken)).toEqual([held!.uniqueId])
    const still = await curlFromWan(`http://[${state.nodeIp6}]:${PORT}/`)
    expect(still.ok, still.error).toBe(true)
  })
})

describe("a namespace's quota counts pinholes", () => {
  it("a dual-stack Service's mapping and pinhole fill a quota of 2: the next Service's pinhole waits without a call, and opens when the first goes", async () => {
    await apply(service(SHOP, "first", FIRST_PORT, ["IPv4", "IPv6"]))
    await waitFor(async () => {
      const s = await getService("first", SHOP)
      return recordedIds(s).length === 1 && (await nftMappingOn(FIRST_PORT)) !== undefined ? s : undefined
    }, { description: "v6-shop/first mapped and its pinhole opened", timeoutMs: 10_000 })

    const before = await pinholeCalls()
    await apply(service(SHOP, "second", SECOND_PORT))
    await waitFor(async () => {
      const s = await getService("second", SHOP)
      const over = (await eventsFor("second", SHOP)).filter((e) => e.reason === "QuotaExceeded")
      return ipv6Ports(s)[0]?.error === "midokura.com/QuotaExceeded" && over.length > 0 ? s : undefined
    }, { description: "v6-shop/second refused with QuotaExceeded", timeoutMs: 10_000 })
    await fullPassesMore(2)
    expect(await pinholeCalls()).toEqual(before)
    expect(await pinholesOn(SECOND_PORT)).toEqual([])
    const events = (await eventsFor("second", SHOP)).filter((e) => e.reason === "QuotaExceeded")
    console.log(events.map((e) => `${e.type} ${e.reason}: ${e.note}`).join("\n"))
    expect(events).toHaveLength(1)
    expect(events[0]?.note).toMatch(new RegExp(`^TCP ${SECOND_PORT} \\(IPv6\\): namespace ${SHOP} already holds its quota of 2 router entries`))

    await kubectl(["delete", "service", "first", "-n", SHOP, "--wait=false"])
    await waitFor(async () => {
      const s = await getService("second", SHOP)
      return recordedIds(s).length === 1 && ipv6Ports(s)[0]?.error === undefined && (await pinholesOn(SECOND_PORT)).length === 1
        ? s
        : undefined
    }, { description: "v6-shop/second's pinhole once v6-shop/first is gone", timeoutMs: 15_000 })
    expect(await pinholesOn(FIRST_PORT)).toEqual([])
  })
})
