/**
 * Whatever arrives on a NAT-PMP socket, the decoder answers with a typed response or a typed
 * problem, never a throw; a response it accepts holds only in-range values; and a response
 * built by hand from random fields decodes to exactly those fields.
 */
import { assert, describe, it } from "@effect/vitest"
import { Arbitrary, Effect, Result, Schema } from "effect"
import { decodeResponse, type NatPmpResponse } from "../../../src/gateway/natpmp/NatPmpPacket.ts"
import { inRange, mutatedFrom, randomBytes as anyBytes, U16, U32 } from "../../support/byteArbitraries.ts"

const SAMPLES = [
  [0, 128, 0, 0, 0, 0, 1, 0, 122, 112, 219, 229],
  [0, 130, 0, 0, 0, 0, 1, 0, 0x75, 0x30, 0x1f, 0x90, 0, 0, 0x0e, 0x10],
  [0, 129, 0, 3, 0, 0, 1, 0, 0, 53, 0, 0, 0, 0, 0, 0],
  [0, 133, 0, 5, 0, 0, 1, 0]
].map((values) => Uint8Array.from(values))

const randomBytes = anyBytes(40)
const mutated = mutatedFrom(SAMPLES, { maxPosition: 31, maxEdits: 6 })

const wellFormed = (response: NatPmpResponse): boolean => {
  switch (response._tag) {
    case "ExternalAddress":
      return inRange(response.epoch, 0xffff_ffff) && /^\d{1,3}(\.\d{1,3}){3}$/.test(response.externalAddress)
    case "Mapping":
      return inRange(response.epoch, 0xffff_ffff) && inRange(response.internalPort, 0xffff) &&
        inRange(response.externalPort, 0xffff) && inRange(response.lifetime, 0xffff_ffff) &&
        (response.protocol === "TCP" || response.protocol === "UDP")
    case "Failure":
      return response.resultCode > 0 && inRange(response.resultCode, 0xffff) && inRange(response.requestOpcode, 127)
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

describe("NAT-PMP decoder properties", () => {
  it.effect.prop("random bytes decode to a typed outcome", [randomBytes], ([payload]) => Effect.sync(() => typed(payload)), runs)

  it.effect.prop("mutated responses decode to a typed outcome", [mutated], ([payload]) => Effect.sync(() => typed(payload)), runs)

  it.effect.prop(
    "a mapping response built from random fields decodes to those fields",
    [Arbitrary.schema(Schema.Struct({
      udp: Schema.Boolean,
      epoch: U32,
      internalPort: U16,
      externalPort: U16,
      lifetime: U32
    }))],
    ([fields]) =>
      Effect.sync(() => {
        const packet = Buffer.alloc(16)
        packet[1] = fields.udp ? 129 : 130
        packet.writeUInt32BE(fields.epoch, 4)
        packet.writeUInt16BE(fields.internalPort, 8)
        packet.writeUInt16BE(fields.externalPort, 10)
        packet.writeUInt32BE(fields.lifetime, 12)
        const decoded = decodeResponse(packet)
        assert.isTrue(Result.isSuccess(decoded))
        assert.deepStrictEqual(Result.getOrUndefined(decoded), {
          _tag: "Mapping",
          protocol: fields.udp ? "UDP" : "TCP",
          epoch: fields.epoch,
          internalPort: fields.internalPort,
          externalPort: fields.externalPort,
          lifetime: fields.lifetime
        })
      }),
    { arbitrary: { runs: 200 } }
  )
})
