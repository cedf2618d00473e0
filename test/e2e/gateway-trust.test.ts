/**
 * Only the router is the gateway. A hostile LAN host (the lab's peer, 192.168.77.50) runs a
 * fake IGDv2 that answers every SSDP search, says it is connected and claims a public address
 * of its own. Started normally, the controller uses only the node's default gateway
 * (miniupnpd at 192.168.77.1) and never speaks to the fake; started with
 * `--gateway-address 192.168.77.50`, it uses the fake, and says so.
 */
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { showOutputOnFailure } from "./support/failureOutput.ts"
import {
  deleteTestServices,
  edgeCcm,
  eventsFor,
  getService,
  ingressIp,
  loadBalancerService,
  startController
} from "./support/controller.ts"
import { kubectl, type LabProcess, loadLab, nftMappingOn, spawnInNamespace, upnpcList, waitFor } from "./support/lab.ts"

const root = path.resolve(import.meta.dirname, "../..")
/** The fake's claimed WAN address: public (not reserved), and not miniupnpd's. */
const FAKE_EXTERNAL_IP = "122.112.219.99"
const FAKE_HTTP_PORT = "49152"

interface SoapCall {
  readonly soap: string | null
  readonly from: string
  readonly args: Readonly<Record<string, string>>
}

let fake: LabProcess
let controller: (LabProcess & { readonly healthUrl: string }) | undefined

/** Every SOAP call the fake has received so far. */
const fakeCalls = (): Array<SoapCall> =>
  fake.stdout().split("\n").filter((line) => line.startsWith("{\"soap\"")).map((line) => JSON.parse(line) as SoapCall)

const create = async (manifest: string) => {
  const result = await kubectl(["create", "-f", "-"], { input: manifest })
  expect(result.code, result.stderr).toBe(0)
}

/** Which router the Service uses, as its Events say: on its EnsuredLoadBalancer, or in a GatewaySelected of its own. */
const selectedEvents = async (name: string) =>
  (await eventsFor(name)).flatMap((event) =>
    event.reason === "GatewaySelected"
      ? [event.note]
      : event.reason === "EnsuredLoadBalancer"
      ? [...event.note.matchAll(/ \(([^()]*)\)$/g)].map((match) => match[1]!)
      : []
  )

beforeAll(async () => {
  const lab = loadLab()
  fake = spawnInNamespace("peer", [
    process.execPath,
    path.join(root, "test/e2e/support/hostile-igd.ts"),
    lab.peerIp,
    FAKE_HTTP_PORT,
    FAKE_EXTERNAL_IP
  ], { cwd: root })
  await waitFor(() => fake.stdout().includes("\"ready\""), {
    description: "the fake IGD on the peer host to listen",
    timeoutMs: 15_000
  }).catch((error: Error) => {
    throw new Error(`${error.message}\nfake output:\n${fake.output()}`)
  })
})

afterAll(async () => {
  if (controller !== undefined) {
    await deleteTestServices()
    await controller.stop()
  }
  await fake?.stop()
})

showOutputOnFailure({ controller: () => controller, fake: () => fake })

describe("a fake IGDv2 on another LAN host", () => {
  it("answers the SSDP search, and is listed as ignored: not the default gateway", async () => {
    const lab = loadLab()
    const result = await edgeCcm(["gateway", "discover", "--json"])
    expect(result.code, result.stderr).toBe(0)
    const rows = JSON.parse(result.stdout) as Array<{ location: string; status: string; selected: boolean; reason: string }>
    const selected = rows.filter((row) => row.selected)
    expect(selected.map((row) => row.location)).toEqual([lab.rootDescUrl])
    expect(rows).toContainEqual(expect.objectContaining({
      location: `http://${lab.peerIp}:${FAKE_HTTP_PORT}/rootDesc.xml`,
      status: "ignored",
      selected: false,
      reason: "ignored: not the default gateway (use --gateway-address)"
    }))
    // Listed from its SSDP reply alone: never fetched, never called.
    expect(fakeCalls()).toEqual([])
  })

  it("started normally, the controller maps on the default gateway and never speaks to the fake", async () => {
    const lab = loadLab()
    controller = await startController()
    await create(loadBalancerService("trust-default", { ports: [{ name: "http", port: 8181 }] }))
    const service = await waitFor(async () => {
      const found = await getService("trust-default")
      return ingressIp(found) === undefined ? undefined : found
    }, { description: "trust-default to get an EXTERNAL-IP", timeoutMs: 30_000 })
    expect(ingressIp(service)).toBe(lab.gatewayWanIp)
    expect(await nftMappingOn(8181, "TCP")).toMatchObject({ internalClient: lab.nodeIp })
    expect((await upnpcList()).some((mapping) => mapping.externalPort === 8181)).toBe(true)

    const notes = await waitFor(async () => {
      const found = await selectedEvents("trust-default")
      return found.length > 0 ? found : undefined
    }, { description: "an Event naming the router", timeoutMs: 15_000 })
    expect(notes).toEqual([`upnp-igd router ${lab.gatewayLanIp}, the node's default gateway`])
    expect(controller.output()).toContain(`UPnP gateway: ${lab.gatewayLanIp}, the node's default gateway`)
    // Not one SOAP call reached the fake, though it answered every search.
    expect(fakeCalls()).toEqual([])

    await deleteTestServices()
    expect(await nftMappingOn(8181, "TCP")).toBeUndefined()
    await controller.stop()
    controller = undefined
    expect(fakeCalls()).toEqual([])
  })

  it("started with --gateway-address 192.168.77.50, the controller uses the fake, and says so", async () => {
    const lab = loadLab()
    controller = await startController({ flags: ["--gateway-address", lab.peerIp] })
    await create(loadBalancerService("trust-peer", { ports: [{ name: "http", port: 8182 }] }))
    const service = await waitFor(async () => {
      const found = await getService("trust-peer")
      return ingressIp(found) === undefined ? undefined : found
    }, { description: "trust-peer to get an EXTERNAL-IP", timeoutMs: 30_000 })
    expect(ingressIp(service)).toBe(FAKE_EXTERNAL_IP)
    const adds = fakeCalls().filter((call) => call.soap === "AddPortMapping")
    expect(adds).toContainEqual(expect.objectContaining({
      from: lab.nodeIp,
      args: expect.objectContaining({ NewExternalPort: "8182", NewInternalClient: lab.nodeIp })
    }))
    // miniupnpd holds nothing of it.
    expect(await nftMappingOn(8182, "TCP")).toBeUndefined()

    const notes = await waitFor(async () => {
      const found = await selectedEvents("trust-peer")
      return found.length > 0 ? found : undefined
    }, { description: "an Event naming the router", timeoutMs: 15_000 })
    expect(notes).toEqual([`upnp-igd router ${lab.peerIp}, set by --gateway-address`])
    expect(controller.output()).toContain(`UPnP gateway: ${lab.peerIp}, set by --gateway-address`)
  })
})
