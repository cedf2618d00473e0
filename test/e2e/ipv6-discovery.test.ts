/**
 * The router's IPv6 firewall found without a flag, on the real lab: the controller runs with no
 * --gateway-url, --firewall-url or --gateway-address6, finds the IPv4 gateway by SSDP on
 * 239.255.255.250 as ever, and the IGD:2 description by an M-SEARCH to ff02::c from the
 * interface of the node's IPv6 default route; the pinhole is then asked of the control URL on
 * the router's IPv6 address. Then again with the node's IPv6 default route via the router's
 * link-local address, as router advertisements set it up on a home LAN.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { showOutputOnFailure } from "./support/failureOutput.ts"
import { type ControllerUnderTest, deleteTestServices, getService, startController } from "./support/controller.ts"
import { bothAddressesPublished, createDualStackService, ingressIps } from "./support/dualStack.ts"
import {
  curlFromWan,
  inNamespace,
  kubectl,
  type LabState,
  loadLab,
  nftPinholes,
  type NodePortServer,
  serveNodePort,
  waitFor
} from "./support/lab.ts"

const NAME = "dual-stack-discovered"
const PUBLIC_IP = "122.112.219.229"
const PORT = 8282
const DROPPED_PORT = 8283
const RA_NAME = "dual-stack-link-local-route"
const RA_PORT = 8284
const RA_LOW_NAME = "dual-stack-link-local-https"
const RA_LOW_PORT = 443

let state: LabState
let controller: ControllerUnderTest
let server: NodePortServer

/** Points the node's IPv6 default route at `via` on its LAN interface. */
const setDefaultRoute6 = async (via: string) => {
  const r = await inNamespace("lan", ["ip", "-6", "route", "replace", "default", "via", via, "dev", "eth0"])
  if (r.code !== 0) throw new Error(`ip -6 route replace default via ${via}: ${r.stderr.trim()}`)
}

/** The router's link-local address on its LAN bridge: where router advertisements come from. */
const routerLinkLocal = async (): Promise<string> => {
  const r = await inNamespace("gw", ["ip", "-6", "-o", "addr", "show", "dev", "br0", "scope", "link"])
  const found = /inet6 (fe80:[0-9a-f:]+)\//.exec(r.stdout)?.[1]
  if (found === undefined) throw new Error(`no link-local address on the router's br0: ${r.stdout}${r.stderr}`)
  return found
}

beforeAll(async () => {
  state = loadLab()
  controller = await startController({ flags: ["--pinhole-protocol", "upnp-igd"] })
  server = await serveNodePort(PORT, { ip: state.nodeIp6, body: "found without flags\n" })
})

afterAll(async () => {
  await deleteTestServices()
  await server?.close()
  await controller?.stop()
})

showOutputOnFailure({ controller: () => controller })

describe("no router flags at all", () => {
  it("the IPv6 firewall is found by SSDP on ff02::c and called on the router's IPv6 address; curl over IPv6 reaches the node", async () => {
    const created = Date.now()
    await createDualStackService(NAME, { ports: [{ name: "http", port: PORT }, { name: "extra", port: DROPPED_PORT }] })
    const service = await bothAddressesPublished(NAME, created, 20_000)
    expect(ingressIps(service)).toEqual([PUBLIC_IP, state.nodeIp6])
    const record = service.metadata.annotations?.["midokura.com/pinholes"] ?? ""
    console.log(`pinhole record: ${record}`)
    expect(record).toContain(`"router":"${state.firewallControlUrl}"`)
    expect((await nftPinholes()).filter((p) => p.port === DROPPED_PORT)).toHaveLength(1)
    const [pinhole] = (await nftPinholes()).filter((p) => p.port === PORT)
    expect(pinhole?.internalClient).toBe(state.nodeIp6)
    expect(record).toContain(`"uniqueId":${pinhole?.uniqueId}`)
    // The router's boot time, read over IPv6 too: the proof that lets the ID be renewed and deleted.
    expect(record).toMatch(/"bootedAt":\d+/)
    const over6 = await curlFromWan(`http://[${state.nodeIp6}]:${PORT}/`)
    expect(over6.ok, over6.error).toBe(true)
    expect(over6.body).toBe("found without flags\n")
  })

  it("a port removed while the controller was down: its recorded pinhole is deleted by the first pass after the restart", async () => {
    await controller.stop()
    const patched = await kubectl(["patch", "service", NAME, "--type", "json", "-p", '[{"op":"remove","path":"/spec/ports/1"}]'])
    expect(patched.code, patched.stderr).toBe(0)
    expect((await nftPinholes()).filter((p) => p.port === DROPPED_PORT)).toHaveLength(1)
    const restarted = Date.now()
    controller = await startController({ flags: ["--pinhole-protocol", "upnp-igd"] })
    await waitFor(async () => (await nftPinholes()).every((p) => p.port !== DROPPED_PORT), {
      description: `the pinhole on ${DROPPED_PORT} deleted`,
      timeoutMs: 20_000,
      intervalMs: 200
    })
    console.log(`the dropped port's pinhole deleted ${Date.now() - restarted} ms after the controller was started again`)
    const record = await waitFor(async () => {
      const text = (await getService(NAME))?.metadata.annotations?.["midokura.com/pinholes"]
      return text !== undefined && !text.includes(`"port":${DROPPED_PORT}`) ? text : undefined
    }, { description: "the record without the dropped port", timeoutMs: 5_000 })
    expect(record).toContain(`"port":${PORT}`)
    expect((await nftPinholes()).filter((p) => p.port === PORT)).toHaveLength(1)
  })
})

describe("a default route via the router's link-local address, as router advertisements give", () => {
  /**
   * With the node's default route via the router's link-local address, a controller started
   * with `flags` publishes a dual-stack Service on `port`: the pinhole opens for the node's
   * global address through the route `expectedRouter(linkLocal)` names, and curl over IPv6
   * from the WAN reaches the node. The route is put back whatever happens.
   */
  const publishedThroughLinkLocalRoute = async (
    name: string,
    port: number,
    flags: ReadonlyArray<string>,
    expectedRouter: (linkLocal: string) => string
  ) => {
    const linkLocal = await routerLinkLocal()
    await controller.stop()
    await setDefaultRoute6(linkLocal)
    const body = `${name} through a link-local route\n`
    const served = await serveNodePort(port, { ip: state.nodeIp6, body })
    try {
      controller = await startController({ flags: [...flags] })
      const created = Date.now()
      await createDualStackService(name, { ports: [{ name: "web", port }] })
      const service = await bothAddressesPublished(name, created, 20_000)
      expect(ingressIps(service)).toEqual([PUBLIC_IP, state.nodeIp6])
      const record = service.metadata.annotations?.["midokura.com/pinholes"] ?? ""
      console.log(`default route via ${linkLocal}; pinhole record: ${record}`)
      expect(record).toContain(`"router":"${expectedRouter(linkLocal)}"`)
      const [pinhole] = (await nftPinholes()).filter((p) => p.port === port)
      expect(pinhole?.internalClient).toBe(state.nodeIp6)
      const over6 = await curlFromWan(`http://[${state.nodeIp6}]:${port}/`)
      expect(over6.ok, over6.error).toBe(true)
      expect(over6.body).toBe(body)
    } finally {
      await served.close()
      await setDefaultRoute6(state.gatewayLanIp6)
    }
  }

  it("the router's own SSDP reply names its global address: found and used with no flag, under --pinhole-protocol auto", () =>
    publishedThroughLinkLocalRoute(RA_NAME, RA_PORT, [], () => state.firewallControlUrl))

  // PCP alone: the node's address is then found toward the link-local router too.
  it("--pinhole-protocol pcp: the pinhole is asked of the router's link-local address, from the node's global one", () =>
    publishedThroughLinkLocalRoute(RA_LOW_NAME, RA_LOW_PORT, ["--pinhole-protocol", "pcp"], (linkLocal) => `pcp://[${linkLocal}%eth0]:5351`))
})
