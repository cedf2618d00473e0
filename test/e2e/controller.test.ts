/**
 * The service controller on the real lab: miniupnpd as the router, a real kube-apiserver, the
 * controller as a process in the node namespace, and curl from the Internet side.
 */
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { showOutputOnFailure } from "./support/failureOutput.ts"
import {
  deleteTestServices,
  eventsFor,
  getService,
  ingressIp,
  loadBalancerService,
  portError,
  type ServiceView,
  startController
} from "./support/controller.ts"
import {
  curlFromWan,
  kubectl,
  type LabProcess,
  loadLab,
  rebootGateway,
  restoreGateway,
  serveNodePort,
  setGatewayWanAddress,
  upnpcAdd,
  upnpcDelete,
  upnpcList,
  waitFor
} from "./support/lab.ts"

const SEED = path.resolve(import.meta.dirname, "../../examples/loadbalancers/upnp-igd-http-nginx.yaml")
const PUBLIC_IP = "122.112.219.229"
const NODE_IP = "192.168.77.10"

let controller: LabProcess

const create = async (manifest: string) => {
  const result = await kubectl(["create", "-f", "-"], { input: manifest })
  expect(result.code, result.stderr).toBe(0)
}

const remove = async (...names: Array<string>) => {
  for (const name of names) await kubectl(["delete", "service", name, "--ignore-not-found", "--wait=false"])
  await waitFor(async () => {
    for (const name of names) if ((await getService(name)) !== undefined) return false
    return true
  }, { description: `services ${names.join(", ")} gone`, timeoutMs: 15_000 })
}

const nodePortOf = (service: ServiceView | undefined, port: number) =>
  service?.spec.ports.find((p) => p.port === port)?.nodePort

const mappingOn = async (port: number, protocol = "TCP") =>
  (await upnpcList()).find((m) => m.externalPort === port && m.protocol === protocol)

beforeAll(async () => {
  controller = await startController()
})

afterAll(async () => {
  await restoreGateway()
  await deleteTestServices()
  await controller?.stop()
})

showOutputOnFailure({ controller: () => controller })

describe("the seed's walkthrough", () => {
  it("publishes the router's address, maps 8080 to the nodePort, and carries curl from the Internet", async () => {
    const created = Date.now()
    const result = await kubectl(["create", "-f", SEED])
    expect(result.code, result.stderr).toBe(0)

    const service = await waitFor(async () => {
      const s = await getService("http-nginx-service")
      return ingressIp(s) === PUBLIC_IP ? s : undefined
    }, { description: "EXTERNAL-IP 122.112.219.229", timeoutMs: 5_000, intervalMs: 50 })
    console.log(`EXTERNAL-IP published ${Date.now() - created} ms after kubectl create`)

    const nodePort = nodePortOf(service, 8080)!
    expect(nodePort).toBeGreaterThanOrEqual(30000)
    const line = (await kubectl(["get", "service", "http-nginx-service"])).stdout
    expect(line).toContain(PUBLIC_IP)
    expect(line).toContain(`8080:${nodePort}/TCP`)

    const listing = await upnpcList()
    expect(listing.raw).toMatch(
      new RegExp(`TCP\\s+8080->${NODE_IP.replace(/\./g, "\\.")}:${nodePort}\\s+'kubernetes/default/http-nginx-service/http'`)
    )
    expect(service.metadata.finalizers).toContain("midokura.com/load-balancer-cleanup")
    expect(service.metadata.annotations?.["midokura.com/mappings"]).toContain("kubernetes/default/http-nginx-service/http")

    const server = await serveNodePort(nodePort)
    try {
      const answer = await curlFromWan(`http://${PUBLIC_IP}:8080/`)
      expect(answer.ok, answer.error).toBe(true)
      expect(answer.body).toBe(server.body)
    } finally {
      await server.close()
    }
    const reasons = (await eventsFor("http-nginx-service")).map((e) => e.reason)
    expect(reasons).toContain("EnsuredLoadBalancer")
  })

  it("on delete removes the mapping and the finalizer, and the Service goes", async () => {
    await kubectl(["delete", "service", "http-nginx-service", "--wait=false"])
    await waitFor(async () => (await getService("http-nginx-service")) === undefined, {
      description: "the Service to be gone",
      timeoutMs: 10_000
    })
    expect(await mappingOn(8080)).toBeUndefined()
    await kubectl(["delete", "deployment", "http-nginx-deployment", "--ignore-not-found"])
  })
})

describe("selection", () => {
  it("leaves Services without the annotation, or of another class, untouched and silent", async () => {
    await create(loadBalancerService("plain-lb", { ports: [{ name: "http", port: 8181 }], annotations: {} }))
    await create(
      loadBalancerService("other-class", { ports: [{ name: "http", port: 8182 }], loadBalancerClass: "example.com/other" })
    )
    // A Service of ours created after them: once it is handled, the others have been seen too.
    await create(loadBalancerService("control", { ports: [{ name: "http", port: 8183 }] }))
    await waitFor(async () => ingressIp(await getService("control")) === PUBLIC_IP, {
      description: "the control Service to be published"
    })
    for (const name of ["plain-lb", "other-class"]) {
      const service = await getService(name)
      expect(service?.metadata.finalizers ?? []).toEqual([])
      expect(service?.status?.loadBalancer?.ingress ?? []).toEqual([])
      expect(await eventsFor(name)).toEqual([])
    }
    const ports = (await upnpcList()).map((m) => m.externalPort)
    expect(ports).not.toContain(8181)
    expect(ports).not.toContain(8182)
    await remove("plain-lb", "other-class", "control")
  })
})

describe("ports", () => {
  it("maps every port of a TCP+UDP Service", async () => {
    await create(loadBalancerService("dns", {
      ports: [{ name: "dns-tcp", port: 5353, protocol: "TCP" }, { name: "dns-udp", port: 5353, protocol: "UDP" }]
    }))
    const service = await waitFor(async () => {
      const s = await getService("dns")
      return s?.status?.loadBalancer?.ingress?.[0]?.ports?.length === 2 ? s : undefined
    }, { description: "both ports in the status" })
    const udp = await waitFor(() => mappingOn(5353, "UDP"), { description: "the UDP mapping on the router" })
    expect(udp.description).toBe("kubernetes/default/dns/dns-udp")
    expect(udp.internalPort).toBe(service.spec.ports.find((p) => p.protocol === "UDP")!.nodePort)
    expect(await mappingOn(5353, "TCP")).toMatchObject({ description: "kubernetes/default/dns/dns-tcp" })
    await remove("dns")
    expect(await mappingOn(5353, "UDP")).toBeUndefined()
  })
})

describe("repair", () => {
  it("restores every mapping within 5 s of a router reboot, with the default 30 s resync", async () => {
    await create(loadBalancerService("reboot-a", { ports: [{ name: "http", port: 8201 }] }))
    await create(loadBalancerService("reboot-b", { ports: [{ name: "http", port: 8202 }] }))
    await waitFor(async () => (await mappingOn(8201)) !== undefined && (await mappingOn(8202)) !== undefined, {
      description: "both mapped"
    })
    const repairsBefore = (await eventsFor("reboot-a")).filter((e) => e.reason === "MappingRepaired").length
    await rebootGateway()
    const rebooted = Date.now()
    await waitFor(async () => (await mappingOn(8201)) !== undefined && (await mappingOn(8202)) !== undefined, {
      description: "both mappings restored after the reboot",
      timeoutMs: 5_000,
      intervalMs: 100
    })
    console.log(`mappings restored ${Date.now() - rebooted} ms after the router came back`)
    // The reboot really lost the mapping: the controller had to map it again.
    await waitFor(async () =>
      (await eventsFor("reboot-a")).filter((e) => e.reason === "MappingRepaired").length > repairsBefore, {
      description: "a MappingRepaired event for the reboot"
    })
    await remove("reboot-a", "reboot-b")
  })

  it("after a SIGKILL, cleans up a Service deleted while it was down; nothing leaks", async () => {
    const before = (await upnpcList()).map((m) => `${m.protocol} ${m.externalPort} ${m.description}`).sort()
    await create(loadBalancerService("killed", { ports: [{ name: "http", port: 8301 }] }))
    await waitFor(() => mappingOn(8301), { description: "mapped" })
    await controller.stop({ signal: "SIGKILL" })
    await kubectl(["delete", "service", "killed", "--wait=false"])
    expect((await getService("killed"))?.metadata.deletionTimestamp).toBeDefined()
    expect(await mappingOn(8301)).toBeDefined()
    controller = await startController()
    await waitFor(async () => (await getService("killed")) === undefined, {
      description: "the Service deleted while the controller was down to be gone",
      timeoutMs: 10_000
    })
    const after = (await upnpcList()).map((m) => `${m.protocol} ${m.externalPort} ${m.description}`).sort()
    expect(after).toEqual(before)
  })
})

describe("ownership", () => {
  it("reports a port held by another LAN host as a conflict and never touches it", async () => {
    const foreign = await upnpcAdd({ from: "peer", externalPort: 8080, internalPort: 8080, description: "peer's web server" })
    expect(foreign.ok, foreign.raw).toBe(true)
    try {
      await create(loadBalancerService("conflicted", { ports: [{ name: "http", port: 8080 }] }))
      await waitFor(async () => portError(await getService("conflicted"), 8080) === "midokura.com/PortConflict", {
        description: "the port error midokura.com/PortConflict"
      })
      const conflict = (await eventsFor("conflicted")).find((e) => e.reason === "PortConflict")
      expect(conflict?.type).toBe("Warning")
      expect(conflict?.note).toContain(loadLab().peerIp)
      expect(await mappingOn(8080)).toMatchObject({ internalClient: loadLab().peerIp, description: "peer's web server" })
      await remove("conflicted")
      expect(await mappingOn(8080)).toMatchObject({ internalClient: loadLab().peerIp, description: "peer's web server" })
    } finally {
      await upnpcDelete({ from: "peer", externalPort: 8080 })
    }
  })

  it("gives a contested port to the older Service, and hands it over when that one goes", async () => {
    await create(loadBalancerService("older", { ports: [{ name: "http", port: 8401 }] }))
    await waitFor(async () => ingressIp(await getService("older")) === PUBLIC_IP, { description: "older published" })
    await create(loadBalancerService("newer", { ports: [{ name: "http", port: 8401 }] }))
    await waitFor(async () => portError(await getService("newer"), 8401) === "midokura.com/PortConflict", {
      description: "newer gets PortConflict"
    })
    expect((await mappingOn(8401))?.description).toBe("kubernetes/default/older/http")
    await remove("older")
    await waitFor(async () => (await mappingOn(8401))?.description === "kubernetes/default/newer/http", {
      description: "the port handed over to newer"
    })
    await waitFor(async () => {
      const s = await getService("newer")
      return ingressIp(s) === PUBLIC_IP && portError(s, 8401) === undefined
    }, { description: "newer published without error" })
    await remove("newer")
  })
})

describe("the router's address", () => {
  it("publishes nothing behind a double NAT, and says why", async () => {
    await setGatewayWanAddress("10.0.0.2/24")
    try {
      await create(loadBalancerService("behind-nat", { ports: [{ name: "http", port: 8501 }] }))
      const event = await waitFor(async () => (await eventsFor("behind-nat")).find((e) => e.reason === "DoubleNAT"), {
        description: "a DoubleNAT event"
      })
      expect(event.type).toBe("Warning")
      // miniupnpd hides a private WAN address (GetExternalIPAddress answers empty): the note says why instead.
      expect(event.note).toMatch(/double NAT|no usable external address/)
      expect((await getService("behind-nat"))?.status?.loadBalancer?.ingress ?? []).toEqual([])
    } finally {
      await restoreGateway()
    }
    // Back on a public address, the same Service is published without being touched.
    await waitFor(async () => ingressIp(await getService("behind-nat")) === PUBLIC_IP, {
      description: "published once the address is public again",
      timeoutMs: 35_000
    })
    await remove("behind-nat")
  })

  it("follows a new WAN address within one resync", async () => {
    await create(loadBalancerService("renumbered", { ports: [{ name: "http", port: 8601 }] }))
    await waitFor(async () => ingressIp(await getService("renumbered")) === PUBLIC_IP, { description: "published" })
    await setGatewayWanAddress("122.112.219.230/24")
    try {
      await waitFor(async () => ingressIp(await getService("renumbered")) === "122.112.219.230", {
        description: "the status to follow the new address",
        timeoutMs: 30_000
      })
      expect((await eventsFor("renumbered")).map((e) => e.reason)).toContain("ExternalIPChanged")
    } finally {
      await restoreGateway()
    }
    await remove("renumbered")
  })
})
