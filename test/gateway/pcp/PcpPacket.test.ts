/**
 * PCP on the wire (RFC 6887 §7.1, §7.2, §11.1): the MAP request byte for byte, responses
 * decoded to typed values (including a NAT-PMP-only gateway's version-0 answer), and every
 * malformed response to a problem naming its field.
 */
import { assert, describe, it } from "@effect/vitest"
import { Result } from "effect"
import { decodeResponse, encodeMapRequest } from "../../../src/gateway/pcp/PcpPacket.ts"

const ok = <A, E>(result: Result.Result<A, E>): A => {
  if (Result.isFailure(result)) assert.fail(`expected success, got ${JSON.stringify(result.failure)}`)
  return result.success
}
const problem = <A, E>(result: Result.Result<A, E>): E => {
  if (Result.isSuccess(result)) assert.fail(`expected a problem, got ${JSON.stringify(result.success)}`)
  return result.failure
}
const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex")
const fromHex = (text: string) => Uint8Array.from(Buffer.from(text.replace(/\s+/g, ""), "hex"))

const NONCE = "0102030405060708090a0b0c"

/** The 60-byte MAP request for TCP 30000 → 8080 from 192.168.77.10, lifetime 3600. */
const MAP_REQUEST = [
  "02 01 0000", // version 2, R=0 opcode MAP, reserved
  "00000e10", // lifetime 3600
  "00000000000000000000ffff c0a84d0a", // client IP ::ffff:192.168.77.10
  NONCE, // mapping nonce
  "06 000000", // protocol TCP, reserved
  "7530 1f90", // internal port 30000, suggested external port 8080
  "00000000000000000000ffff 00000000" // suggested external address ::ffff:0.0.0.0
].join("")

/** A success response to it: R bit, result 0, lifetime 3600, epoch 1234, 122.112.219.229:8080 assigned. */
const mapResponse = (fields: { result?: string; port?: string; nonce?: string } = {}) =>
  fromHex([
    `02 81 00 ${fields.result ?? "00"}`,
    "00000e10",
    "000004d2",
    "000000000000000000000000",
    fields.nonce ?? NONCE,
    "06 000000",
    `7530 ${fields.port ?? "1f90"}`,
    "00000000000000000000ffff 7a70dbe5"
  ].join(""))

describe("PCP requests", () => {
  it("encodes MAP as the 24-byte header and the 36-byte MAP body", () => {
    const encoded = ok(encodeMapRequest({
      lifetime: 3600,
      clientAddress: "192.168.77.10",
      nonce: NONCE,
      protocol: "TCP",
      internalPort: 30000,
      suggestedExternalPort: 8080,
      suggestedExternalAddress: "0.0.0.0"
    }))
    assert.strictEqual(encoded.length, 60)
    assert.strictEqual(hex(encoded), MAP_REQUEST.replace(/\s+/g, ""))
  })

  it("encodes UDP as protocol 17 and a deletion with lifetime 0 and port 0", () => {
    const encoded = ok(encodeMapRequest({
      lifetime: 0,
      clientAddress: "10.1.2.3",
      nonce: NONCE,
      protocol: "UDP",
      internalPort: 53,
      suggestedExternalPort: 0,
      suggestedExternalAddress: "0.0.0.0"
    }))
    assert.strictEqual(encoded[36], 17)
    assert.deepStrictEqual(Array.from(encoded.subarray(4, 8)), [0, 0, 0, 0])
    assert.deepStrictEqual(Array.from(encoded.subarray(42, 44)), [0, 0])
    assert.deepStrictEqual(Array.from(encoded.subarray(20, 24)), [10, 1, 2, 3])
  })

  it.each([
    { field: "nonce", change: { nonce: "0102" } },
    { field: "nonce", change: { nonce: "XX02030405060708090a0b0c" } },
    { field: "clientAddress", change: { clientAddress: "not-an-ip" } },
    { field: "internalPort", change: { internalPort: 0 } },
    { field: "lifetime", change: { lifetime: -1 } }
  ])("refuses a bad $field", ({ change, field }) => {
    const failure = problem(encodeMapRequest({
      lifetime: 60,
      clientAddress: "192.168.77.10",
      nonce: NONCE,
      protocol: "TCP",
      internalPort: 1,
      suggestedExternalPort: 1,
      suggestedExternalAddress: "0.0.0.0",
      ...change
    }))
    assert.strictEqual(failure.field, field)
  })
})

describe("PCP responses", () => {
  it("decodes a MAP success with the assigned port and IPv4 address", () => {
    assert.deepStrictEqual(ok(decodeResponse(mapResponse())), {
      _tag: "Map",
      resultCode: 0,
      lifetime: 3600,
      epoch: 1234,
      nonce: NONCE,
      protocol: "TCP",
      internalPort: 30000,
      externalPort: 8080,
      externalAddress: "122.112.219.229"
    })
  })

  it("decodes a MAP error that echoes the request, for matching by nonce", () => {
    const decoded = ok(decodeResponse(mapResponse({ result: "02" })))
    assert.strictEqual(decoded._tag, "Map")
    assert.strictEqual(decoded._tag === "Map" ? decoded.resultCode : -1, 2)
  })

  it("ignores PCP options after the MAP body", () => {
    const withOption = Uint8Array.from([...mapResponse(), 0x80, 0, 0, 0])
    assert.strictEqual(ok(decodeResponse(withOption))._tag, "Map")
  })

  it("decodes an error without the MAP fields as a bare failure", () => {
    const header = fromHex("02 81 00 03 00000000 00000005 000000000000000000000000")
    assert.deepStrictEqual(ok(decodeResponse(header)), { _tag: "Failure", requestOpcode: 1, resultCode: 3, epoch: 5 })
  })

  it("decodes a NAT-PMP-only gateway's version-0 answer, and a version-1 server's", () => {
    assert.deepStrictEqual(ok(decodeResponse(Uint8Array.from([0, 129, 0, 1, 0, 0, 0, 42]))), {
      _tag: "UnsupportedVersion",
      serverVersion: 0,
      epoch: 42
    })
    const v1 = fromHex("01 81 00 01 00000000 00000007 000000000000000000000000")
    assert.deepStrictEqual(ok(decodeResponse(v1)), { _tag: "UnsupportedVersion", serverVersion: 1, epoch: 7 })
  })

  it("decodes an IPv6 assigned address as IPv6 text", () => {
    const decoded = ok(decodeResponse(fromHex([
      "02 81 00 00 00000e10 000004d2 000000000000000000000000",
      NONCE,
      "06 000000 7530 1f90",
      "20010db8000000000000000000000001"
    ].join(""))))
    assert.strictEqual(decoded._tag === "Map" ? decoded.externalAddress : "", "2001:db8::1")
  })

  it.each([
    { name: "too short for the header", packet: fromHex("0281000000000e10"), field: undefined },
    { name: "a request echoed back", packet: fromHex(MAP_REQUEST), field: "opcode" },
    { name: "a success cut inside the MAP body", packet: mapResponse().subarray(0, 50), field: undefined },
    { name: "a success with protocol 99", packet: Uint8Array.from(mapResponse(), (b, i) => (i === 36 ? 99 : b)), field: "protocol" },
    { name: "a success for the ANNOUNCE opcode, never sent", packet: fromHex("02 80 00 00 00000000 00000005 000000000000000000000000"), field: "opcode" }
  ])("reports $name as a problem", ({ field, packet }) => {
    const failure = problem(decodeResponse(packet))
    assert.strictEqual(failure.field, field)
    assert.isAbove(failure.reason.length, 0)
  })
})
