/**
 * High availability on two nodes: a controller on each, leader election on a Lease. When the
 * leader dies, the other takes over and re-points every mapping to its own node; a graceful
 * stop hands over faster; a secure-mode router makes the new leader wait for expiry.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import {
  type ControllerUnderTest,
  eventsFor,
  getService,
  ingressIp,
  loadBalancerService,
  metricsText,
  sample,
  startController
} from "./support/controller.ts"
import { createDualStackService } from "./support/dualStack.ts"
import {
  curlFromWan,
  ensureNamespace,
  inNamespace,
  kubectl,
  kubectlJson,
  type LabProcess,
  loadLab,
  nftPinholes,
  reconfigureGateway,
  restoreGateway,
  spawnInNamespace,
  upnpcList,
  waitFor
} from "./support/lab.ts"

const NAMESPACE = "edge-ccm-system"
const NODE_1 = "192.168.77.10"
const NODE_2 = "192.168.77.11"
const NODE_2_IP6 = "2001:db8:2::11"
const PORT = 8801

type Controller = ControllerUnderTest
const running = new Set<Controller>()

const start = async (namespace: "lan" | "lan2", flags: ReadonlyArray<string> = []) => {
  const controller = await startController({
    namespace,
    flags: ["--leader-elect", "--leader-elect-namespace", NAMESPACE, ...flags]
  })
  running.add(controller)
  return controller
}

const stop = async (controller: Controller, signal: NodeJS.Signals = "SIGTERM") => {
  await controller.stop({ signal })
  running.delete(controller)
}

const holder = async () =>
  (await kubectlJson<{ spec: { holderIdentity?: string } }>(["get", "lease", "edge-cloud-controller-manager", "-n", NAMESPACE]))
    .spec.holderIdentity ?? ""

/** The stand-in for kube-proxy on node-2, in its own namespace. */
const serveOnNode2 = (port: number): LabProcess =>
  spawnInNamespace("lan2", [
    process.execPath,
    "-e",
    `require("node:http").createServer((q, s) => s.end("node-2 nodePort ${port}\\n")).listen(${port}, "${NODE_2}")`
  ])

const mappingTarget = async () => (await upnpcList()).find((m) => m.externalPort === PORT)?.internalClient

let nodePort = 0
let node2Server: LabProcess

beforeAll(async () => {
  expect(loadLab().nodes.length, "the failover tests need the lab's second node").toBeGreaterThanOrEqual(2)
  await ensureNamespace(NAMESPACE)
})

afterEach(async (context) => {
  if (context.task.result?.state === "fail") {
    for (const controller of running) console.log(`controller ${controller.pid}:\n${controller.output().slice(-5000)}`)
  }
  // Delete while a controller still runs, so the finalizer is honoured and the next test starts clean.
  await kubectl(["delete", "service", "failover", "--ignore-not-found", "--wait=false"])
  await waitFor(async () => (await getService("failover")) === undefined, {
    description: "the failover Service to be gone",
    timeoutMs: 60_000
  })
  for (const controller of running) await stop(controller)
})

const createService = async () => {
  const created = await kubectl(["create", "-f", "-"], {
    input: loadBalancerService("failover", { ports: [{ name: "http", port: PORT }] })
  })
  expect(created.code, created.stderr).toBe(0)
}

afterAll(async () => {
  await node2Server?.stop()
  await restoreGateway()
})

describe("failover", () => {
  it("re-points every mapping to the new leader's node within 20 s of a SIGKILL, and curl works again", async () => {
    const first = await start("lan")
    await waitFor(async () => (await holder()) === "node-1", { description: "node-1 to lead" })
    const second = await start("lan2")
    // Ready as a standby (start() waited for /readyz 200); its gauge over /metrics says it does not lead.
    expect(sample(await metricsText(second), `edge_ccm_leader{lease="${NAMESPACE}/edge-cloud-controller-manager"}`)).toBe(0)
    expect(sample(await metricsText(first), `edge_ccm_leader{lease="${NAMESPACE}/edge-cloud-controller-manager"}`)).toBe(1)

    await createService()
    const service = await waitFor(async () => {
      const s = await getService("failover")
      return ingressIp(s) !== undefined ? s : undefined
    }, { description: "published" })
    nodePort = service.spec.ports[0]!.nodePort!
    expect(await mappingTarget()).toBe(NODE_1)
    node2Server = serveOnNode2(nodePort)

    await stop(first, "SIGKILL")
    const killed = Date.now()
    await waitFor(async () => (await mappingTarget()) === NODE_2, {
      description: `the mapping on ${PORT} to point at node-2`,
      timeoutMs: 20_000,
      intervalMs: 200
    })
    console.log(`failover: mapping re-pointed ${Date.now() - killed} ms after SIGKILL of the leader`)
    expect(await holder()).toBe("node-2")
    const answer = await waitFor(async () => {
      const r = await curlFromWan(`http://122.112.219.229:${PORT}/`)
      return r.ok ? r : undefined
    }, { description: "curl through the new leader's node" })
    expect(answer.body).toBe(`node-2 nodePort ${nodePort}\n`)
    expect((await upnpcList()).filter((m) => m.internalClient === NODE_1)).toEqual([])
  })

  it("hands over faster on a graceful SIGTERM: the Lease is released", async () => {
    const leader = await start("lan2")
    await waitFor(async () => (await holder()) === "node-2", { description: "node-2 to lead" })
    await start("lan")
    await createService()
    await waitFor(async () => (await mappingTarget()) === NODE_2, { description: "mapped to node-2" })

    const stopping = Date.now()
    await stop(leader)
    await waitFor(async () => (await mappingTarget()) === NODE_1, {
      description: "the mapping to point at node-1",
      timeoutMs: 10_000,
      intervalMs: 100
    })
    const handover = Date.now() - stopping
    console.log(`graceful handover: mapping re-pointed ${handover} ms after SIGTERM`)
    // Faster than waiting for a 15 s Lease to expire.
    expect(handover).toBeLessThan(10_000)
  })

  it("dual-stack: the IPv6 ingress moves to the new leader's own address, its pinhole opens, curl over IPv6 works again", async () => {
    const lab = loadLab()
    const [node1Ip6, node2Ip6] = [lab.nodeIp6, NODE_2_IP6]
    const flags = ["--gateway-url", lab.rootDescUrl, "--gateway-address6", lab.gatewayLanIp6, "--pinhole-lease", "30s"]
    const first = await start("lan", flags)
    await waitFor(async () => (await holder()) === "node-1", { description: "node-1 to lead" })
    await start("lan2", flags)
    await createDualStackService("failover", { ports: [{ name: "http", port: PORT }] })
    const ingress6 = async () => (await getService("failover"))?.status?.loadBalancer?.ingress?.find((i) => i.ip?.includes(":"))?.ip
    await waitFor(async () => (await ingress6()) === node1Ip6, { description: "node-1's IPv6 address published" })
    const [old] = (await nftPinholes()).filter((p) => p.port === PORT)
    expect(old?.internalClient).toBe(node1Ip6)
    const node2Ipv6Server = spawnInNamespace("lan2", [
      process.execPath,
      "-e",
      `require("node:http").createServer((q, s) => s.end("node-2 over IPv6\\n")).listen(${PORT}, "${node2Ip6}")`
    ])
    try {
      await stop(first, "SIGKILL")
      const killed = Date.now()
      await waitFor(async () => (await ingress6()) === node2Ip6, {
        description: "node-2's IPv6 address published",
        timeoutMs: 30_000,
        intervalMs: 200
      })
      const moved = Date.now() - killed
      const pinholes = (await nftPinholes()).filter((p) => p.port === PORT)
      const mine = pinholes.find((p) => p.internalClient === node2Ip6)
      expect(mine).toBeDefined()
      const answer = await waitFor(async () => {
        const r = await curlFromWan(`http://[${node2Ip6}]:${PORT}/`)
        return r.ok ? r : undefined
      }, { description: "curl over IPv6 to the new leader's node" })
      expect(answer.body).toBe("node-2 over IPv6\n")
      console.log(`IPv6 failover: node-2's address published ${moved} ms after SIGKILL; pinholes on ${PORT}: ` +
        pinholes.map((p) => `${p.uniqueId} -> ${p.internalClient} ts ${p.expiresAt}`).join(", "))
      // node-1's pinhole cannot be deleted from node-2: miniupnpd lets only the pinhole's own address touch it.
      const stillThere = pinholes.find((p) => p.uniqueId === old!.uniqueId)
      expect(stillThere?.internalClient).toBe(node1Ip6)
      const refused = await inNamespace("lan2", ["upnpc", "-6", "-u", lab.rootDescUrl6, "-D", String(old!.uniqueId)])
      console.log(`DeletePinhole ${old!.uniqueId} from node-2: ${refused.stdout.trim().split("\n").at(-1)}`)
      expect(refused.stdout).toMatch(/606/)
      expect((await nftPinholes()).some((p) => p.uniqueId === old!.uniqueId)).toBe(true)
      // ...so it is left to its 30 s lease, and the record the new leader writes no longer names it.
      await waitFor(async () => !(await nftPinholes()).some((p) => p.uniqueId === old!.uniqueId), {
        description: "node-1's pinhole to expire",
        timeoutMs: 40_000,
        intervalMs: 500
      })
      console.log(`node-1's pinhole expired ${Date.now() - killed} ms after SIGKILL`)
      const record = (await getService("failover"))?.metadata.annotations?.["midokura.com/pinholes"] ?? ""
      expect(record).toContain(node2Ip6)
      expect(record).not.toContain(node1Ip6)
    } finally {
      await node2Ipv6Server.stop()
    }
  })

  it("on a secure-mode router, waits for the old leader's mapping to expire, says so, then takes over", async () => {
    await reconfigureGateway({ secureMode: true })
    // Renewed every 30 s: when the new leader arrives (about 15 s after the kill), the old
    // mapping still has 15-45 s to live. A minute is below the default shortest lease (2m),
    // which the operator may lower.
    const lease = ["--mapping-lease", "60s", "--min-mapping-lease", "1m"]
    const first = await start("lan", lease)
    await waitFor(async () => (await holder()) === "node-1", { description: "node-1 to lead" })
    await start("lan2", lease)
    await createService()
    await waitFor(async () => (await mappingTarget()) === NODE_1, { description: "mapped to node-1" })

    await stop(first, "SIGKILL")
    const event = await waitFor(
      async () => (await eventsFor("failover")).find((e) => e.note.includes("waiting for its lease to expire")),
      { description: "an event saying the new leader waits for the old mapping to expire", timeoutMs: 40_000 }
    )
    expect(event.reason).toBe("PortConflict")
    await waitFor(async () => (await mappingTarget()) === NODE_2, {
      description: "the mapping to point at node-2 once the old one expired",
      timeoutMs: 60_000,
      intervalMs: 250
    })
  })
})
