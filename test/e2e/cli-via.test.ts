/**
 * `edge-ccm gateway … --via nat-pmp|pcp` as the real executable from the node namespace,
 * against the lab's miniupnpd 2.3.1 with UPnP switched off (NAT-PMP/PCP only), the gateway
 * found by the default route: the status it reports, mappings it makes that the gateway's
 * nftables show and that carry a curl from the Internet side, and the deletions (by internal
 * port, and for PCP with the nonce `map` printed) that remove them.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import { assertOneLine } from "../cli/harness.ts"
import { PORT_CONTROL_STATUS_KEYS } from "../support/cliKeys.ts"
import { edgeCcm as run } from "./support/controller.ts"
import * as lab from "./support/lab.ts"

/** The CLI can wait out a silent gateway's retries. */
const edgeCcm = (args: ReadonlyArray<string>) => run(args, { timeoutMs: 60_000 })

const mapArgs = (via: string, externalPort: number, internalPort: number) =>
  ["gateway", "map", "--via", via, "--external-port", String(externalPort), "--internal-port", String(internalPort), "--protocol", "TCP"]

const unmapArgs = (via: string, externalPort: number, internalPort: number) =>
  ["gateway", "unmap", "--via", via, "--external-port", String(externalPort), "--protocol", "TCP", "--internal-port", String(internalPort)]

let state: lab.LabState
const servers: Array<lab.NodePortServer> = []

beforeAll(async () => {
  state = lab.loadLab()
  await lab.reconfigureGateway({ enableUpnp: false, enableNatpmp: true })
})

afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()))
})

afterAll(async () => {
  await lab.restoreGateway()
})

describe("edge-ccm gateway --via on miniupnpd 2.3.1 (UPnP off)", () => {
  for (const via of ["nat-pmp", "pcp"] as const) {
    it(`status --via ${via} --json: the default route's gateway, its epoch, 122.112.219.229 public`, async () => {
      const result = await edgeCcm(["gateway", "status", "--via", via, "--json"])
      expect(result.code, result.stderr).toBe(0)
      const report = JSON.parse(result.stdout) as Record<string, unknown>
      expect(Object.keys(report)).toEqual(PORT_CONTROL_STATUS_KEYS)
      expect(report).toMatchObject({
        selection: `${state.gatewayLanIp}, the node's default gateway`,
        router: `${state.gatewayLanIp}:5351`,
        protocol: via,
        connected: true,
        externalIp: "122.112.219.229",
        externalIpClass: "public",
        localAddress: state.nodeIp
      })
      expect(report["uptimeSeconds"]).toBeTypeOf("number")
    })
  }

  it("map --via pcp prints the nonce; the mapping is in nftables and carries a curl; unmap with the nonce removes it", async () => {
    const externalPort = 18180
    const internalPort = 31180
    servers.push(await lab.serveNodePort(internalPort))
    const mapped = await edgeCcm([...mapArgs("pcp", externalPort, internalPort), "--lease", "5m", "--json"])
    expect(mapped.code, mapped.stderr).toBe(0)
    const granted = JSON.parse(mapped.stdout) as Record<string, unknown>
    expect(granted).toMatchObject({
      externalPort,
      protocol: "TCP",
      internalClient: state.nodeIp,
      internalPort,
      description: null,
      leaseDuration: 300,
      externalIp: "122.112.219.229",
      externalIpClass: "public"
    })
    const nonce = String(granted["nonce"])
    expect(nonce).toMatch(/^[0-9a-f]{24}$/)
    expect(await lab.nftMappingOn(externalPort, "TCP")).toEqual({ protocol: "TCP", externalPort, internalClient: state.nodeIp, internalPort })
    expect((await lab.curlReaches(externalPort, internalPort)).status).toBe(200)

    const missingNonce = await edgeCcm([...unmapArgs("pcp", externalPort, internalPort)])
    expect(missingNonce.code).toBe(2)
    assertOneLine(missingNonce.stderr.trim())
    expect(missingNonce.stderr).toContain("--nonce is required with --via pcp")
    expect(await lab.nftMappingOn(externalPort, "TCP")).toBeDefined()

    // miniupnpd refuses another nonce (NOT_AUTHORIZED) and keeps the mapping.
    const stranger = await edgeCcm([...unmapArgs("pcp", externalPort, internalPort), "--nonce", "00112233445566778899aabb"])
    expect(stranger.code).toBe(1)
    assertOneLine(stranger.stderr.trim())
    expect(stranger.stderr).toContain(`TCP ${externalPort} on ${state.gatewayLanIp}:5351 is held by another PCP client`)
    expect(stranger.stderr).toContain("NOT_AUTHORIZED")
    expect(await lab.nftMappingOn(externalPort, "TCP")).toBeDefined()

    const removed = await edgeCcm([...unmapArgs("pcp", externalPort, internalPort), "--nonce", nonce])
    expect(removed.code, removed.stderr).toBe(0)
    expect(removed.stdout.trim()).toBe(`removed TCP ${externalPort}`)
    expect(await lab.nftMappingOn(externalPort, "TCP")).toBeUndefined()
    expect((await lab.curlFromWan(`http://${state.gatewayWanIp}:${externalPort}/`, { timeoutMs: 1500 })).ok).toBe(false)
  })

  it("map --via nat-pmp: in nftables, carries a curl; unmap --via nat-pmp --internal-port removes it", async () => {
    const externalPort = 18181
    const internalPort = 31181
    servers.push(await lab.serveNodePort(internalPort))
    const mapped = await edgeCcm([...mapArgs("nat-pmp", externalPort, internalPort), "--lease", "5m"])
    expect(mapped.code, mapped.stderr).toBe(0)
    expect(mapped.stdout.trim().split("\n")).toEqual([
      `mapped TCP 122.112.219.229:${externalPort} -> ${state.nodeIp}:${internalPort} over NAT-PMP (lease 300 s)`,
      `remove with: edge-ccm gateway unmap --via nat-pmp --external-port ${externalPort} --protocol TCP --internal-port ${internalPort}`
    ])
    expect(await lab.nftMappingOn(externalPort, "TCP")).toEqual({ protocol: "TCP", externalPort, internalClient: state.nodeIp, internalPort })
    expect((await lab.curlReaches(externalPort, internalPort)).status).toBe(200)

    const removed = await edgeCcm([...unmapArgs("nat-pmp", externalPort, internalPort), "--json"])
    expect(removed.code, removed.stderr).toBe(0)
    expect(JSON.parse(removed.stdout)).toEqual({ externalPort, protocol: "TCP", internalPort, removed: true })
    expect(await lab.nftMappingOn(externalPort, "TCP")).toBeUndefined()
    expect((await lab.curlFromWan(`http://${state.gatewayWanIp}:${externalPort}/`, { timeoutMs: 1500 })).ok).toBe(false)
  })

  it("with UPnP off, the default --via upnp-igd finds nothing and points at pcp and nat-pmp", async () => {
    const result = await edgeCcm(["gateway", "status", "--timeout", "1s"])
    expect(result.code).toBe(1)
    assertOneLine(result.stderr.trim())
    expect(result.stderr).toContain("edge-ccm gateway status: no usable Internet gateway found")
    expect(result.stderr).toContain("may still answer --via pcp or --via nat-pmp")
  })

  it("list --via nat-pmp says in one line that NAT-PMP cannot list the table, exit 1", async () => {
    const result = await edgeCcm(["gateway", "list", "--via", "nat-pmp"])
    expect(result.code).toBe(1)
    expect(result.stdout).toBe("")
    assertOneLine(result.stderr.trim())
    expect(result.stderr).toContain("edge-ccm gateway list: NAT-PMP cannot list a router's mapping table")
  })
})
