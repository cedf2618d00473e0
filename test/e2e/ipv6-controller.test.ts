/**
 * Dual-stack Services through the controller on the real lab: the apiserver with an IPv6
 * service range, the controller as a process in the node namespace finding the router's IPv6
 * firewall in its IGD:2 description, miniupnpd opening the pinhole, and curl from the Internet
 * side over IPv4 (the mapping) and over IPv6 (the pinhole, to the node's own address).
 */
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { showOutputOnFailure } from "./support/failureOutput.ts"
import {
  type ControllerUnderTest,
  deleteTestServices,
  eventsFor,
  fullPasses,
  getService,
  startController
} from "./support/controller.ts"
import { createDualStackService, expectDroppedOverIpv6, expectReachedOverIpv4, ingressIps } from "./support/dualStack.ts"
import {
  curlFromWan,
  kernelUptime,
  kubectl,
  type LabState,
  loadLab,
  type NodePortServer,
  pinholesOn,
  rebootGateway,
  reconfigureGateway,
  restoreGateway,
  serveNodePort,
  upnpcList,
  waitFor
} from "./support/lab.ts"

const EXAMPLE = path.resolve(import.meta.dirname, "../../examples/loadbalancers/upnp-igd-dual-stack.yaml")
const NAME = "http-nginx-dual-stack"
const PUBLIC_IP = "122.112.219.229"
const PORT = 8080
const CLOSED_PORT = 8089
const LEASE_SECONDS = 20

let state: LabState
let controller: ControllerUnderTest
const servers: Array<NodePortServer> = []


beforeAll(async () => {
  state = loadLab()
  controller = await startController({
    flags: [
      "--gateway-url", state.rootDescUrl,
      "--gateway-address6", state.gatewayLanIp6,
      "--pinhole-lease", `${LEASE_SECONDS}s`,
      "--resync-interval", "5s"
    ]
  })
  servers.push(await serveNodePort(PORT, { ip: state.nodeIp6, body: "dual-stack over IPv6\n" }))
  servers.push(await serveNodePort(CLOSED_PORT, { ip: state.nodeIp6 }))
})

afterAll(async () => {
  await restoreGateway()
  await deleteTestServices()
  await kubectl(["delete", "deployment", NAME, "--ignore-not-found"])
  await Promise.all(servers.map((server) => server.close()))
  await controller?.stop()
})

showOutputOnFailure({ controller: () => controller })

describe("a dual-stack Service", () => {
  it("lists both addresses, and curl from the Internet reaches it over IPv4 and over IPv6; a port without pinhole is dropped", async () => {
    const created = Date.now()
    const result = await kubectl(["create", "-f", EXAMPLE])
    expect(result.code, result.stderr).toBe(0)
    const service = await waitFor(async () => {
      const s = await getService(NAME)
      return ingressIps(s).length === 2 ? s : undefined
    }, { description: "both ingress addresses", timeoutMs: 10_000, intervalMs: 50 })
    console.log(`both addresses published ${Date.now() - created} ms after kubectl create`)
    expect(ingressIps(service)).toEqual([PUBLIC_IP, state.nodeIp6])
    expect(service.status?.loadBalancer?.ingress?.[1]?.ports).toEqual([{ port: PORT, protocol: "TCP" }])
    const line = (await kubectl(["get", "service", NAME])).stdout
    console.log(line)
    expect(line).toContain(`${PUBLIC_IP},${state.nodeIp6}`)

    const pinholes = await pinholesOn(PORT)
    expect(pinholes).toHaveLength(1)
    expect(pinholes[0]?.internalClient).toBe(state.nodeIp6)
    expect(service.metadata.annotations?.["midokura.com/pinholes"]).toContain(`"uniqueId":${pinholes[0]?.uniqueId}`)

    await expectReachedOverIpv4(service, PUBLIC_IP, PORT)
    const over6 = await curlFromWan(`http://[${state.nodeIp6}]:${PORT}/`)
    expect(over6.ok, over6.error).toBe(true)
    expect(over6.body).toBe("dual-stack over IPv6\n")

    await expectDroppedOverIpv6(state.nodeIp6, CLOSED_PORT, servers[1]!)
    const events = await eventsFor(NAME)
    console.log(events.map((e) => `${e.type} ${e.reason}: ${e.note}`).join("\n"))
    expect(events.map((e) => e.reason)).toContain("EnsuredLoadBalancer")
    expect(events.map((e) => e.reason)).not.toContain("IPv6NotPublished")
  })

  it("renews by UpdatePinhole at half the lease: the rule's expiry moves, the same UniqueID, never a second add", async () => {
    const [first] = await pinholesOn(PORT)
    expect(first).toBeDefined()
    const renewed = await waitFor(async () => {
      const [now] = await pinholesOn(PORT)
      return now !== undefined && now.expiresAt > first!.expiresAt ? now : undefined
    }, { description: "the pinhole's expiry to move", timeoutMs: LEASE_SECONDS * 1000, intervalMs: 200 })
    const uptime = kernelUptime()
    console.log(`before: id ${first!.uniqueId} ts ${first!.expiresAt}; after: id ${renewed.uniqueId} ts ${renewed.expiresAt}; uptime ${uptime}`)
    expect(renewed.uniqueId).toBe(first!.uniqueId)
    // UpdatePinhole sets now + lease; a re-sent AddPinhole would count the uptime twice.
    expect(renewed.expiresAt).toBeLessThanOrEqual(Math.ceil(uptime) + LEASE_SECONDS + 1)
    expect(renewed.expiresAt).toBeGreaterThanOrEqual(Math.floor(uptime) + LEASE_SECONDS - 12)
    expect(await pinholesOn(PORT)).toHaveLength(1)
  })

  it("after a router reboot the pinhole is back within 5 s and carries IPv6 again", async () => {
    await rebootGateway()
    const rebooted = Date.now()
    expect(await pinholesOn(PORT)).toHaveLength(0)
    // Both families are repaired by the same pass: each one's time is taken as it is seen.
    const [back, mappingBack] = await Promise.all([
      waitFor(async () => (await pinholesOn(PORT))[0], {
        description: "the pinhole back after the reboot",
        timeoutMs: 5_000,
        intervalMs: 100
      }).then((pinhole) => ({ ...pinhole, after: Date.now() - rebooted })),
      waitFor(async () => (await upnpcList()).some((m) => m.externalPort === PORT), {
        description: "the IPv4 mapping back after the reboot",
        timeoutMs: 5_000,
        intervalMs: 100
      }).then(() => Date.now() - rebooted)
    ])
    console.log(`pinhole back ${back.after} ms after the reboot (UniqueID ${back.uniqueId}), the IPv4 mapping ${mappingBack} ms`)
    const over6 = await curlFromWan(`http://[${state.nodeIp6}]:${PORT}/`)
    expect(over6.ok, over6.error).toBe(true)
    await waitFor(async () => {
      const s = await getService(NAME)
      return s?.metadata.annotations?.["midokura.com/pinholes"]?.includes(`"uniqueId":${back.uniqueId}`) ? s : undefined
    }, { description: "the new UniqueID recorded", timeoutMs: 5_000 })
  })

  it("on delete the pinhole leaves the gateway's chain, the mapping goes, and the finalizer with the Service", async () => {
    await kubectl(["delete", "service", NAME, "--wait=false"])
    await waitFor(async () => (await getService(NAME)) === undefined, { description: "the Service to be gone", timeoutMs: 10_000 })
    expect(await pinholesOn(PORT)).toEqual([])
    expect((await upnpcList()).find((m) => m.externalPort === PORT)).toBeUndefined()
    const over6 = await curlFromWan(`http://[${state.nodeIp6}]:${PORT}/`, { timeoutMs: 3000 })
    expect(over6.curlExitCode).toBe(28)
  })
})

describe("a router with IPv6 off", () => {
  it("maps IPv4 as ever, says once why IPv6 is not published, and logs no error per pass", async () => {
    await reconfigureGateway({ enableIpv6: false })
    const name = "dual-stack-v4-only-router"
    await createDualStackService(name, { ports: [{ name: "http", port: 8181 }] })
    // The router's address alone: the node's IPv6 address is not published where no pinhole opens.
    await waitFor(async () => {
      const s = await getService(name)
      return ingressIps(s).join(",") === PUBLIC_IP ? s : undefined
    }, { description: "the IPv4 address published, alone", timeoutMs: 10_000 })
    const logStart = controller.output().length
    // Three full passes (a resync every 5 s) later: still one Event, and no error logged.
    const complete = async () => (await fullPasses(controller)).complete ?? 0
    const before = await complete()
    await waitFor(async () => (await complete()) >= before + 3, { description: "three more full passes", timeoutMs: 25_000 })
    const events = (await eventsFor(name)).filter((e) => e.reason === "IPv6NotPublished")
    console.log(events.map((e) => `${e.type} ${e.reason}: ${e.note}`).join("\n"))
    expect(events).toHaveLength(1)
    expect(events[0]?.note).toContain("TCP 8181 (IPv6) not opened")
    const log = controller.output().slice(logStart).split("\n").filter((line) => /"level":"(ERROR|WARN)/i.test(line))
    console.log(`log lines at warn or error level during three full passes: ${log.length}`)
    expect(log).toEqual([])
    expect(await pinholesOn(8181)).toEqual([])
    const answer = await curlFromWan(`http://${PUBLIC_IP}:8181/`, { timeoutMs: 2000 })
    expect(answer.curlExitCode).not.toBe(28) // mapped: refused by the stand-in-less node, not dropped
  })
})
