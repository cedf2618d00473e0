/**
 * IPv6 pinholes through the WANIPv6FirewallControl:1 client against the lab's real miniupnpd
 * 2.3.1, from the node namespace (2001:db8:2::10): the firewall service found in the IGD:2
 * description read over IPv6, the node's address from the kernel's route, a pinhole that lets
 * an IPv6 curl from the Internet side reach the node's own address (no NAT), a port without a
 * pinhole dropped by the gateway's forward chain, a renewal by UpdatePinhole seen in the
 * rule's expiry, a deletion that removes the rule, and port 80 refused with the typed 606;
 * then the same through `edge-ccm gateway pinhole`.
 */
import { NodeHttpClient } from "@effect/platform-node"
import { Effect, Layer, Result } from "effect"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { localIpv6AddressToward } from "../../src/gateway/localAddress.ts"
import { Description } from "../../src/gateway/upnp/Description.ts"
import type { PinholeError } from "../../src/gateway/upnp/PinholeError.ts"
import * as Pinholes from "../../src/gateway/upnp/Pinholes.ts"
import { SoapTransport } from "../../src/gateway/upnp/SoapTransport.ts"
import { edgeCcm } from "./support/controller.ts"
import * as lab from "./support/lab.ts"

const PINHOLE_PORT = 18460
const CLOSED_PORT = 18461
const CLI_PORT = 18462

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
  for (const port of [PINHOLE_PORT, CLOSED_PORT, CLI_PORT]) {
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

describe("edge-ccm gateway pinhole", () => {
  const pinhole = (...args: ReadonlyArray<string>) =>
    edgeCcm(["gateway", "pinhole", ...args, "--gateway-url", state.rootDescUrl6])

  it("status, add, check, list, update and delete against the lab's router", async () => {
    const status = await pinhole("status", "--json")
    expect(status.code, status.stderr).toBe(0)
    expect(JSON.parse(status.stdout)).toMatchObject({
      controlUrl: state.firewallControlUrl,
      firewallEnabled: true,
      inboundPinholeAllowed: true,
      nodeAddress: state.nodeIp6
    })

    const added = await pinhole("add", "--port", String(CLI_PORT), "--protocol", "TCP", "--lease", "10m", "--json")
    expect(added.code, added.stderr).toBe(0)
    const { uniqueId } = JSON.parse(added.stdout) as { uniqueId: number }
    opened.push(uniqueId)
    expect((await pinholesOn(CLI_PORT)).map((p) => p.uniqueId)).toEqual([uniqueId])
    const reached = await lab.waitFor(async () => {
      const r = await curlNode(CLI_PORT, 2000)
      return r.ok ? r : undefined
    }, { description: `an IPv6 curl from wan to [${state.nodeIp6}]:${CLI_PORT}` })
    expect(reached.body).toBe(servers[2]!.body)

    // What the router can tell: 0 packets and 709 on this build; 402 for an ID it does not have.
    const listed = await pinhole("list", "--id", String(uniqueId), "--id", "999", "--json")
    expect(listed.code, listed.stderr).toBe(0)
    const rows = JSON.parse(listed.stdout) as Array<{ uniqueId: number; packets: unknown; working: { code?: number } }>
    expect(rows.map((row) => [row.uniqueId, row.packets, row.working.code])).toEqual([
      [uniqueId, 0, 709],
      [999, { error: expect.stringMatching(/no pinhole 999/), code: 402 }, 402]
    ])

    const start = lab.kernelUptime()
    const updated = await pinhole("update", "--id", String(uniqueId), "--lease", "5m")
    expect(updated.code, updated.stderr).toBe(0)
    expect(updated.stdout).toContain(`pinhole ${uniqueId} renewed for 300 s`)
    const [renewed] = await pinholesOn(CLI_PORT)
    expect(renewed!.expiresAt).toBeGreaterThanOrEqual(Math.floor(start) + 300)
    expect(renewed!.expiresAt).toBeLessThanOrEqual(Math.ceil(lab.kernelUptime()) + 300)

    const deleted = await pinhole("delete", "--id", String(uniqueId))
    expect(deleted.code, deleted.stderr).toBe(0)
    opened.splice(opened.indexOf(uniqueId), 1)
    expect(await pinholesOn(CLI_PORT)).toEqual([])

    const again = await pinhole("delete", "--id", String(uniqueId))
    expect(again.code).toBe(1)
    expect(again.stderr).toMatch(/UPnP error 402 .*add it again/)
  })

  it("port 80 fails with the router's 606 and its meaning; no router named is a usage error", async () => {
    const low = await pinhole("add", "--port", "80", "--protocol", "TCP")
    expect(low.code).toBe(1)
    expect(low.stderr).toMatch(/UPnP error 606 .*below 1024 over UPnP \(port 80\); use PCP/)
    const unaimed = await edgeCcm(["gateway", "pinhole", "status"])
    expect(unaimed.code).toBe(2)
    expect(unaimed.stderr).toMatch(/give --firewall-url or --gateway-url/)
  })
})
