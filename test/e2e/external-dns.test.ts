/**
 * external-dns beside the controller on the real lab: the controller as a process publishes the
 * router's public address in the Service's status, and external-dns (built from its release,
 * `service` source, in-memory provider, least-privilege RBAC) turns the Service's
 * external-dns.kubernetes.io/hostname into A (and AAAA) records that follow a WAN
 * renumbering and go with the Service.
 */
import * as path from "node:path"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import {
  type ControllerUnderTest,
  deleteTestServices,
  getService,
  type ServiceView,
  startController
} from "./support/controller.ts"
import { type ExternalDnsProcess, startExternalDns } from "./support/external-dns.ts"
import { kubectl, loadLab, restoreGateway, setGatewayWanAddress, waitFor } from "./support/lab.ts"

const WEB = path.resolve(import.meta.dirname, "../../examples/external-dns/web.yaml")
const DUAL_STACK = path.resolve(import.meta.dirname, "../../examples/loadbalancers/upnp-igd-dual-stack.yaml")
const ZONE = "home.example"
const HOSTNAME = "web.home.example"
const PUBLIC_IP = "122.112.219.229"
const RENUMBERED_IP = "122.112.219.230"

let controller: ControllerUnderTest
let dns: ExternalDnsProcess

const ingressIps = (service: ServiceView | undefined) => (service?.status?.loadBalancer?.ingress ?? []).map((i) => i.ip)
const targets = (name: string, type: string) => dns.record(name, type)?.targets.join(",")

beforeAll(async () => {
  const lab = loadLab()
  controller = await startController({ flags: ["--gateway-url", lab.rootDescUrl, "--gateway-address6", lab.gatewayLanIp6] })
  dns = await startExternalDns({ zone: ZONE })
})

afterAll(async () => {
  await restoreGateway()
  await deleteTestServices()
  await kubectl(["delete", "deployment", "http-nginx-dual-stack", "--ignore-not-found"])
  await dns?.stop()
  await controller?.stop()
})

afterEach(async (context) => {
  if (context.task.result?.state === "fail") {
    console.log(`controller output (last 3000 chars):\n${controller.output().slice(-3000)}`)
    console.log(`external-dns output (last 3000 chars):\n${dns.output().slice(-3000)}`)
  }
})

describe("a Service with an external-dns hostname", () => {
  it("gets an A record with the router's public address and the Service's TTL", async () => {
    const created = Date.now()
    const result = await kubectl(["create", "-f", WEB])
    expect(result.code, result.stderr).toBe(0)
    await waitFor(async () => ingressIps(await getService("web")).join(",") === PUBLIC_IP, {
      description: `EXTERNAL-IP ${PUBLIC_IP}`
    })
    const published = Date.now()
    const record = await waitFor(() => (targets(HOSTNAME, "A") === PUBLIC_IP ? dns.record(HOSTNAME, "A") : undefined), {
      description: `${HOSTNAME} A ${PUBLIC_IP}`
    })
    console.log(`status ${published - created} ms after kubectl create, A record ${Date.now() - published} ms after the status`)
    expect(record.ttl).toBe(60)
    expect(dns.record(HOSTNAME, "AAAA")).toBeUndefined()
    // external-dns's ownership record beside it (TXT registry): it deletes only what it owns.
    // It logs that one on a line of its own, which may come just after the A record's.
    await waitFor(() => [...dns.records().values()].some((r) => r.type === "TXT" && r.name.includes("web.home.example")), {
      description: `${HOSTNAME}'s TXT owner record`,
      timeoutMs: 5_000
    })
  })

  it("moves the record after the Service's status when the router's WAN address changes", async () => {
    await setGatewayWanAddress(`${RENUMBERED_IP}/24`)
    const renumbered = Date.now()
    try {
      await waitFor(async () => ingressIps(await getService("web")).join(",") === RENUMBERED_IP, {
        description: `the status to follow the WAN address to ${RENUMBERED_IP}`,
        timeoutMs: 35_000
      })
      const statusMoved = Date.now()
      await waitFor(() => targets(HOSTNAME, "A") === RENUMBERED_IP, {
        description: `${HOSTNAME} A to move to ${RENUMBERED_IP}`,
        timeoutMs: 15_000
      })
      console.log(`status ${statusMoved - renumbered} ms after the renumbering, A record ${Date.now() - statusMoved} ms after the status`)
    } finally {
      await restoreGateway()
    }
    await waitFor(() => targets(HOSTNAME, "A") === PUBLIC_IP, {
      description: `${HOSTNAME} A back to ${PUBLIC_IP} with the address`,
      timeoutMs: 35_000
    })
  })

  it("loses its A record behind a double NAT, where no address is published, and gets it back after", async () => {
    await setGatewayWanAddress("10.0.0.2/24")
    try {
      await waitFor(async () => ingressIps(await getService("web")).length === 0, {
        description: "the status to publish no address behind a double NAT",
        timeoutMs: 35_000
      })
      await waitFor(() => dns.record(HOSTNAME, "A") === undefined, {
        description: `${HOSTNAME} A to be deleted (--policy=sync)`,
        timeoutMs: 15_000
      })
    } finally {
      await restoreGateway()
    }
    await waitFor(() => targets(HOSTNAME, "A") === PUBLIC_IP, {
      description: `${HOSTNAME} A ${PUBLIC_IP} again once the address is public`,
      timeoutMs: 35_000
    })
  })

  it("loses its records when the Service is deleted", async () => {
    await kubectl(["delete", "service", "web", "--wait=false"])
    await waitFor(async () => (await getService("web")) === undefined, { description: "the Service to be gone" })
    const gone = Date.now()
    await waitFor(() => [...dns.records().values()].every((r) => !r.name.includes("web.home.example")), {
      description: `every record of ${HOSTNAME} to be deleted`,
      timeoutMs: 15_000
    })
    console.log(`records deleted ${Date.now() - gone} ms after the Service was gone`)
  })
})

describe("a dual-stack Service with a hostname", () => {
  it("gets an A record with the router's address and an AAAA record with the node's IPv6 address", async () => {
    const lab = loadLab()
    const created = await kubectl(["create", "-f", DUAL_STACK])
    expect(created.code, created.stderr).toBe(0)
    const annotated = await kubectl([
      "annotate", "service", "http-nginx-dual-stack", "external-dns.kubernetes.io/hostname=dual.home.example"
    ])
    expect(annotated.code, annotated.stderr).toBe(0)
    await waitFor(async () => ingressIps(await getService("http-nginx-dual-stack")).length === 2, {
      description: "both ingress addresses"
    })
    expect(ingressIps(await getService("http-nginx-dual-stack"))).toEqual([PUBLIC_IP, lab.nodeIp6])
    await waitFor(() => targets("dual.home.example", "A") === PUBLIC_IP && targets("dual.home.example", "AAAA") === lab.nodeIp6, {
      description: `dual.home.example A ${PUBLIC_IP} and AAAA ${lab.nodeIp6}`
    })
    await kubectl(["delete", "service", "http-nginx-dual-stack", "--wait=false"])
    await waitFor(() => dns.record("dual.home.example", "A") === undefined && dns.record("dual.home.example", "AAAA") === undefined, {
      description: "both records deleted with the Service",
      timeoutMs: 15_000
    })
  })
})
