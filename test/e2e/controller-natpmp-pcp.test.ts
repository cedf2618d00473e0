/**
 * The controller over NAT-PMP and PCP on the real lab: miniupnpd with UPnP switched off, so
 * only port control answers, and nothing can list the router's table (the tests read its
 * nftables rules instead).
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import {
  deleteTestServices,
  eventsFor,
  getService,
  ingressIp,
  loadBalancerService,
  startController
} from "./support/controller.ts"
import {
  curlFromWan,
  kubectl,
  type LabProcess,
  nftMappingOn,
  reconfigureGateway,
  rebootGateway,
  restoreGateway,
  serveNodePort,
  waitFor
} from "./support/lab.ts"

const PUBLIC_IP = "122.112.219.229"
let controller: LabProcess

const create = async (name: string, type: string, port: number) => {
  const created = await kubectl(["create", "-f", "-"], {
    input: loadBalancerService(name, {
      ports: [{ name: "http", port }],
      annotations: { "midokura.com/load-balancer-type": type }
    })
  })
  expect(created.code, created.stderr).toBe(0)
  return waitFor(async () => {
    const s = await getService(name)
    return ingressIp(s) === PUBLIC_IP ? s : undefined
  }, { description: `${name} published`, timeoutMs: 20_000 })
}

const removeAll = async (...names: Array<string>) => {
  for (const name of names) await kubectl(["delete", "service", name, "--ignore-not-found", "--wait=false"])
  await waitFor(async () => {
    for (const name of names) if ((await getService(name)) !== undefined) return false
    return true
  }, { description: `${names.join(", ")} gone`, timeoutMs: 20_000 })
}

beforeAll(async () => {
  await reconfigureGateway({ enableUpnp: false, enableNatpmp: true })
  controller = await startController()
})

afterEach(async (context) => {
  if (context.task.result?.state === "fail") console.log(`controller output:\n${controller.output().slice(-5000)}`)
})

afterAll(async () => {
  // The gateway is put back whatever happens: the next test file needs UPnP on.
  try {
    await deleteTestServices()
  } finally {
    await controller?.stop()
    await restoreGateway()
  }
})

describe("NAT-PMP and PCP", () => {
  it("publishes Services of type nat-pmp, pcp and auto, each reachable from the Internet", async () => {
    const services = [
      { name: "via-natpmp", type: "nat-pmp", port: 9101 },
      { name: "via-pcp", type: "pcp", port: 9102 },
      { name: "via-auto", type: "auto", port: 9103 }
    ]
    for (const { name, port, type } of services) {
      const service = await create(name, type, port)
      const nodePort = service.spec.ports[0]!.nodePort!
      expect(await nftMappingOn(port)).toMatchObject({ internalClient: "192.168.77.10", internalPort: nodePort })
      const server = await serveNodePort(nodePort)
      try {
        const answer = await curlFromWan(`http://${PUBLIC_IP}:${port}/`)
        expect(answer.ok, `${name}: ${answer.error}`).toBe(true)
        expect(answer.body).toBe(server.body)
      } finally {
        await server.close()
      }
    }
    // With UPnP off, auto falls back to port control, and says which and why.
    // Events follow the work (one a second while Services are being reconciled).
    // The choice rides on the EnsuredLoadBalancer of the pass that made it.
    const selected = await waitFor(
      async () =>
        (await eventsFor("via-auto")).find((e) =>
          (e.reason === "GatewaySelected" || e.reason === "EnsuredLoadBalancer") && /auto uses/.test(e.note)
        ),
      { description: "an Event on via-auto naming the protocol auto chose" }
    )
    expect(selected.note).toMatch(/auto uses (pcp|nat-pmp)/)
    const pcpRecord = JSON.parse((await getService("via-pcp"))!.metadata.annotations!["midokura.com/mappings"]!)
    expect(pcpRecord[0].nonce).toMatch(/^[0-9a-f]{24}$/)

    await removeAll("via-natpmp", "via-pcp", "via-auto")
    for (const { port } of services) expect(await nftMappingOn(port)).toBeUndefined()
  })

  it("re-maps within 5 s after the router reboots (the epoch starts again)", async () => {
    await create("epoch-a", "nat-pmp", 9201)
    await create("epoch-b", "pcp", 9202)
    await rebootGateway()
    const rebooted = Date.now()
    await waitFor(async () => (await nftMappingOn(9201)) !== undefined && (await nftMappingOn(9202)) !== undefined, {
      description: "both mappings back after the reboot",
      timeoutMs: 5_000,
      intervalMs: 100
    })
    console.log(`NAT-PMP/PCP mappings restored ${Date.now() - rebooted} ms after the router came back`)
    // Restored because the controller saw the epoch start again (the reboot lost every mapping).
    expect(controller.output()).toMatch(/192\.168\.77\.1:5351 rebooted/)
    await removeAll("epoch-a", "epoch-b")
  })

  it("a restarted controller deletes a PCP mapping with the nonce from the record", async () => {
    await create("pcp-restart", "pcp", 9301)
    expect(await nftMappingOn(9301)).toBeDefined()
    await controller.stop({ signal: "SIGKILL" })
    await kubectl(["delete", "service", "pcp-restart", "--wait=false"])
    controller = await startController()
    await waitFor(async () => (await getService("pcp-restart")) === undefined, {
      description: "the Service deleted while the controller was down to be gone",
      timeoutMs: 20_000
    })
    expect(await nftMappingOn(9301)).toBeUndefined()
  })
})
