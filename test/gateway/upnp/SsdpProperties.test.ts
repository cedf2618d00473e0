/**
 * Whatever bytes arrive on the SSDP socket, the decoder answers with a typed message or a
 * typed error, and a message it accepts always satisfies the schema.
 */
import { assert, describe, it } from "@effect/vitest"
import { readFileSync } from "node:fs"
import { Arbitrary, Effect, Result, Schema } from "effect"
import { decodeMessage, type SsdpMessage, SsdpDecodeError } from "../../../src/gateway/upnp/Ssdp.ts"

const ROUTER = "192.168.1.1"
const encoder = new TextEncoder()

const FIXTURES = ["miniupnpd-igd2.txt", "linksys-nospace.txt", "tplink-er605.txt"].map((name) =>
  new Uint8Array(readFileSync(new URL(`../../fixtures/ssdp/${name}`, import.meta.url)))
)

const isCounter = (value: number | undefined) =>
  value === undefined || (Number.isInteger(value) && value >= 0 && value <= 2 ** 31 - 1)

const isWellFormed = (message: SsdpMessage): boolean => {
  switch (message._tag) {
    case "SearchReply":
      return message.location.length > 0 && message.searchTarget.length > 0 && isCounter(message.bootId) &&
        isCounter(message.configId)
    case "Notify":
      return ["alive", "byebye", "update"].includes(message.kind) && message.notificationType.length > 0 &&
        isCounter(message.bootId) && isCounter(message.nextBootId)
    case "SearchRequest":
      return true
  }
}

/** Decodes and checks the outcome is typed; any throw fails the property by itself. */
const decodesToTypedOutcome = (payload: Uint8Array): boolean => {
  const result = decodeMessage(payload, ROUTER)
  return Result.isSuccess(result)
    ? isWellFormed(result.success)
    : result.failure instanceof SsdpDecodeError && result.failure.responder === ROUTER &&
      result.failure.reason.length > 0
}

const Byte = Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 255 }))

const Mutation = Arbitrary.schema(Schema.Struct({
  op: Schema.Literals(["flip", "delete", "insert", "truncate", "crlf", "colon"]),
  at: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 600 })),
  byte: Byte
}))

const mutate = (
  base: Uint8Array,
  mutations: ReadonlyArray<{ readonly op: string; readonly at: number; readonly byte: number }>
) => {
  let bytes = Array.from(base)
  for (const { at, byte, op } of mutations) {
    const i = bytes.length === 0 ? 0 : at % bytes.length
    if (op === "flip") bytes[i] = byte
    else if (op === "delete") bytes.splice(i, 1)
    else if (op === "insert") bytes.splice(i, 0, byte)
    else if (op === "truncate") bytes = bytes.slice(0, i)
    else if (op === "crlf") bytes.splice(i, 0, 13, 10)
    else bytes.splice(i, 0, 58)
  }
  return new Uint8Array(bytes)
}

const Token = Arbitrary.schema(Schema.Literals([
  "HTTP/1.1 200 OK",
  "HTTP/1.0 200 OK",
  "NOTIFY * HTTP/1.1",
  "M-SEARCH * HTTP/1.1",
  "LOCATION",
  "location",
  "Location:",
  "ST",
  "NT",
  "NTS",
  "USN",
  "BOOTID.UPNP.ORG",
  "CONFIGID.UPNP.ORG",
  "NEXTBOOTID.UPNP.ORG",
  ":",
  ": ",
  " ",
  "\r\n",
  "\n",
  "\r",
  "\r\n\r\n",
  "http://",
  "http://[::1]:1900/igd.xml",
  "192.168.1.1",
  "ssdp:alive",
  "ssdp:byebye",
  "ssdp:update",
  "urn:schemas-upnp-org:device:InternetGatewayDevice:1",
  "99999999999",
  "-1",
  "7",
  "\u0000",
  "\u00e9",
  "\ud83d\ude00",
  "%",
  "\""
]))

describe("SSDP decoder properties", () => {
  it.effect.prop("random bytes never throw", [Schema.Uint8Array], ([payload]) =>
    Effect.sync(() => decodesToTypedOutcome(payload)), { arbitrary: { runs: 500 } })

  it.effect.prop(
    "captured replies under random byte mutations never throw",
    [Arbitrary.all([
      Arbitrary.schema(Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: FIXTURES.length - 1 }))),
      Arbitrary.array(Mutation, { maxLength: 12 })
    ])],
    ([[index, mutations]]) => Effect.sync(() => decodesToTypedOutcome(mutate(FIXTURES[index]!, mutations))),
    { arbitrary: { runs: 500 } }
  )

  it.effect.prop(
    "header soup built from SSDP tokens never throws",
    [Arbitrary.array(Token, { maxLength: 40 })],
    ([tokens]) => Effect.sync(() => decodesToTypedOutcome(encoder.encode(tokens.join("")))),
    { arbitrary: { runs: 500 } }
  )

  it.effect.prop(
    "a valid reply keeps its LOCATION whatever the header case and spacing",
    [Arbitrary.schema(Schema.Struct({
      upper: Schema.Boolean,
      space: Schema.Boolean,
      lf: Schema.Boolean,
      path: Schema.String.check(Schema.isPattern(/^[a-zA-Z0-9_\/.-]{0,30}$/))
    }))],
    ([{ lf, path, space, upper }]) =>
      Effect.sync(() => {
        const eol = lf ? "\n" : "\r\n"
        const name = (header: string) => upper ? header.toUpperCase() : header.toLowerCase()
        const sep = space ? ": " : ":"
        const location = `http://192.168.1.1:5000/${path}`
        const text = `HTTP/1.1 200 OK${eol}${name("St")}${sep}urn:schemas-upnp-org:service:WANIPConnection:1${eol}` +
          `${name("Location")}${sep}${location}${eol}${eol}`
        const result = decodeMessage(encoder.encode(text), ROUTER)
        assert.isTrue(Result.isSuccess(result))
        return Result.isSuccess(result) && result.success._tag === "SearchReply" &&
          result.success.location === location
      }),
    { arbitrary: { runs: 200 } }
  )
})
