/**
 * The PCP `PortMapper` against the fake gateway on 127.0.0.1 (real UDP, fast retransmission
 * bounds), in what only PCP does: the MAP request as sent, one nonce per mapping that a fresh
 * client can renew and delete with, every result code, a private WAN, a NAT-PMP-only gateway and
 * the status probe. What it shares with NAT-PMP is in portcontrol/PortControlGateways.test.ts.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Layer } from "effect"
import { PcpGateway, type PcpGatewayOptions } from "../../../src/gateway/pcp/PcpGateway.ts"
import { PortMapper } from "../../../src/gateway/PortMapper.ts"
import * as FakeNatPmp from "../../support/FakeNatPmp.ts"
import { failureOf, u16 } from "../../support/outcomes.ts"

const fast: Partial<PcpGatewayOptions> = { retransmission: { initial: "20 millis", jitter: 0, deadline: "500 millis" } }

const request = FakeNatPmp.seedRequest

const setup = (options?: Partial<PcpGatewayOptions>) =>
  Effect.gen(function*() {
    const fake = yield* FakeNatPmp.make()
    const client = (more?: Partial<PcpGatewayOptions>) =>
      Effect.map(
        Layer.build(PcpGateway.layer({ gateway: FakeNatPmp.LOOPBACK, port: fake.port, ...fast, ...options, ...more })),
        (context) => Context.get(context, PortMapper)
      )
    const mapper = yield* client()
    return { fake, mapper, client }
  })

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex")

describe("PcpGateway over UDP", () => {
  it.live("map sends MAP with our address IPv4-mapped, a fresh nonce, the requested port and a zero address", () =>
    Effect.gen(function*() {
      const { fake, mapper } = yield* setup()
      const granted = yield* mapper.map(request)
      assert.match(granted.nonce ?? "", /^[0-9a-f]{24}$/)
      assert.deepStrictEqual({ ...granted, nonce: undefined }, {
        externalPort: 8080,
        protocol: "TCP",
        internalClient: "127.0.0.1",
        internalPort: 30000,
        description: request.description,
        leaseSeconds: 3600,
        nonce: undefined
      })
      const [sent] = yield* fake.requests
      assert.strictEqual(sent!.bytes.length, 60)
      assert.strictEqual(
        hex(sent!.bytes),
        "02010000" + "00000e10" + "00000000000000000000ffff7f000001" + granted.nonce + "06000000" + "7530" + "1f90" +
          "00000000000000000000ffff00000000"
      )
      assert.strictEqual(fake.table.get("TCP/8080")!.nonce, granted.nonce)
    }).pipe(Effect.scoped))

  it.live("each mapping gets a nonce of its own", () =>
    Effect.gen(function*() {
      const { mapper } = yield* setup()
      const a = yield* mapper.map(request)
      const b = yield* mapper.map({ ...request, externalPort: 8443, internalPort: 30001 })
      assert.notStrictEqual(a.nonce, b.nonce)
    }).pipe(Effect.scoped))

  it.live("a fresh client renews and deletes with the recorded nonce", () =>
    Effect.gen(function*() {
      const { client, fake, mapper } = yield* setup()
      const granted = yield* mapper.map(request)
      const restarted = yield* client()
      const renewed = yield* restarted.map({ ...request, nonce: granted.nonce })
      assert.strictEqual(renewed.nonce, granted.nonce)
      assert.strictEqual(hex((yield* fake.requests).at(-1)!.bytes.subarray(24, 36)), granted.nonce)
      const again = yield* client()
      yield* again.unmap({ externalPort: 8080, protocol: "TCP", internalPort: 30000, nonce: granted.nonce })
      const deletion = (yield* fake.requests).at(-1)!
      assert.strictEqual(deletion.lifetime, 0)
      assert.strictEqual(hex(deletion.bytes.subarray(24, 36)), granted.nonce)
      assert.strictEqual(u16(deletion.bytes, 40), 30000)
      assert.strictEqual(u16(deletion.bytes, 42), 0)
      assert.strictEqual(fake.table.size, 0)
    }).pipe(Effect.scoped))

  it.live("the client that mapped deletes from memory; an absent mapping counts as deleted", () =>
    Effect.gen(function*() {
      const { fake, mapper } = yield* setup()
      yield* mapper.map(request)
      yield* mapper.unmap({ externalPort: 8080, protocol: "TCP" })
      assert.strictEqual(fake.table.size, 0)
      // miniupnpd answers NO_RESOURCES when nothing matches.
      yield* mapper.unmap({ externalPort: 8080, protocol: "TCP", internalPort: 30000, nonce: "0".repeat(24) })
    }).pipe(Effect.scoped))

  it.live("deleting or renewing another nonce's mapping: PortConflict, and the mapping stays", () =>
    Effect.gen(function*() {
      const { fake, mapper } = yield* setup()
      yield* mapper.map(request)
      const other = "ab".repeat(12)
      const deletion = yield* failureOf(mapper.unmap({ externalPort: 8080, protocol: "TCP", internalPort: 30000, nonce: other }))
      assert.strictEqual(deletion._tag, "PortConflict")
      assert.include(deletion.message, "another nonce")
      const renewal = yield* failureOf(mapper.map({ ...request, nonce: other }))
      assert.strictEqual(renewal._tag, "PortConflict")
      assert.strictEqual(fake.table.size, 1)
    }).pipe(Effect.scoped))

  it.live("unmap without a nonce or internal port: InvalidMapping, nothing sent", () =>
    Effect.gen(function*() {
      const { fake, mapper } = yield* setup()
      const noNonce = yield* failureOf(mapper.unmap({ externalPort: 8080, protocol: "TCP", internalPort: 30000 }))
      assert.strictEqual(noNonce._tag === "InvalidMapping" ? noNonce.field : "", "nonce")
      const noPort = yield* failureOf(mapper.unmap({ externalPort: 8080, protocol: "TCP", nonce: "ab".repeat(12) }))
      assert.strictEqual(noPort._tag === "InvalidMapping" ? noPort.field : "", "internalPort")
      const badNonce = yield* failureOf(mapper.map({ ...request, nonce: "xyz" }))
      assert.strictEqual(badNonce._tag === "InvalidMapping" ? badNonce.field : "", "nonce")
      assert.strictEqual((yield* fake.requests).length, 0)
    }).pipe(Effect.scoped))

  it.live("a private external address: the mapping is released and the call fails with DoubleNat", () =>
    Effect.gen(function*() {
      const { fake, mapper } = yield* setup()
      fake.externalAddress = "10.0.0.2"
      const error = yield* failureOf(mapper.map(request))
      assert.strictEqual(error._tag, "DoubleNat")
      assert.strictEqual(error._tag === "DoubleNat" ? error.externalIp : "", "10.0.0.2")
      assert.strictEqual(fake.table.size, 0)
      const status = yield* mapper.status
      assert.deepStrictEqual(status.externalAddress, { ip: "10.0.0.2", class: "private" })
    }).pipe(Effect.scoped))

  it.live.each([
    { code: 1, tag: "PortControlError", name: "UNSUPP_VERSION", retryable: false },
    { code: 2, tag: "PortControlError", name: "NOT_AUTHORIZED", retryable: false },
    { code: 3, tag: "PortControlError", name: "MALFORMED_REQUEST", retryable: false },
    { code: 4, tag: "PortControlError", name: "UNSUPP_OPCODE", retryable: false },
    { code: 5, tag: "PortControlError", name: "UNSUPP_OPTION", retryable: false },
    { code: 6, tag: "PortControlError", name: "MALFORMED_OPTION", retryable: false },
    { code: 7, tag: "DoubleNat", name: undefined, retryable: true },
    { code: 8, tag: "PortControlError", name: "NO_RESOURCES", retryable: true },
    { code: 9, tag: "PortControlError", name: "UNSUPP_PROTOCOL", retryable: false },
    { code: 10, tag: "PortControlError", name: "USER_EX_QUOTA", retryable: true },
    { code: 11, tag: "PortControlError", name: "CANNOT_PROVIDE_EXTERNAL", retryable: false },
    { code: 12, tag: "PortControlError", name: "ADDRESS_MISMATCH", retryable: false },
    { code: 13, tag: "PortControlError", name: "EXCESSIVE_REMOTE_PEERS", retryable: false }
  ])("result code $code on MAP → $tag", ({ code, name, retryable, tag }) =>
    Effect.gen(function*() {
      const { fake, mapper } = yield* setup()
      fake.faults.resultCode = code
      const error = yield* failureOf(mapper.map(request))
      assert.strictEqual(error._tag, tag)
      assert.strictEqual(error.retryable, retryable)
      if (error._tag === "PortControlError") {
        assert.strictEqual(error.protocol, "pcp")
        assert.strictEqual(error.code, code)
        assert.strictEqual(error.codeName, name)
        assert.strictEqual(error.action, "MAP TCP 8080")
        assert.include(error.message, `PCP result ${code} (${name})`)
      }
    }).pipe(Effect.scoped))

  it.live("ADDRESS_MISMATCH names the address sent and the one we sent it from", () =>
    Effect.gen(function*() {
      const { fake, mapper } = yield* setup({ clientAddress: "127.0.0.9" })
      const error = yield* failureOf(mapper.map(request))
      assert.strictEqual(error._tag === "PortControlError" ? error.code : 0, 12)
      assert.include(error.message, "client IP 127.0.0.9 from 127.0.0.1")
      assert.strictEqual(hex((yield* fake.requests)[0]!.bytes.subarray(20, 24)), "7f000009")
    }).pipe(Effect.scoped))

  it.live("a NAT-PMP-only gateway: PortControlError UNSUPP_VERSION saying so", () =>
    Effect.gen(function*() {
      const { fake, mapper } = yield* setup()
      fake.faults.natpmpOnly = true
      const error = yield* failureOf(mapper.status)
      assert.strictEqual(error._tag === "PortControlError" ? error.code : 0, 1)
      assert.include(error.message, "NAT-PMP only")
    }).pipe(Effect.scoped))

  it.live("status probes with a harmless deletion and reports epoch and external address", () =>
    Effect.gen(function*() {
      const { fake, mapper } = yield* setup()
      fake.faults.epoch = 777
      const status = yield* mapper.status
      assert.deepStrictEqual(status, {
        router: `127.0.0.1:${fake.port}`,
        protocol: "pcp",
        connected: true,
        uptimeSeconds: 777,
        externalAddress: { ip: "122.112.219.229", class: "public" },
        localAddress: "127.0.0.1",
        selection: "127.0.0.1, set by --gateway-address",
        lostState: false,
        stateLosses: 0
      })
      const [probe] = yield* fake.requests
      assert.strictEqual(probe!.lifetime, 0)
      assert.strictEqual(u16(probe!.bytes, 40), 9)
      assert.strictEqual(fake.table.size, 0)
      assert.isFalse(mapper.capabilities.readsTable)
      assert.isFalse(mapper.capabilities.deletesByInternalPort)
      assert.match(yield* mapper.capabilities.drawNonce ?? Effect.succeed(""), /^[0-9a-f]{24}$/)
      assert.isUndefined(yield* mapper.list)
    }).pipe(Effect.scoped))

  it.live("a gateway that copies the zero address back: the address of the last mapping granted", () =>
    Effect.gen(function*() {
      const { fake, mapper } = yield* setup()
      fake.faults.zeroAddressOnDelete = true
      assert.deepStrictEqual(yield* mapper.externalAddress, { ip: undefined, class: "missing" })
      yield* mapper.map(request)
      assert.deepStrictEqual(yield* mapper.externalAddress, { ip: "122.112.219.229", class: "public" })
    }).pipe(Effect.scoped))

  it.live("no WAN (NETWORK_FAILURE): status not connected; map fails with DoubleNat", () =>
    Effect.gen(function*() {
      const { fake, mapper } = yield* setup()
      fake.externalAddress = ""
      assert.isFalse((yield* mapper.status).connected)
      assert.strictEqual((yield* failureOf(mapper.map(request)))._tag, "DoubleNat")
    }).pipe(Effect.scoped))

})
