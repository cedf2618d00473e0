/**
 * The NAT-PMP `PortMapper` against the fake gateway on 127.0.0.1 (real UDP, fast retransmission
 * bounds), in what only NAT-PMP does: its requests as sent, deletes by internal port, every
 * result code, a private WAN found before anything is mapped, garbage replies. What it shares
 * with PCP is in portcontrol/PortControlGateways.test.ts. The last tests run under TestClock
 * against a gateway in memory: the concurrency bound, and an epoch that stalls.
 */
import { assert, describe, it } from "@effect/vitest"
import { Context, Effect, Exit, Fiber, Layer } from "effect"
import { TestClock } from "effect/testing"
import { NatPmpGateway, type NatPmpGatewayOptions } from "../../../src/gateway/natpmp/NatPmpGateway.ts"
import { PortMapper } from "../../../src/gateway/PortMapper.ts"
import * as FakeNatPmp from "../../support/FakeNatPmp.ts"
import { makeMemoryGateway } from "../portcontrol/MemorySocket.ts"
import { failureOf } from "../../support/outcomes.ts"

const fast: Partial<NatPmpGatewayOptions> = { retransmission: { initial: "20 millis", deadline: "500 millis" } }

const request = FakeNatPmp.seedRequest

/** A fake gateway and a fresh client (its own layer) aimed at it. */
const setup = (options?: Partial<NatPmpGatewayOptions>) =>
  Effect.gen(function*() {
    const fake = yield* FakeNatPmp.make()
    const client = () =>
      Effect.map(
        Layer.build(NatPmpGateway.layer({ gateway: FakeNatPmp.LOOPBACK, port: fake.port, ...fast, ...options })),
        (context) => Context.get(context, PortMapper)
      )
    const mapper = yield* client()
    return { fake, mapper, client }
  })


describe("NatPmpGateway over UDP", () => {
  it.live("status: router, epoch, classified external address, local address", () =>
    Effect.gen(function*() {
      const { fake, mapper } = yield* setup()
      fake.faults.epoch = 4242
      const status = yield* mapper.status
      assert.deepStrictEqual(status, {
        router: `127.0.0.1:${fake.port}`,
        protocol: "nat-pmp",
        connected: true,
        uptimeSeconds: 4242,
        externalAddress: { ip: "122.112.219.229", class: "public" },
        localAddress: "127.0.0.1",
        selection: "127.0.0.1, set by --gateway-address",
        lostState: false,
        stateLosses: 0
      })
      assert.strictEqual(yield* mapper.selection ?? Effect.succeed(undefined), "127.0.0.1, set by --gateway-address")
      assert.isFalse(mapper.capabilities.readsTable)
      assert.isTrue(mapper.capabilities.deletesByInternalPort)
      assert.isUndefined(mapper.capabilities.drawNonce)
      assert.isUndefined(yield* mapper.get(8080, "TCP"))
      assert.isUndefined(yield* mapper.list)
      assert.deepStrictEqual(yield* mapper.externalAddress, { ip: "122.112.219.229", class: "public" })
    }).pipe(Effect.scoped))

  it.live("map sends opcode 2 with the ports and the lifetime in seconds, and returns what was granted", () =>
    Effect.gen(function*() {
      const { fake, mapper } = yield* setup()
      const granted = yield* mapper.map(request)
      assert.deepStrictEqual(granted, {
        externalPort: 8080,
        protocol: "TCP",
        internalClient: "127.0.0.1",
        internalPort: 30000,
        description: request.description,
        leaseSeconds: 3600
      })
      const sent = (yield* fake.requests).map((r) => Array.from(r.bytes))
      assert.deepStrictEqual(sent, [[0, 0], [0, 2, 0, 0, 0x75, 0x30, 0x1f, 0x90, 0, 0, 0x0e, 0x10]])
      assert.deepStrictEqual(Array.from(fake.table.values()).map((m) => [m.externalPort, m.internalClient, m.internalPort]), [
        [8080, "127.0.0.1", 30000]
      ])
    }).pipe(Effect.scoped))

  it.live("a lease of 0 asks for the default lifetime: NAT-PMP's 0 would delete", () =>
    Effect.gen(function*() {
      const { fake, mapper } = yield* setup({ defaultLifetimeSeconds: 600 })
      const granted = yield* mapper.map({ ...request, protocol: "UDP", leaseSeconds: 0 })
      assert.strictEqual(granted.leaseSeconds, 600)
      const last = (yield* fake.requests).at(-1)!
      assert.strictEqual(last.opcode, 1)
      assert.strictEqual(last.lifetime, 600)
    }).pipe(Effect.scoped))

  it.live("unmap deletes by internal port with lifetime 0, from memory or from the caller's record", () =>
    Effect.gen(function*() {
      const { client, fake, mapper } = yield* setup()
      yield* mapper.map(request)
      yield* mapper.unmap({ externalPort: 8080, protocol: "TCP" })
      const deletion = (yield* fake.requests).at(-1)!
      assert.deepStrictEqual(Array.from(deletion.bytes), [0, 2, 0, 0, 0x75, 0x30, 0, 0, 0, 0, 0, 0])
      assert.strictEqual(fake.table.size, 0)

      yield* mapper.map(request)
      const restarted = yield* client()
      yield* restarted.unmap({ externalPort: 8080, protocol: "TCP", internalPort: 30000 })
      assert.strictEqual(fake.table.size, 0)
      // Already gone: still a success.
      yield* restarted.unmap({ externalPort: 8080, protocol: "TCP", internalPort: 30000 })
    }).pipe(Effect.scoped))

  it.live("unmap without an internal port it can know: InvalidMapping, nothing sent", () =>
    Effect.gen(function*() {
      const { fake, mapper } = yield* setup()
      const error = yield* failureOf(mapper.unmap({ externalPort: 8080, protocol: "TCP" }))
      assert.strictEqual(error._tag, "InvalidMapping")
      assert.strictEqual(error._tag === "InvalidMapping" ? error.field : "", "internalPort")
      assert.strictEqual((yield* fake.requests).length, 0)
    }).pipe(Effect.scoped))

  it.live("a private or missing WAN: DoubleNat before anything is mapped; status says not connected", () =>
    Effect.gen(function*() {
      const { fake, mapper } = yield* setup()
      fake.externalAddress = "10.0.0.2"
      const error = yield* failureOf(mapper.map(request))
      assert.strictEqual(error._tag, "DoubleNat")
      assert.deepStrictEqual((yield* fake.requests).map((r) => r.opcode), [0])
      assert.strictEqual(fake.table.size, 0)
      const status = yield* mapper.status
      assert.isFalse(status.connected)
      assert.deepStrictEqual(status.externalAddress, { ip: undefined, class: "missing" })
    }).pipe(Effect.scoped))

  it.live.each([
    { code: 1, tag: "PortControlError", name: "UNSUPPORTED_VERSION", retryable: false },
    { code: 2, tag: "PortControlError", name: "NOT_AUTHORIZED", retryable: false },
    { code: 3, tag: "DoubleNat", name: undefined, retryable: true },
    { code: 4, tag: "PortControlError", name: "OUT_OF_RESOURCES", retryable: true },
    { code: 5, tag: "PortControlError", name: "UNSUPPORTED_OPCODE", retryable: false },
    { code: 17, tag: "PortControlError", name: "unknown result code", retryable: false }
  ])("result code $code on map → $tag", ({ code, name, retryable, tag }) =>
    Effect.gen(function*() {
      const { fake, mapper } = yield* setup()
      fake.faults.resultCode = code
      fake.faults.resultCodeOn = "map"
      const error = yield* failureOf(mapper.map(request))
      assert.strictEqual(error._tag, tag)
      assert.strictEqual(error.retryable, retryable)
      if (error._tag === "PortControlError") {
        assert.strictEqual(error.code, code)
        assert.strictEqual(error.codeName, name)
        assert.strictEqual(error.action, "map TCP 8080")
        assert.strictEqual(error.router, `127.0.0.1:${fake.port}`)
        assert.include(error.message, `NAT-PMP result ${code}`)
      }
    }).pipe(Effect.scoped))

  it.live.each([1, 2, 4, 5])("result code %i on the external-address request → PortControlError", (code) =>
    Effect.gen(function*() {
      const { fake, mapper } = yield* setup()
      fake.faults.resultCode = code
      const error = yield* failureOf(mapper.externalAddress)
      assert.strictEqual(error._tag, "PortControlError")
      assert.strictEqual(error._tag === "PortControlError" ? error.code : 0, code)
    }).pipe(Effect.scoped))


  it.live("garbage before the answer is skipped", () =>
    Effect.gen(function*() {
      const { fake, mapper } = yield* setup()
      fake.faults.garbage = [Uint8Array.from([1, 2, 3]), new TextEncoder().encode("HTTP/1.1 200 OK\r\n\r\n"), new Uint8Array(16)]
      assert.strictEqual((yield* mapper.map(request)).externalPort, 8080)
    }).pipe(Effect.scoped))
})

describe("NatPmpGateway under TestClock", () => {
  it.effect("no more requests in flight than the concurrency allows", () =>
    Effect.gen(function*() {
      const gateway = yield* makeMemoryGateway()
      const mapper = yield* Effect.map(
        Layer.build(NatPmpGateway.layer({
          gateway: "192.168.77.1",
          localAddress: "192.168.77.10",
          openSocket: gateway.open,
          concurrency: 2
        })),
        (context) => Context.get(context, PortMapper)
      )
      const fibers = yield* Effect.forEach([1, 2, 3, 4], () => Effect.forkChild(Effect.exit(mapper.status)))
      yield* TestClock.adjust("1 millis")
      assert.strictEqual(yield* gateway.opened, 2)
      yield* TestClock.adjust("15 seconds")
      assert.strictEqual(yield* gateway.opened, 4)
      yield* TestClock.adjust("15 seconds")
      const exits = yield* Effect.forEach(fibers, Fiber.join)
      assert.isTrue(exits.every(Exit.isFailure))
    }).pipe(Effect.scoped))


  it.effect("an epoch that stalls while a minute passes is lost state", () =>
    Effect.gen(function*() {
      const gateway = yield* makeMemoryGateway(() => [{
        address: "192.168.77.1",
        port: 5351,
        payload: Uint8Array.from([0, 128, 0, 0, 0, 0, 0, 100, 122, 112, 219, 229])
      }])
      const mapper = yield* Effect.map(
        Layer.build(NatPmpGateway.layer({ gateway: "192.168.77.1", localAddress: "192.168.77.10", openSocket: gateway.open })),
        (context) => Context.get(context, PortMapper)
      )
      const first = yield* mapper.status
      assert.isFalse(first.lostState)
      yield* TestClock.adjust("60 seconds")
      const fiber = yield* Effect.forkChild(mapper.status)
      const second = yield* Fiber.join(fiber)
      assert.isTrue(second.lostState)
      assert.strictEqual(second.uptimeSeconds, 100)
      assert.deepStrictEqual((yield* gateway.sent).map((sent) => Array.from(sent.payload)), [[0, 0], [0, 0]])
    }).pipe(Effect.scoped))
})
