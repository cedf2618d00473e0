/**
 * NAT-PMP and PCP against the lab's real miniupnpd 2.3.1 with UPnP switched off, from the node
 * namespace (192.168.77.10), the gateway found by the default route: mappings visible in the
 * gateway's nftables and carrying traffic from the Internet side, deletions that remove them, a
 * reboot seen in the epoch, a PCP mapping renewed and deleted by a fresh client with the
 * recorded nonce, a port held by another host, and a private WAN address.
 */
import { Context, Effect, Layer, type Scope } from "effect"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import type { MappingRequest } from "../../src/gateway/Mapping.ts"
import { NatPmpGateway } from "../../src/gateway/natpmp/NatPmpGateway.ts"
import { PcpGateway } from "../../src/gateway/pcp/PcpGateway.ts"
import { PortMapper } from "../../src/gateway/PortMapper.ts"
import * as lab from "./support/lab.ts"
import { failureOf } from "../support/outcomes.ts"

type Client = PortMapper["Service"]

/** A fresh client: its own memory of nonces and internal ports, its own epoch history. */
const natpmpClient = Effect.map(Layer.build(NatPmpGateway.layer()), (context) => Context.get(context, PortMapper))
const pcpClient = Effect.map(Layer.build(PcpGateway.layer()), (context) => Context.get(context, PortMapper))

const run = <A, E>(program: Effect.Effect<A, E, Scope.Scope>): Promise<A> =>
  Effect.runPromise(Effect.scoped(program))

const wait = <A>(promise: () => Promise<A>) => Effect.promise(promise)

const mapping = (externalPort: number, internalPort: number): MappingRequest => ({
  externalPort,
  protocol: "TCP",
  internalPort,
  description: `kubernetes/default/e2e-${externalPort}/http`,
  leaseSeconds: 300
})

/** Waits until the gateway's epoch is past the RFCs' slack, so that a reboot is detectable. */
const epochAtLeast = (client: Client, seconds: number) =>
  wait(() =>
    lab.waitFor(async () => ((await Effect.runPromise(client.status)).uptimeSeconds ?? 0) >= seconds, {
      description: `the gateway's epoch to reach ${seconds} s`,
      timeoutMs: 20_000,
      intervalMs: 500
    })
  )

const servers: Array<lab.NodePortServer> = []
const serve = (port: number) => wait(async () => {
  const server = await lab.serveNodePort(port)
  servers.push(server)
  return server
})

const curlThrough = (externalPort: number, internalPort: number) => wait(() => lab.curlReaches(externalPort, internalPort))

const curlRefused = (externalPort: number) =>
  wait(() => lab.curlFromWan(`http://${lab.loadLab().gatewayWanIp}:${externalPort}/`, { timeoutMs: 1500 }))

beforeAll(async () => {
  await lab.reconfigureGateway({ enableUpnp: false, enableNatpmp: true })
})

afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()))
  await lab.setGatewayWanAddress(lab.DEFAULT_WAN_CIDR)
})

afterAll(async () => {
  await lab.restoreGateway()
})

describe("NAT-PMP on miniupnpd 2.3.1 (UPnP off)", () => {
  it("finds the gateway by the default route and reports its epoch and external address", async () => {
    const status = await run(Effect.flatMap(natpmpClient, (client) => client.status))
    expect(status).toMatchObject({
      router: "192.168.77.1:5351",
      protocol: "nat-pmp",
      connected: true,
      externalAddress: { ip: "122.112.219.229", class: "public" },
      localAddress: "192.168.77.10",
      lostState: false
    })
    expect(status.uptimeSeconds).toBeTypeOf("number")
  })

  it("maps, carries a curl from the Internet side to the node port, and unmaps", async () => {
    await run(Effect.gen(function*() {
      const client = yield* natpmpClient
      yield* serve(31080)
      const granted = yield* client.map(mapping(18080, 31080))
      expect(granted).toMatchObject({ externalPort: 18080, internalClient: "192.168.77.10", internalPort: 31080, leaseSeconds: 300 })
      expect(yield* wait(() => lab.nftMappingOn(18080, "TCP"))).toEqual({ protocol: "TCP", externalPort: 18080, internalClient: "192.168.77.10", internalPort: 31080 })
      const rules = yield* wait(() => lab.nftNatRules())
      expect(rules).toMatch(/th dport 18080 dnat ip to 192\.168\.77\.10:31080/)
      const curl = yield* curlThrough(18080, 31080)
      expect(curl.status).toBe(200)

      yield* client.unmap({ externalPort: 18080, protocol: "TCP" })
      expect(yield* wait(() => lab.nftMappingOn(18080, "TCP"))).toBeUndefined()
      expect((yield* curlRefused(18080)).ok).toBe(false)
    }))
  })

  it("a port held by another host: the other port granted is released, PortConflict", async () => {
    const peer = await lab.natpmpc(["-a", "18090", "31090", "tcp", "300"], { from: "peer" })
    expect(peer.code, peer.stderr + peer.stdout).toBe(0)
    try {
      const error = await run(Effect.flatMap(natpmpClient, (client) => failureOf(client.map(mapping(18090, 31091)))))
      expect(error._tag).toBe("PortConflict")
      expect(error.message).toMatch(/granted port 18091 instead; released it/)
      const rules = await lab.nftMappings()
      expect(rules.filter((m) => m.externalPort === 18090 || m.externalPort === 18091)).toEqual([
        { protocol: "TCP", externalPort: 18090, internalClient: lab.loadLab().peerIp, internalPort: 31090 }
      ])
    } finally {
      await lab.natpmpc(["-a", "18090", "31090", "tcp", "0"], { from: "peer" })
    }
  })

  it("a gateway reboot is seen as lost state (the epoch restarted), and re-mapping restores the rule", async () => {
    await run(Effect.gen(function*() {
      const client = yield* natpmpClient
      yield* client.map(mapping(18082, 31082))
      yield* epochAtLeast(client, 4)
      const before = yield* client.status
      expect(before.lostState).toBe(false)

      yield* wait(() => lab.rebootGateway())
      expect(yield* wait(() => lab.nftMappingOn(18082, "TCP"))).toBeUndefined()
      const after = yield* client.status
      expect(after.lostState).toBe(true)
      expect(after.stateLosses).toBe(1)
      expect(after.uptimeSeconds).toBeLessThan(before.uptimeSeconds ?? 0)

      yield* client.map(mapping(18082, 31082))
      expect(yield* wait(() => lab.nftMappingOn(18082, "TCP"))).toMatchObject({ internalPort: 31082 })
      yield* client.unmap({ externalPort: 18082, protocol: "TCP" })
    }))
  })

  it("a private WAN address: DoubleNat, nothing mapped, status not connected", async () => {
    await lab.setGatewayWanAddress("10.0.0.2/24")
    await run(Effect.gen(function*() {
      const client = yield* natpmpClient
      const error = yield* failureOf(client.map(mapping(18083, 31083)))
      expect(error._tag).toBe("DoubleNat")
      expect(yield* wait(() => lab.nftMappingOn(18083, "TCP"))).toBeUndefined()
      const status = yield* client.status
      expect(status.connected).toBe(false)
      expect(status.externalAddress.class).not.toBe("public")
    }))
  })
})

describe("PCP on miniupnpd 2.3.1 (UPnP off)", () => {
  it("status: epoch and the external address from a harmless deletion", async () => {
    const status = await run(Effect.flatMap(pcpClient, (client) => client.status))
    expect(status).toMatchObject({
      router: "192.168.77.1:5351",
      protocol: "pcp",
      connected: true,
      externalAddress: { ip: "122.112.219.229", class: "public" },
      localAddress: "192.168.77.10",
      lostState: false
    })
  })

  it("maps with a nonce, carries a curl from the Internet side, and unmaps", async () => {
    await run(Effect.gen(function*() {
      const client = yield* pcpClient
      yield* serve(31181)
      const granted = yield* client.map(mapping(18181, 31181))
      expect(granted.nonce).toMatch(/^[0-9a-f]{24}$/)
      expect(granted).toMatchObject({ externalPort: 18181, internalClient: "192.168.77.10", internalPort: 31181 })
      expect(granted.leaseSeconds).toBeGreaterThan(0)
      expect(yield* wait(() => lab.nftMappingOn(18181, "TCP"))).toEqual({ protocol: "TCP", externalPort: 18181, internalClient: "192.168.77.10", internalPort: 31181 })
      expect((yield* curlThrough(18181, 31181)).status).toBe(200)

      yield* client.unmap({ externalPort: 18181, protocol: "TCP" })
      expect(yield* wait(() => lab.nftMappingOn(18181, "TCP"))).toBeUndefined()
      expect((yield* curlRefused(18181)).ok).toBe(false)
    }))
  })

  it("a fresh client renews and deletes with the recorded nonce; another nonce cannot delete", async () => {
    await run(Effect.gen(function*() {
      const first = yield* pcpClient
      const granted = yield* first.map(mapping(18182, 31182))
      const record = { externalPort: 18182, protocol: "TCP" as const, internalPort: 31182, nonce: granted.nonce }

      const restarted = yield* pcpClient
      const renewed = yield* restarted.map({ ...mapping(18182, 31182), nonce: granted.nonce })
      expect(renewed.nonce).toBe(granted.nonce)
      expect((yield* wait(() => lab.nftMappings())).filter((m) => m.externalPort === 18182)).toHaveLength(1)

      const stranger = yield* pcpClient
      const refused = yield* failureOf(stranger.unmap({ ...record, nonce: "0123456789abcdef01234567" }))
      expect(refused._tag).toBe("PortConflict")
      expect(yield* wait(() => lab.nftMappingOn(18182, "TCP"))).toBeDefined()

      const another = yield* pcpClient
      yield* another.unmap(record)
      expect(yield* wait(() => lab.nftMappingOn(18182, "TCP"))).toBeUndefined()
      // Already gone: still a success.
      yield* another.unmap(record)
    }))
  })

  it("a port held by another host: the other port granted is released with the same nonce, PortConflict", async () => {
    const peer = await lab.natpmpc(["-a", "18190", "31190", "tcp", "300"], { from: "peer" })
    expect(peer.code, peer.stderr + peer.stdout).toBe(0)
    try {
      const error = await run(Effect.flatMap(pcpClient, (client) => failureOf(client.map(mapping(18190, 31191)))))
      expect(error._tag).toBe("PortConflict")
      expect(error.message).toMatch(/granted port 18191 instead; released it/)
      const rules = await lab.nftMappings()
      expect(rules.filter((m) => m.externalPort === 18190 || m.externalPort === 18191)).toEqual([
        { protocol: "TCP", externalPort: 18190, internalClient: lab.loadLab().peerIp, internalPort: 31190 }
      ])
    } finally {
      await lab.natpmpc(["-a", "18190", "31190", "tcp", "0"], { from: "peer" })
    }
  })

  it("a gateway reboot is seen as lost state", async () => {
    await run(Effect.gen(function*() {
      const client = yield* pcpClient
      yield* client.map(mapping(18183, 31183))
      yield* epochAtLeast(client, 4)
      expect((yield* client.status).lostState).toBe(false)
      yield* wait(() => lab.rebootGateway())
      expect(yield* wait(() => lab.nftMappingOn(18183, "TCP"))).toBeUndefined()
      const after = yield* client.status
      expect(after.lostState).toBe(true)
      expect(after.stateLosses).toBe(1)
    }))
  })

  it("a private WAN address: DoubleNat, and nothing is left mapped", async () => {
    await lab.setGatewayWanAddress("10.0.0.2/24")
    await run(Effect.gen(function*() {
      const client = yield* pcpClient
      const error = yield* failureOf(client.map(mapping(18184, 31184)))
      expect(error._tag).toBe("DoubleNat")
      expect(yield* wait(() => lab.nftMappingOn(18184, "TCP"))).toBeUndefined()
      const status = yield* client.status
      expect(status.externalAddress.class).not.toBe("public")
    }))
  })
})
