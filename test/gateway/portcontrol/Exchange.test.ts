/**
 * One request and its answer, under TestClock: NAT-PMP's schedule (250 ms doubling, 9 sends),
 * PCP's (3 s doubling to 1024 s, ±10 %), the deadline that bounds both, and which datagrams
 * count as the answer (only the gateway's address and port, only a matching reply).
 */
import { assert, describe, it } from "@effect/vitest"
import { Arbitrary, Effect, Exit, Fiber, Random, Schema } from "effect"
import { TestClock } from "effect/testing"
import { type Endpoint, exchange, type Retransmission, retransmissionWaits, type Verdict } from "../../../src/gateway/portcontrol/Exchange.ts"
import { defaultNatPmpRetransmission } from "../../../src/gateway/natpmp/NatPmpGateway.ts"
import { defaultPcpRetransmission } from "../../../src/gateway/pcp/PcpGateway.ts"
import { makeMemoryGateway } from "./MemorySocket.ts"

const endpoint: Endpoint = { router: "192.168.77.1:5351", gateway: "192.168.77.1", port: 5351, localAddress: "192.168.77.10" }
const GATEWAY = { address: "192.168.77.1", port: 5351 }

/** The RFC 6886 schedule in full: 9 sends, no deadline in the way. */
const rfc6886: Retransmission = { ...defaultNatPmpRetransmission, deadline: "10 minutes" }

/** Accepts a datagram whose first byte is 42, ignores 7, finds anything else unusable. */
const match = (payload: Uint8Array): Verdict<string> =>
  payload[0] === 42
    ? { _tag: "Accept", value: `answer ${payload[1]}` }
    : payload[0] === 7
    ? { _tag: "Ignore", reason: "another request's" }
    : { _tag: "Unusable", field: "version", reason: "not 42" }

const request = { action: "test", payload: Uint8Array.from([1, 2, 3]), match }

describe("retransmission schedule", () => {
  it.effect("NAT-PMP sends 9 times, from 250 ms doubling (RFC 6886 §3.1), then gives up", () =>
    Effect.gen(function*() {
      const gateway = yield* makeMemoryGateway()
      const fiber = yield* Effect.forkChild(Effect.exit(exchange(endpoint, gateway.open, rfc6886, request)))
      yield* TestClock.adjust("200 seconds")
      const exit = yield* Fiber.join(fiber)
      const sent = yield* gateway.sent
      assert.deepStrictEqual(sent.map((s) => s.atMillis), [0, 250, 750, 1750, 3750, 7750, 15750, 31750, 63750])
      assert.isTrue(sent.every((s) => s.to === "192.168.77.1:5351"))
      assert.isTrue(Exit.isFailure(exit))
      const error = Exit.isFailure(exit) ? exit.cause.reasons[0] : undefined
      assert.include(JSON.stringify(error), "GatewayUnreachable")
      assert.include(JSON.stringify(error), "no answer after 9 tries in 127.8 s")
    }))

  it.effect("the default NAT-PMP deadline (15 s) cuts the schedule after 6 sends", () =>
    Effect.gen(function*() {
      const gateway = yield* makeMemoryGateway()
      const fiber = yield* Effect.forkChild(Effect.exit(exchange(endpoint, gateway.open, defaultNatPmpRetransmission, request)))
      yield* TestClock.adjust("14999 millis")
      assert.isUndefined(fiber.pollUnsafe())
      yield* TestClock.adjust("1 millis")
      const exit = yield* Fiber.join(fiber)
      assert.deepStrictEqual((yield* gateway.sent).map((s) => s.atMillis), [0, 250, 750, 1750, 3750, 7750])
      assert.isTrue(Exit.isFailure(exit))
    }))

  it.effect("PCP waits 3 s ±10 %, doubling (RFC 6887 §8.1.1), within the default 15 s deadline", () =>
    Effect.gen(function*() {
      const gateway = yield* makeMemoryGateway()
      const fiber = yield* Effect.forkChild(Effect.exit(exchange(endpoint, gateway.open, defaultPcpRetransmission, request)))
      // Past the deadline: jitter may place the last wait's end exactly on it.
      yield* TestClock.adjust("16 seconds")
      const exit = yield* Fiber.join(fiber)
      const times = (yield* gateway.sent).map((s) => s.atMillis)
      assert.strictEqual(times.length, 3)
      assert.strictEqual(times[0], 0)
      assert.isTrue(times[1]! >= 2700 && times[1]! <= 3300, `second send at ${times[1]}`)
      const secondWait = times[2]! - times[1]!
      assert.isTrue(secondWait >= 5400 && secondWait <= 6600, `third send ${secondWait} ms later`)
      assert.isTrue(Exit.isFailure(exit))
    }))

  it.effect.prop(
    "PCP waits stay within 1 ± 0.1 of min(3 s × 2^n, 1024 s) and never pass the deadline",
    [Arbitrary.schema(Schema.Struct({
      seed: Schema.Int,
      deadlineSeconds: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 20_000 }))
    }))],
    ([{ deadlineSeconds, seed }]) =>
      Effect.gen(function*() {
        const waits = yield* retransmissionWaits({ ...defaultPcpRetransmission, deadline: `${deadlineSeconds} seconds` }).pipe(
          Random.withSeed(seed)
        )
        const deadline = deadlineSeconds * 1000
        const total = waits.reduce((a, b) => a + b, 0)
        assert.isTrue(total <= deadline + 1e-6, `total ${total} > ${deadline}`)
        waits.forEach((wait, n) => {
          const base = Math.min(3000 * 2 ** n, 1_024_000)
          const last = n === waits.length - 1
          assert.isTrue(wait <= base * 1.1 + 1e-6, `wait ${n} = ${wait}`)
          if (!last) assert.isTrue(wait >= base * 0.9 - 1e-6, `wait ${n} = ${wait}`)
        })
      }),
    { arbitrary: { runs: 100 } }
  )
})

describe("answers", () => {
  it.effect("an answer stops the retransmissions", () =>
    Effect.gen(function*() {
      const gateway = yield* makeMemoryGateway((_, count) => count === 2 ? [{ ...GATEWAY, payload: Uint8Array.from([42, 2]) }] : [])
      const fiber = yield* Effect.forkChild(exchange(endpoint, gateway.open, rfc6886, request))
      yield* TestClock.adjust("1 second")
      assert.strictEqual(yield* Fiber.join(fiber), "answer 2")
      yield* TestClock.adjust("200 seconds")
      assert.strictEqual((yield* gateway.sent).length, 2)
    }))

  it.effect("answers from another address or another port are ignored; the gateway's is taken", () =>
    Effect.gen(function*() {
      const gateway = yield* makeMemoryGateway(() => [
        { address: "192.168.77.50", port: 5351, payload: Uint8Array.from([42, 1]) },
        { address: "192.168.77.1", port: 5350, payload: Uint8Array.from([42, 2]) },
        { address: "192.168.77.1", port: 5351, payload: Uint8Array.from([42, 3]) }
      ])
      assert.strictEqual(yield* exchange(endpoint, gateway.open, rfc6886, request), "answer 3")
    }))

  it.effect("a link-local gateway with its interface (numeric here): sent to that scope, its answer taken", () =>
    Effect.gen(function*() {
      const gateway = yield* makeMemoryGateway(() => [{ address: "fe80::1", port: 5351, payload: Uint8Array.from([42, 4]) }])
      const scoped: Endpoint = { router: "pcp://[fe80::1%1]:5351", gateway: "fe80::1%1", port: 5351, localAddress: "2001:db8:2::10" }
      assert.strictEqual(yield* exchange(scoped, gateway.open, rfc6886, request), "answer 4")
      assert.deepStrictEqual((yield* gateway.sent).map((s) => s.to), ["[fe80::1%1]:5351"])
    }))

  it.effect("a gateway naming an interface this machine does not have: unreachable, saying which", () =>
    Effect.gen(function*() {
      const gateway = yield* makeMemoryGateway()
      const scoped: Endpoint = { router: "pcp://[fe80::1%nosuch0]:5351", gateway: "fe80::1%nosuch0", port: 5351, localAddress: "2001:db8:2::10" }
      const error = yield* Effect.flip(exchange(scoped, gateway.open, rfc6886, request))
      assert.strictEqual(error._tag, "GatewayUnreachable")
      assert.match(error.message, /fe80::1%nosuch0/)
      assert.deepStrictEqual(yield* gateway.sent, [])
    }))

  it.effect("a reply to another request is ignored and the request sent again", () =>
    Effect.gen(function*() {
      const gateway = yield* makeMemoryGateway((_, count) =>
        count === 1 ? [{ ...GATEWAY, payload: Uint8Array.from([7]) }] : [{ ...GATEWAY, payload: Uint8Array.from([42, 9]) }]
      )
      const fiber = yield* Effect.forkChild(exchange(endpoint, gateway.open, rfc6886, request))
      yield* TestClock.adjust("250 millis")
      assert.strictEqual(yield* Fiber.join(fiber), "answer 9")
      assert.strictEqual((yield* gateway.sent).length, 2)
    }))

  it.effect("only unusable replies: GatewayProtocolError naming the field", () =>
    Effect.gen(function*() {
      const gateway = yield* makeMemoryGateway(() => [{ ...GATEWAY, payload: Uint8Array.from([99]) }])
      const fiber = yield* Effect.forkChild(Effect.flip(exchange(endpoint, gateway.open, defaultNatPmpRetransmission, request)))
      yield* TestClock.adjust("15 seconds")
      const error = yield* Fiber.join(fiber)
      assert.strictEqual(error._tag, "GatewayProtocolError")
      assert.strictEqual(error._tag === "GatewayProtocolError" ? error.field : undefined, "version")
      assert.strictEqual(error.router, "192.168.77.1:5351")
    }))

  it.effect("each exchange opens a socket of its own", () =>
    Effect.gen(function*() {
      const gateway = yield* makeMemoryGateway(() => [{ ...GATEWAY, payload: Uint8Array.from([42, 0]) }])
      yield* exchange(endpoint, gateway.open, rfc6886, request)
      yield* exchange(endpoint, gateway.open, rfc6886, request)
      assert.strictEqual(yield* gateway.opened, 2)
    }))
})
