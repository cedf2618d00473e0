/**
 * Random and mutated bytes fed to the description, SOAP and listing decoders: whatever a router
 * (or anything answering in its place) sends, the result is a value or a typed error, never a
 * thrown exception or a defect.
 */
import { assert, describe, it } from "@effect/vitest"
import { Cause, Effect, Exit, Schema } from "effect"
import { parseDescription } from "../../../src/gateway/upnp/Description.ts"
import * as IgdClient from "../../../src/gateway/upnp/IgdClient.ts"
import { readReply } from "../../../src/gateway/upnp/SoapTransport.ts"
import { mutatedFrom, randomBytes as anyBytes } from "../../support/byteArbitraries.ts"
import { fixtureBytes, fixtureNames } from "./fixtures.ts"

const descriptions = fixtureNames("descriptions")
const replies = [...fixtureNames("soap/miniupnpd-2.3.1"), ...fixtureNames("soap/other")]

/** A captured document with a few bytes changed, inserted, removed, or cut off. */
const mutated = (names: ReadonlyArray<string>) => mutatedFrom(names.map(fixtureBytes), { maxPosition: 4095, maxEdits: 8 })

const randomBytes = anyBytes(600)

/** Succeeds, or fails with one of the expected tags: never a defect. */
const expectTyped = <A, E extends { readonly _tag: string }>(
  effect: Effect.Effect<A, E>,
  tags: ReadonlyArray<string>
) =>
  Effect.gen(function*() {
    const exit = yield* Effect.exit(effect)
    if (Exit.isSuccess(exit)) return true
    const failure = exit.cause.reasons.find(Cause.isFailReason)
    assert.isDefined(failure, `not a typed failure: ${Cause.pretty(exit.cause)}`)
    assert.include(tags, failure!.error._tag)
    return true
  })

const LOCATION = "http://192.168.77.1:49536/rootDesc.xml"
const runs = { arbitrary: { runs: 300 } }

describe("decoder properties", () => {
  it.effect.prop("parseDescription: mutated captured descriptions", [mutated(descriptions)], ([bytes]) =>
    expectTyped(parseDescription(bytes, LOCATION), ["GatewayProtocolError"]), runs)

  it.effect.prop("parseDescription: random bytes", [randomBytes], ([bytes]) =>
    expectTyped(parseDescription(bytes, LOCATION), ["GatewayProtocolError"]), runs)

  it.effect.prop("readReply: mutated captured SOAP replies always yield a reply", [mutated(replies)], ([bytes]) =>
    Effect.gen(function*() {
      const reply = yield* readReply(bytes, "GetGenericPortMappingEntry")
      assert.include(["Response", "Fault", "Unusable"], reply._tag)
    }), runs)

  it.effect.prop("readReply: random bytes always yield a reply", [randomBytes], ([bytes]) =>
    Effect.gen(function*() {
      const reply = yield* readReply(bytes, "GetExternalIPAddress")
      assert.include(["Response", "Fault", "Unusable"], reply._tag)
    }), runs)

  it.effect.prop(
    "response schemas: mutated replies decode or fail naming a field",
    [mutated(replies)],
    ([bytes]) =>
      Effect.gen(function*() {
        const reply = yield* readReply(bytes, "GetGenericPortMappingEntry")
        if (reply._tag !== "Response") return
        const context = { router: LOCATION, action: "GetGenericPortMappingEntry" }
        yield* expectTyped(IgdClient.decodeResponse(IgdClient.GenericEntryResponse, context)(reply.values), [
          "GatewayProtocolError"
        ])
        yield* expectTyped(IgdClient.decodeResponse(IgdClient.SpecificEntryResponse, context)(reply.values), [
          "GatewayProtocolError"
        ])
        yield* expectTyped(IgdClient.decodeResponse(IgdClient.ExternalIpResponse, context)(reply.values), [
          "GatewayProtocolError"
        ])
        if (reply.values["NewPortListing"] !== undefined) {
          yield* expectTyped(IgdClient.parsePortListing(reply.values["NewPortListing"], context), ["GatewayProtocolError"])
        }
      }),
    runs
  )

  it.effect.prop(
    "response schemas: arbitrary string records",
    [Schema.Record(Schema.String, Schema.String)],
    ([values]) =>
      expectTyped(
        IgdClient.decodeResponse(IgdClient.GenericEntryResponse, { router: LOCATION, action: "GetGenericPortMappingEntry" })(
          values
        ),
        ["GatewayProtocolError"]
      ),
    runs
  )

  it.effect.prop("parsePortListing: arbitrary strings", [Schema.String], ([text]) =>
    expectTyped(IgdClient.parsePortListing(text, { router: LOCATION, action: "GetListOfPortMappings" }), [
      "GatewayProtocolError"
    ]), runs)
})
