/**
 * `edge-ccm gateway …` against the lab's real miniupnpd (192.168.77.1:49536, WAN
 * 122.112.219.229), run as the real executable from the node namespace: what it reports must
 * match what miniupnpc's `upnpc -l` sees, and a mapping it makes must carry traffic from the
 * Internet side to the node.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import { edgeCcm } from "./support/controller.ts"
import * as lab from "./support/lab.ts"

const EXTERNAL_PORT = 18080
const INTERNAL_PORT = 31080
const DESCRIPTION = "kubernetes/e2e/gateway-cli/http"

let state: lab.LabState

beforeAll(() => {
  state = lab.loadLab()
})

afterEach(async () => {
  await lab.restoreGateway()
})

afterAll(async () => {
  await lab.upnpcDelete({ externalPort: EXTERNAL_PORT, protocol: "TCP" })
})

describe("edge-ccm gateway on the lab", () => {
  it("discover --json finds the lab's gateway by SSDP, public and selected", async () => {
    const result = await edgeCcm(["gateway", "discover", "--json", "--timeout", "2s"])
    expect(result.code, result.stderr).toBe(0)
    const rows = JSON.parse(result.stdout) as ReadonlyArray<Record<string, unknown>>
    const selected = rows.filter((row) => row["selected"] === true)
    expect(selected).toHaveLength(1)
    expect(selected[0]).toMatchObject({
      location: state.rootDescUrl,
      deviceType: "urn:schemas-upnp-org:device:InternetGatewayDevice:2",
      serviceType: "urn:schemas-upnp-org:service:WANIPConnection:2",
      controlUrl: state.controlUrl,
      status: "Connected",
      externalIp: state.gatewayWanIp,
      externalIpClass: "public"
    })
    expect(state.gatewayWanIp).toBe("122.112.219.229")
    expect(new URL(String(selected[0]!["location"])).hostname).toBe(state.gatewayLanIp)
  })

  it("status reports the connection, the public address and our own address", async () => {
    const result = await edgeCcm(["gateway", "status", "--json", "--gateway-url", state.rootDescUrl])
    expect(result.code, result.stderr).toBe(0)
    expect(JSON.parse(result.stdout)).toMatchObject({
      controlUrl: state.controlUrl,
      status: "Connected",
      connected: true,
      externalIp: "122.112.219.229",
      externalIpClass: "public",
      localAddress: state.nodeIp
    })
  })

  it("map creates what upnpc -l shows, carries traffic from the WAN, list shows it, unmap removes it", async () => {
    const server = await lab.serveNodePort(INTERNAL_PORT)
    try {
      const mapped = await edgeCcm([
        "gateway",
        "map",
        "--json",
        "--external-port",
        String(EXTERNAL_PORT),
        "--internal-port",
        String(INTERNAL_PORT),
        "--protocol",
        "TCP",
        "--description",
        DESCRIPTION,
        "--lease",
        "1h"
      ])
      expect(mapped.code, mapped.stderr).toBe(0)
      expect(JSON.parse(mapped.stdout)).toEqual({
        externalPort: EXTERNAL_PORT,
        protocol: "TCP",
        internalClient: state.nodeIp,
        internalPort: INTERNAL_PORT,
        description: DESCRIPTION,
        leaseDuration: 3600,
        externalIp: "122.112.219.229",
        externalIpClass: "public"
      })

      const upnpc = await lab.upnpcList()
      const seen = upnpc.find((row) => row.externalPort === EXTERNAL_PORT && row.protocol === "TCP")
      expect(seen, upnpc.raw).toMatchObject({
        internalClient: state.nodeIp,
        internalPort: INTERNAL_PORT,
        description: DESCRIPTION,
        remoteHost: ""
      })
      expect(seen!.leaseDuration).toBeGreaterThan(3500)
      expect(seen!.leaseDuration).toBeLessThanOrEqual(3600)

      const curl = await lab.curlFromWan(`http://${state.gatewayWanIp}:${EXTERNAL_PORT}/`)
      expect(curl.ok, curl.error).toBe(true)
      expect(curl.body).toBe(server.body)
      expect(server.requests()).toBeGreaterThan(0)

      const listed = await edgeCcm(["gateway", "list", "--json", "--gateway-url", state.rootDescUrl])
      expect(listed.code, listed.stderr).toBe(0)
      const rows = JSON.parse(listed.stdout) as ReadonlyArray<Record<string, unknown>>
      const row = rows.find((entry) => entry["externalPort"] === EXTERNAL_PORT && entry["protocol"] === "TCP")
      expect(row).toMatchObject({
        internalClient: seen!.internalClient,
        internalPort: seen!.internalPort,
        description: seen!.description,
        enabled: true,
        remoteHost: ""
      })
      expect(Object.keys(row!)).toEqual([
        "externalPort",
        "protocol",
        "internalClient",
        "internalPort",
        "description",
        "leaseDuration",
        "enabled",
        "remoteHost"
      ])

      const refused = await edgeCcm([
        "gateway",
        "map",
        "--gateway-url",
        state.rootDescUrl,
        "--external-port",
        String(EXTERNAL_PORT),
        "--internal-port",
        String(INTERNAL_PORT),
        "--protocol",
        "TCP",
        "--description",
        "kubernetes/e2e/someone-else/http"
      ])
      expect(refused.code).toBe(1)
      expect(refused.stderr.trim().split("\n")).toHaveLength(1)
      expect(refused.stderr).toContain(`TCP ${EXTERNAL_PORT} on ${state.controlUrl} is held by ${state.nodeIp}:${INTERNAL_PORT} "${DESCRIPTION}"`)
      const untouched = await lab.upnpcList()
      expect(untouched.find((entry) => entry.externalPort === EXTERNAL_PORT)?.description).toBe(DESCRIPTION)

      const removed = await edgeCcm([
        "gateway",
        "unmap",
        "--gateway-url",
        state.rootDescUrl,
        "--external-port",
        String(EXTERNAL_PORT),
        "--protocol",
        "TCP"
      ])
      expect(removed.code, removed.stderr).toBe(0)
      const after = await lab.upnpcList()
      expect(after.find((entry) => entry.externalPort === EXTERNAL_PORT), after.raw).toBeUndefined()
    } finally {
      await server.close()
    }
  })

  it("with a private WAN address, map fails and the CLI says double NAT", async () => {
    await lab.setGatewayWanAddress("10.0.0.2/24")
    const result = await edgeCcm([
      "gateway",
      "map",
      "--gateway-url",
      state.rootDescUrl,
      "--external-port",
      String(EXTERNAL_PORT),
      "--internal-port",
      String(INTERNAL_PORT),
      "--protocol",
      "TCP",
      "--description",
      DESCRIPTION
    ])
    expect(result.code).toBe(1)
    expect(result.stderr.trim().split("\n")).toHaveLength(1)
    expect(result.stderr).toMatch(/double NAT/)
    expect(result.stderr).toContain("UPnP 501")
    const upnpc = await lab.upnpcList()
    expect(upnpc.find((entry) => entry.externalPort === EXTERNAL_PORT)).toBeUndefined()
  })
})
