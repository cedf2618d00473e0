/**
 * IPv6 pinholes through the WANIPv6FirewallControl:1 client against the lab's real miniupnpd
 * 2.3.1, from the node namespace (2001:db8:2::10): the firewall service found in the IGD:2
 * description read over IPv6, the node's address from the kernel's route, a pinhole that lets
 * an IPv6 curl from the Internet side reach the node's own address (no NAT), a port without a
 * pinhole dropped by the gateway's forward chain, a renewal by UpdatePinhole seen in the
 * rule's expiry, a deletion that removes the rule, and port 80 refused with the typed 606.
 */
import { NodeHttpClient } from "@effect/platform-node"
import { Effect, Layer, Result } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { localIpv6AddressToward } from "../../src/gateway/localAddress.ts"
import { Description } from "../../src/gateway/upnp/Description.ts"
import type { PinholeError } from "../../src/gateway/upnp/PinholeError.ts"
import * as Pinholes from "../../src/gateway/upnp/Pinholes.ts"
import { SoapTransport } from "../../src/gateway/upnp/SoapTransport.ts"
import * as lab from "./support/lab.ts"

const PINHOLE_PORT = 18460
const CLOSED_PORT = 18461

const layer = Layer.mergeAll(SoapTransport.layer(), Description.layer()).pipe(Layer.provide(NodeHttpClient.layerNodeHttp))

const run = <A, E>(program: Effect.Effect<A, E, SoapTransport | Description>): Promise<A> =>
  Effect.runPromise(program.pipe(Effect.provide(layer)))

/** The program's failure (it must fail). */
const failure = async <A, E>(program: Effect.Effect<A, E, SoapTransport | Description>): Promise<E> => {
  const result = await run(Effect.result(program))
  if (Result.isSuccess(result)) throw new Error(`expected a failure, got ${JSON.stringify(result.success)}`)
  return result.failure
}

let state: lab.LabState
let endpoint: Pinholes.FirewallEndpoint
let nodeAddress: string
const servers: Array<lab.NodePortServer> = []
const opened: Array<number> = []

const curlNode = (port: number, timeoutMs = 3000) => lab.curlFromWan(`http://[${state.nodeIp6}]:${port}/`, { timeoutMs })

const pinholesOn = async (port: number) => (await lab.nftPinholes()).filter((p) => p.port === port)

beforeAll(async () => {
  state = lab.loadLab()
  const description = await run(Effect.gen(function*() {
    const descriptions = yield* Description
    return yield* descriptions.fetch(state.rootDescUrl6)
  }))
  endpoint = Result.getOrThrow(Pinholes.firewallEndpointFrom(description))
  nodeAddress = await run(localIpv6AddressToward(endpoint.routerIp, endpoint.routerPort))
  for (const port of [PINHOLE_PORT, CLOSED_PORT]) {
    servers.push(await lab.serveNodePort(port, { ip: state.nodeIp6 }))
  }
})

afterAll(async () => {
  for (const id of opened) await run(Effect.ignore(Pinholes.deletePinhole(endpoint, id)))
  await Promise.all(servers.map((server) => server.close()))
})

describe("IPv6 pinholes on the lab's miniupnpd", () => {
  it("finds the firewall service over IPv6, the node's global address, and a firewall that allows pinholes", async () => {
    expect(endpoint.controlUrl).toBe(state.firewallControlUrl)
    expect(nodeAddress).toBe(state.nodeIp6)
    expect(await run(Pinholes.getFirewallStatus(endpoint))).toEqual({ firewallEnabled: true, inboundPinholeAllowed: true })
  })

  it("without a pinhole the gateway's forward chain drops an IPv6 curl to the node", async () => {
    const closed = await curlNode(CLOSED_PORT)
    expect(closed.ok).toBe(false)
    expect(closed.curlExitCode).toBe(28) // timed out: dropped, not refused
    expect(servers[1]!.requests()).toBe(0)
  })

  it("AddPinhole opens the node's port: the rule is in miniupnpd's chain and a curl from the Internet reaches the node", async () => {
    // Given in an expanded spelling: the client sends the canonical one, the only one accepted.
    const expanded = "2001:0db8:0002:0000:0000:0000:0000:0010"
    const id = await run(
      Pinholes.addPinhole(endpoint, { internalClient: expanded, internalPort: PINHOLE_PORT, protocol: "TCP", leaseSeconds: 3600 })
    )
    opened.push(id)
    const rules = await pinholesOn(PINHOLE_PORT)
    expect(rules).toHaveLength(1)
    expect(rules[0]).toMatchObject({ uniqueId: id, protocol: "TCP", internalClient: state.nodeIp6, description: "IGD2 pinhole" })
    const reached = await lab.waitFor(async () => {
      const r = await curlNode(PINHOLE_PORT, 2000)
      return r.ok ? r : undefined
    }, { description: `an IPv6 curl from wan to [${state.nodeIp6}]:${PINHOLE_PORT}` })
    expect(reached.body).toBe(servers[0]!.body)
    // The other port stays closed: the pinhole is for its own port only.
    expect((await curlNode(CLOSED_PORT, 1500)).curlExitCode).toBe(28)
  })

  it("UpdatePinhole renews the same pinhole to now + lease, with no second AddPinhole", async () => {
    const id = opened[0]!
    const [before] = await pinholesOn(PINHOLE_PORT)
    const start = lab.kernelUptime()
    expect(before!.expiresAt).toBeGreaterThan(start + 3500) // the 3600 s lease it was added with
    await run(Pinholes.updatePinhole(endpoint, id, 600))
    const end = lab.kernelUptime()
    const after = await pinholesOn(PINHOLE_PORT)
    expect(after).toHaveLength(1)
    expect(after[0]!.uniqueId).toBe(id)
    // now + 600 (a re-add would have counted the uptime twice: far beyond it).
    expect(after[0]!.expiresAt).toBeGreaterThanOrEqual(Math.floor(start) + 600)
    expect(after[0]!.expiresAt).toBeLessThanOrEqual(Math.ceil(end) + 600)
    // miniupnpd re-creates the rule on an update (new handle, description emptied).
    expect(after[0]!.description).toBe("")
    expect((await curlNode(PINHOLE_PORT)).body).toBe(servers[0]!.body)
  })

  it("DeletePinhole removes the rule, and the port is dropped again", async () => {
    const id = opened.shift()!
    await run(Pinholes.deletePinhole(endpoint, id))
    expect(await pinholesOn(PINHOLE_PORT)).toEqual([])
    expect((await curlNode(PINHOLE_PORT, 1500)).curlExitCode).toBe(28)
    // The router no longer knows it: the typed "gone" answer.
    const gone = (await failure(Pinholes.updatePinhole(endpoint, id, 600))) as PinholeError
    expect(gone._tag).toBe("PinholeError")
    expect(gone.code).toBe(402)
    expect(gone.pinholeGone).toBe(true)
  })

  it("port 80: the typed 606, saying the router opens no pinhole below 1024 over UPnP", async () => {
    const error = (await failure(
      Pinholes.addPinhole(endpoint, { internalClient: nodeAddress, internalPort: 80, protocol: "TCP", leaseSeconds: 600 })
    )) as PinholeError
    expect(error._tag).toBe("PinholeError")
    expect(error.code).toBe(606)
    expect(error.action).toBe("AddPinhole")
    expect(error.meaning).toMatch(/below 1024 over UPnP \(port 80\)/)
    expect(await pinholesOn(80)).toEqual([])
  })
})
