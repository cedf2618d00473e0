/**
 * Dual-stack Services through PCP alone, on the real lab: miniupnpd with UPnP switched off, so
 * the controller (no --gateway-url, no --gateway-address6) finds the router's IPv6 address from
 * the node's IPv6 default route and opens each IPv6 port by a PCP MAP sent from the node's own
 * address, including port 80, which UPnP refuses. curl from the Internet side proves each
 * pinhole; miniupnpd's nftables chain is the router's truth (the PCP nonce is in its userdata).
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { showOutputOnFailure } from "./support/failureOutput.ts"
import { type ControllerUnderTest, deleteTestServices, eventsFor, getService, startController } from "./support/controller.ts"
import {
  bothAddressesPublished,
  createDualStackService,
  expectDroppedOverIpv6,
  expectReachedOverIpv4,
  ingressIps
} from "./support/dualStack.ts"
import {
  curlFromWan,
  kubectl,
  type LabState,
  loadLab,
  nftMappingOn,
  type NodePortServer,
  pinholesOn,
  reconfigureGateway,
  restoreGateway,
  serveNodePort,
  waitFor
} from "./support/lab.ts"

const NAME = "dual-stack-pcp"
const PUBLIC_IP = "122.112.219.229"
const PORT = 8080
const LOW_PORT = 80
const CLOSED_PORT = 8089
const LEASE_SECONDS = 20

let state: LabState
let controller: ControllerUnderTest
const servers: Array<NodePortServer> = []

/** The nonce miniupnpd keeps in a PCP pinhole's description, in the record's spelling (it swaps each 4-byte word). */
const recordedNonce = (description: string) => {
  const hex = /^PCP MAP ([0-9a-f]{24})$/.exec(description)?.[1]
  return hex?.match(/.{8}/g)?.map((word) => word.match(/../g)!.reverse().join("")).join("")
}

beforeAll(async () => {
  state = loadLab()
  await reconfigureGateway({ enableUpnp: false, enableNatpmp: true })
  controller = await startController({ flags: ["--pinhole-lease", `${LEASE_SECONDS}s`, "--resync-interval", "5s"] })
  servers.push(await serveNodePort(PORT, { ip: state.nodeIp6, body: "dual-stack over PCP\n" }))
  servers.push(await serveNodePort(LOW_PORT, { ip: state.nodeIp6, body: "port 80 over PCP\n" }))
  servers.push(await serveNodePort(CLOSED_PORT, { ip: state.nodeIp6 }))
})

afterAll(async () => {
  await deleteTestServices()
  await restoreGateway()
  await Promise.all(servers.map((server) => server.close()))
  await controller?.stop()
})

showOutputOnFailure({ controller: () => controller })

describe("a dual-stack Service with UPnP off on the router", () => {
  it("lists both addresses; PCP opens 8080 and 80 to the node's address; curl reaches both over IPv6, and IPv4 through the mapping", async () => {
    const created = Date.now()
    await createDualStackService(NAME, {
      ports: [{ name: "http", port: PORT }, { name: "web", port: LOW_PORT }],
      annotations: { "midokura.com/load-balancer-type": "pcp" }
    })
    const service = await bothAddressesPublished(NAME, created, 15_000)
    expect(ingressIps(service)).toEqual([PUBLIC_IP, state.nodeIp6])
    expect(service.status?.loadBalancer?.ingress?.[1]?.ports).toEqual([
      { port: LOW_PORT, protocol: "TCP" },
      { port: PORT, protocol: "TCP" }
    ])

    const record = service.metadata.annotations?.["midokura.com/pinholes"] ?? ""
    console.log(`pinhole record: ${record}`)
    for (const port of [PORT, LOW_PORT]) {
      const pinholes = await pinholesOn(port)
      expect(pinholes).toHaveLength(1)
      expect(pinholes[0]?.internalClient).toBe(state.nodeIp6)
      // Opened by PCP under the nonce the record holds, through the route named by the default route's gateway.
      const nonce = recordedNonce(pinholes[0]?.description ?? "")
      expect(nonce).toBeDefined()
      expect(record).toContain(`"nonce":"${nonce}"`)
    }
    expect(record).toContain(`"router":"pcp://[${state.gatewayLanIp6}]:5351"`)
    expect(record).not.toContain("uniqueId")

    expect(await nftMappingOn(PORT)).toBeDefined()
    await expectReachedOverIpv4(service, PUBLIC_IP, PORT)
    const over6 = await curlFromWan(`http://[${state.nodeIp6}]:${PORT}/`)
    expect(over6.ok, over6.error).toBe(true)
    expect(over6.body).toBe("dual-stack over PCP\n")
    const low = await curlFromWan(`http://[${state.nodeIp6}]:${LOW_PORT}/`)
    expect(low.ok, low.error).toBe(true)
    expect(low.body).toBe("port 80 over PCP\n")

    await expectDroppedOverIpv6(state.nodeIp6, CLOSED_PORT, servers[2]!)
    const reasons = (await eventsFor(NAME)).map((e) => e.reason)
    expect(reasons).toContain("EnsuredLoadBalancer")
    expect(reasons).not.toContain("IPv6NotPublished")
  })

  it("renews at half the lease by replacing the pinhole under a fresh nonce, recorded, so it stays deletable", async () => {
    const [first] = await pinholesOn(PORT)
    const firstNonce = recordedNonce(first?.description ?? "")
    expect(firstNonce).toBeDefined()
    const renewed = await waitFor(async () => {
      const [now] = await pinholesOn(PORT)
      const nonce = recordedNonce(now?.description ?? "")
      return nonce !== undefined && nonce !== firstNonce ? { pinhole: now!, nonce } : undefined
    }, { description: "the pinhole under a new nonce", timeoutMs: LEASE_SECONDS * 1000, intervalMs: 200 })
    console.log(`before: nonce ${firstNonce} ts ${first!.expiresAt}; after: nonce ${renewed.nonce} ts ${renewed.pinhole.expiresAt}`)
    expect(renewed.pinhole.expiresAt).toBeGreaterThanOrEqual(first!.expiresAt)
    await waitFor(async () => {
      const s = await getService(NAME)
      return s?.metadata.annotations?.["midokura.com/pinholes"]?.includes(`"nonce":"${renewed.nonce}"`) ? s : undefined
    }, { description: "the new nonce recorded", timeoutMs: 5_000 })
    expect(await pinholesOn(PORT)).toHaveLength(1)
    const over6 = await curlFromWan(`http://[${state.nodeIp6}]:${PORT}/`)
    expect(over6.ok, over6.error).toBe(true)
  })

  it("on delete both pinholes leave the gateway's chain, the mapping goes, and the finalizer with the Service", async () => {
    await kubectl(["delete", "service", NAME, "--wait=false"])
    await waitFor(async () => (await getService(NAME)) === undefined, { description: "the Service to be gone", timeoutMs: 15_000 })
    expect(await pinholesOn(PORT)).toEqual([])
    expect(await pinholesOn(LOW_PORT)).toEqual([])
    expect(await nftMappingOn(PORT)).toBeUndefined()
    const over6 = await curlFromWan(`http://[${state.nodeIp6}]:${PORT}/`, { timeoutMs: 3000 })
    expect(over6.curlExitCode).toBe(28)
  })
})
