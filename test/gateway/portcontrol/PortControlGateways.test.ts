/**
 * What the NAT-PMP and the PCP `PortMapper` share, as one suite run against each, over real UDP
 * to the fake gateway on 127.0.0.1 (fast retransmission bounds): their capabilities, a mapping
 * for another host refused before anything is sent, another port granted and released at once,
 * a private WAN, forged and lost answers, silence, and a reboot seen in the epoch.
 * What only one of them does is in natpmp/NatPmpGateway.test.ts and pcp/PcpGateway.test.ts.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { NatPmpGateway } from "../../../src/gateway/natpmp/NatPmpGateway.ts"
import { PcpGateway } from "../../../src/gateway/pcp/PcpGateway.ts"
import { PortMapper } from "../../../src/gateway/PortMapper.ts"
import type { Retransmission } from "../../../src/gateway/portcontrol/Exchange.ts"
import * as FakeNatPmp from "../../support/FakeNatPmp.ts"
import { failureOf, u16 } from "../../support/outcomes.ts"

const fast: Partial<Retransmission> = { initial: "20 millis", jitter: 0, deadline: "500 millis" }

const request = FakeNatPmp.seedRequest

interface Protocol {
  readonly name: "NAT-PMP" | "PCP"
  readonly kind: FakeNatPmp.FakeMapping["kind"]
  readonly layer: (port: number) => Layer.Layer<PortMapper>
  readonly capabilities: { readonly readsTable: boolean; readonly deletesByInternalPort: boolean; readonly nonces: boolean }
  readonly forgeries: ReadonlyArray<FakeNatPmp.Forgery>
  /** The opcode of the request `externalAddress` sends. */
  readonly probeOpcode: number
  /** Checks that the release of another port granted undoes exactly that grant. */
  readonly releases: (grant: FakeNatPmp.ReceivedRequest, release: FakeNatPmp.ReceivedRequest) => void
}

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex")

const protocols: ReadonlyArray<Protocol> = [
  {
    name: "NAT-PMP",
    kind: "nat-pmp",
    layer: (port) => NatPmpGateway.layer({ gateway: FakeNatPmp.LOOPBACK, port, retransmission: { ...fast } }),
    capabilities: { readsTable: false, deletesByInternalPort: true, nonces: false },
    forgeries: ["wrong-port", "wrong-address"],
    probeOpcode: 0,
    // NAT-PMP deletes by internal port.
    releases: (_grant, release) => assert.strictEqual(u16(release.bytes, 4), 30000)
  },
  {
    name: "PCP",
    kind: "pcp",
    layer: (port) => PcpGateway.layer({ gateway: FakeNatPmp.LOOPBACK, port, retransmission: { ...fast } }),
    capabilities: { readsTable: false, deletesByInternalPort: false, nonces: true },
    forgeries: ["other-nonce", "wrong-address", "wrong-port"],
    probeOpcode: 1,
    // PCP deletes with the nonce that owns the mapping: the one the grant was made under.
    releases: (grant, release) => assert.strictEqual(hex(release.bytes.subarray(24, 36)), hex(grant.bytes.subarray(24, 36)))
  }
]

describe.each(protocols)("$name gateway", (protocol) => {
  /** A fake gateway and a client aimed at it. */
  const setup = Effect.gen(function*() {
    const fake = yield* FakeNatPmp.make()
    const mapper = Context.get(yield* Layer.build(protocol.layer(fake.port)), PortMapper)
    return { fake, mapper }
  })

  it.live("says what it can do: no table to read; who deletes by internal port; who owns by nonce", () =>
    Effect.gen(function*() {
      const { fake, mapper } = yield* setup
      assert.strictEqual(mapper.capabilities.readsTable, protocol.capabilities.readsTable)
      assert.strictEqual(mapper.capabilities.deletesByInternalPort, protocol.capabilities.deletesByInternalPort)
      assert.strictEqual(mapper.capabilities.drawNonce !== undefined, protocol.capabilities.nonces)
      if (mapper.capabilities.drawNonce !== undefined) {
        const [a, b] = yield* Effect.all([mapper.capabilities.drawNonce, mapper.capabilities.drawNonce])
        assert.match(a, /^[0-9a-f]{24}$/)
        assert.notStrictEqual(a, b)
      }
      assert.isUndefined(yield* mapper.get(8080, "TCP"))
      assert.isUndefined(yield* mapper.list)
      // Drawing a nonce and reading what cannot be read ask the gateway nothing.
      assert.strictEqual((yield* fake.requests).length, 0)
    }).pipe(Effect.scoped))

  it.live("a mapping for another host is refused before anything is sent", () =>
    Effect.gen(function*() {
      const { fake, mapper } = yield* setup
      const error = yield* failureOf(mapper.map({ ...request, internalClient: "192.168.77.50" }))
      assert.strictEqual(error._tag, "InvalidMapping")
      assert.strictEqual((yield* fake.requests).length, 0)
    }).pipe(Effect.scoped))

  it.live("another port granted (the asked one is taken): released at once, PortConflict", () =>
    Effect.gen(function*() {
      const { fake, mapper } = yield* setup
      fake.addForeign({
        kind: protocol.kind,
        protocol: "TCP",
        externalPort: 8080,
        internalPort: 80,
        lifetime: 3600,
        nonce: protocol.kind === "pcp" ? "cd".repeat(12) : undefined
      })
      const error = yield* failureOf(mapper.map(request))
      assert.strictEqual(error._tag, "PortConflict")
      assert.include(error.message, "granted port 8081 instead; released it")
      const sent = yield* fake.requests
      const release = sent.at(-1)!
      assert.strictEqual(release.lifetime, 0)
      protocol.releases(sent.at(-2)!, release)
      assert.deepStrictEqual(Array.from(fake.table.keys()), ["TCP/8080"])
      assert.strictEqual(fake.table.get("TCP/8080")!.internalClient, "192.168.77.50")
    }).pipe(Effect.scoped))

  it.live("a private WAN address: map fails with DoubleNat, and nothing stays mapped", () =>
    Effect.gen(function*() {
      const { fake, mapper } = yield* setup
      fake.externalAddress = "10.0.0.2"
      const error = yield* failureOf(mapper.map(request))
      assert.strictEqual(error._tag, "DoubleNat")
      assert.strictEqual(fake.table.size, 0)
    }).pipe(Effect.scoped))

  it.live.each(protocol.forgeries)("a forged answer (%s) is ignored", (forge) =>
    Effect.gen(function*() {
      const { fake, mapper } = yield* setup
      fake.faults.forge = forge
      const granted = yield* mapper.map(request)
      assert.strictEqual(granted.externalPort, 8080)
      assert.strictEqual(fake.table.size, 1)
      // Forged answers carry epoch 1: the one taken is the gateway's own.
      assert.strictEqual((yield* mapper.status).uptimeSeconds, 0)
    }).pipe(Effect.scoped))

  it.live("lost requests are sent again, from the same port, until answered", () =>
    Effect.gen(function*() {
      const { fake, mapper } = yield* setup
      fake.faults.drop = 2
      yield* mapper.externalAddress
      const sent = yield* fake.requests
      assert.strictEqual(sent.length, 3)
      assert.isTrue(sent.every((r) => r.opcode === protocol.probeOpcode && r.fromPort === sent[0]!.fromPort))
    }).pipe(Effect.scoped))

  it.live("a silent gateway: GatewayUnreachable within the deadline, naming the gateway", () =>
    Effect.gen(function*() {
      const { fake, mapper } = yield* setup
      fake.faults.silent = true
      const started = Date.now()
      const error = yield* failureOf(mapper.map(request))
      assert.strictEqual(error._tag, "GatewayUnreachable")
      assert.include(error.message, `127.0.0.1:${fake.port}`)
      assert.include(error.message, "no answer after 5 tries")
      assert.isBelow(Date.now() - started, 2000)
    }).pipe(Effect.scoped))

  it.live("a reboot (the epoch went backwards) shows as lost state, once", () =>
    Effect.gen(function*() {
      const { fake, mapper } = yield* setup
      fake.faults.epoch = 9000
      yield* mapper.map(request)
      fake.reboot()
      const after = yield* mapper.status
      assert.isTrue(after.lostState)
      assert.strictEqual(after.stateLosses, 1)
      assert.strictEqual(after.uptimeSeconds, 0)
      assert.strictEqual(fake.table.size, 0)
      const next = yield* mapper.status
      assert.isFalse(next.lostState)
      assert.strictEqual(next.stateLosses, 1)
    }).pipe(Effect.scoped))
})
