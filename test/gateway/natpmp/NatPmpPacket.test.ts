/**
 * NAT-PMP on the wire (RFC 6886 §3.2-3.5): requests byte for byte, responses decoded to typed
 * values, and every malformed response to a problem naming its field.
 */
import { assert, describe, it } from "@effect/vitest"
import { Result } from "effect"
import { decodeResponse, encodeExternalAddressRequest, encodeMapRequest } from "../../../src/gateway/natpmp/NatPmpPacket.ts"

const bytes = (...values: ReadonlyArray<number>) => Uint8Array.from(values)
const ok = <A, E>(result: Result.Result<A, E>): A => {
  if (Result.isFailure(result)) assert.fail(`expected success, got ${JSON.stringify(result.failure)}`)
  return result.success
}
const problem = <A, E>(result: Result.Result<A, E>): E => {
  if (Result.isSuccess(result)) assert.fail(`expected a problem, got ${JSON.stringify(result.success)}`)
  return result.failure
}

describe("NAT-PMP requests", () => {
  it("asks for the external address with 2 bytes: version 0, opcode 0", () => {
    assert.deepStrictEqual(ok(encodeExternalAddressRequest()), bytes(0, 0))
  })

  it("maps TCP 8080 to internal 30000 for 3600 s in 12 bytes: opcode 2, reserved, ports, lifetime in seconds", () => {
    assert.deepStrictEqual(
      ok(encodeMapRequest({ protocol: "TCP", internalPort: 30000, suggestedExternalPort: 8080, lifetime: 3600 })),
      bytes(0, 2, 0, 0, 0x75, 0x30, 0x1f, 0x90, 0, 0, 0x0e, 0x10)
    )
  })

  it("maps UDP with opcode 1", () => {
    assert.deepStrictEqual(
      ok(encodeMapRequest({ protocol: "UDP", internalPort: 53, suggestedExternalPort: 5353, lifetime: 7200 })),
      bytes(0, 1, 0, 0, 0, 53, 0x14, 0xe9, 0, 0, 0x1c, 0x20)
    )
  })

  it("deletes with lifetime 0 and suggested external port 0 (RFC 6886 §3.4)", () => {
    assert.deepStrictEqual(
      ok(encodeMapRequest({ protocol: "TCP", internalPort: 30000, suggestedExternalPort: 0, lifetime: 0 })),
      bytes(0, 2, 0, 0, 0x75, 0x30, 0, 0, 0, 0, 0, 0)
    )
  })

  it("refuses internal port 0, which deletes every mapping of the client", () => {
    const failure = problem(encodeMapRequest({ protocol: "TCP", internalPort: 0, suggestedExternalPort: 0, lifetime: 0 }))
    assert.strictEqual(failure.field, "internalPort")
  })

  it("refuses a lifetime beyond 32 bits", () => {
    const failure = problem(encodeMapRequest({ protocol: "TCP", internalPort: 1, suggestedExternalPort: 1, lifetime: 2 ** 32 }))
    assert.strictEqual(failure.field, "lifetime")
  })
})

describe("NAT-PMP responses", () => {
  it("decodes the external address response", () => {
    assert.deepStrictEqual(ok(decodeResponse(bytes(0, 128, 0, 0, 0, 0, 0x12, 0x34, 122, 112, 219, 229))), {
      _tag: "ExternalAddress",
      epoch: 0x1234,
      externalAddress: "122.112.219.229"
    })
  })

  it("decodes a mapping response with the granted port and lifetime", () => {
    assert.deepStrictEqual(
      ok(decodeResponse(bytes(0, 130, 0, 0, 0, 0, 0, 7, 0x75, 0x30, 0x1f, 0x91, 0, 0, 0x0e, 0x10))),
      { _tag: "Mapping", protocol: "TCP", epoch: 7, internalPort: 30000, externalPort: 8081, lifetime: 3600 }
    )
    assert.strictEqual(
      (ok(decodeResponse(bytes(0, 129, 0, 0, 0, 0, 0, 7, 0, 53, 0, 53, 0, 0, 0, 1))) as { protocol: string }).protocol,
      "UDP"
    )
  })

  it("decodes an error response of 8 bytes (unsupported opcode) and of 16 (with the echoed internal port)", () => {
    assert.deepStrictEqual(ok(decodeResponse(bytes(0, 133, 0, 5, 0, 0, 0, 9))), {
      _tag: "Failure",
      requestOpcode: 5,
      epoch: 9,
      resultCode: 5,
      internalPort: undefined
    })
    assert.deepStrictEqual(ok(decodeResponse(bytes(0, 130, 0, 4, 0, 0, 0, 9, 0x75, 0x30, 0, 0, 0, 0, 0, 0))), {
      _tag: "Failure",
      requestOpcode: 2,
      epoch: 9,
      resultCode: 4,
      internalPort: 30000
    })
  })

  it.each([
    { name: "too short for the header", packet: bytes(0, 128, 0, 0, 0, 0, 0), field: undefined },
    { name: "another version", packet: bytes(2, 128, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4), field: "version" },
    { name: "a request, not a response", packet: bytes(0, 2, 0, 0, 0, 0, 0, 0), field: "opcode" },
    { name: "a success too short for the address", packet: bytes(0, 128, 0, 0, 0, 0, 0, 1, 122, 112), field: undefined },
    { name: "a success too short for the mapping", packet: bytes(0, 130, 0, 0, 0, 0, 0, 1, 0, 1, 0, 1), field: undefined },
    { name: "a success for an opcode never sent", packet: bytes(0, 140, 0, 0, 0, 0, 0, 1, 0, 1, 0, 1, 0, 0, 0, 1), field: "opcode" }
  ])("reports $name as a problem", ({ field, packet }) => {
    const failure = problem(decodeResponse(packet))
    assert.strictEqual(failure.field, field)
    assert.isAbove(failure.reason.length, 0)
  })
})
