/**
 * Whatever arrives on a PCP socket, the decoder answers with a typed response or a typed
 * problem, never a throw; a response it accepts holds only in-range values; and a MAP response
 * built by hand from random fields decodes to exactly those fields.
 */
import { assert, describe, it } from "@effect/vitest"
import { Arbitrary, Effect, Result, Schema } from "effect"
import { decodeResponse, type PcpResponse } from "../../../src/gateway/pcp/PcpPacket.ts"
import { Byte, inRange, mutatedFrom, randomBytes as anyBytes, U16, U32 } from "../../support/byteArbitraries.ts"

const SUCCESS = Buffer.from(
  "0281000000000e10000004d2000000000000000000000000" +
    "0102030405060708090a0b0c060000007530" + "1f90" + "00000000000000000000ffff7a70dbe5",
  "hex"
)
const SAMPLES = [
  SUCCESS,
  Buffer.from([...SUCCESS.subarray(0, 3), 2, ...SUCCESS.subarray(4)]),
  Buffer.from("028100030000000000000005000000000000000000000000", "hex"),
  Buffer.from([0, 129, 0, 1, 0, 0, 0, 42])
].map((buffer) => Uint8Array.from(buffer))

const randomBytes = anyBytes(120)
const mutated = mutatedFrom(SAMPLES, { maxPosition: 70, maxEdits: 6 })

const wellFormed = (response: PcpResponse): boolean => {
  switch (response._tag) {
    case "Map":
      return inRange(response.resultCode, 255) && inRange(response.lifetime, 0xffff_ffff) &&
        inRange(response.epoch, 0xffff_ffff) && /^[0-9a-f]{24}$/.test(response.nonce) &&
        inRange(response.internalPort, 0xffff) && inRange(response.externalPort, 0xffff) &&
        (response.protocol === "TCP" || response.protocol === "UDP") && response.externalAddress.length > 0
    case "Failure":
      return response.resultCode > 0 && inRange(response.resultCode, 255) && inRange(response.requestOpcode, 127)
    case "UnsupportedVersion":
      return response.serverVersion !== 2 && inRange(response.serverVersion, 255)
  }
}

/** A typed outcome; a throw fails the property by itself. */
const typed = (payload: Uint8Array): boolean => {
  const decoded = decodeResponse(payload)
  return Result.isSuccess(decoded)
    ? wellFormed(decoded.success)
    : decoded.failure.reason.length > 0 && (decoded.failure.field === undefined || decoded.failure.field.length > 0)
}

const runs = { arbitrary: { runs: 500 } }

describe("PCP decoder properties", () => {
  it.effect.prop("random bytes decode to a typed outcome", [randomBytes], ([payload]) => Effect.sync(() => typed(payload)), runs)

  it.effect.prop("mutated responses decode to a typed outcome", [mutated], ([payload]) => Effect.sync(() => typed(payload)), runs)

  it.effect.prop(
    "a MAP response built from random fields decodes to those fields",
    [Arbitrary.schema(Schema.Struct({
      udp: Schema.Boolean,
      resultCode: Byte.check(Schema.isBetween({ minimum: 0, maximum: 13 })).check(Schema.makeFilter((n: number) => n !== 1)),
      lifetime: U32,
      epoch: U32,
      nonce: Schema.String.check(Schema.isPattern(/^[0-9a-f]{24}$/)),
      internalPort: U16,
      externalPort: U16,
      address: Schema.Tuple([Byte, Byte, Byte, Byte])
    }))],
    ([fields]) =>
      Effect.sync(() => {
        const packet = Buffer.alloc(60)
        packet[0] = 2
        packet[1] = 0x81
        packet[3] = fields.resultCode
        packet.writeUInt32BE(fields.lifetime, 4)
        packet.writeUInt32BE(fields.epoch, 8)
        packet.write(fields.nonce, 24, "hex")
        packet[36] = fields.udp ? 17 : 6
        packet.writeUInt16BE(fields.internalPort, 40)
        packet.writeUInt16BE(fields.externalPort, 42)
        packet[54] = 0xff
        packet[55] = 0xff
        packet.set(fields.address, 56)
        const decoded = decodeResponse(packet)
        assert.deepStrictEqual(Result.getOrUndefined(decoded), {
          _tag: "Map",
          resultCode: fields.resultCode,
          lifetime: fields.lifetime,
          epoch: fields.epoch,
          nonce: fields.nonce,
          protocol: fields.udp ? "UDP" : "TCP",
          internalPort: fields.internalPort,
          externalPort: fields.externalPort,
          externalAddress: fields.address.join(".")
        })
      }),
    { arbitrary: { runs: 200 } }
  )
})
