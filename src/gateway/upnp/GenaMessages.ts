/**
 * The wire of UPnP eventing (GENA), as pure functions: the headers of a SUBSCRIBE answer, the
 * SEQ and SID of a NOTIFY, and the evented variables of a WAN connection service's property
 * set, decoded by Schema. Nothing here touches the network.
 */
import { Effect, Result, Schema } from "effect"
import { childElements, decodeText, localName, parseDocument, textOf } from "./XmlDocument.ts"

/** What a SUBSCRIBE (or renewal) answer granted. */
export interface Grant {
  readonly sid: string
  readonly timeoutSeconds: number
}

/** A SID as routers write it: `uuid:` and a bounded run of UUID characters. */
const SID = /^uuid:[0-9A-Za-z-]{1,64}$/

/** Whether a SID header is one we would ever have been given. */
export const isWellFormedSid = (value: string | undefined): value is string => value !== undefined && SID.test(value)

/**
 * The SID and the timeout of a 200 answer. `Second-infinite` or a missing TIMEOUT counts as
 * the timeout asked for: the renewal then comes early rather than never.
 */
export const readGrant = (
  headers: { readonly sid?: string | undefined; readonly timeout?: string | undefined },
  requestedSeconds: number
): Result.Result<Grant, string> => {
  const sid = headers.sid?.trim()
  if (!isWellFormedSid(sid)) return Result.fail(`SID ${JSON.stringify(headers.sid ?? null)} is not a uuid: SID`)
  const timeout = headers.timeout?.trim() ?? ""
  const match = /^Second-(\d{1,9})$/i.exec(timeout)
  const granted = match === null ? requestedSeconds : Number(match[1])
  if (granted < 1) return Result.fail(`TIMEOUT ${JSON.stringify(timeout)} grants no time`)
  return Result.succeed({ sid, timeoutSeconds: Math.min(granted, requestedSeconds) })
}

/** A NOTIFY's SEQ: a decimal of at most 10 digits (GENA wraps it at 2^32 - 1), else undefined. */
export const readSeq = (value: string | undefined): number | undefined => {
  if (value === undefined || !/^\d{1,10}$/.test(value.trim())) return undefined
  const seq = Number(value.trim())
  return seq <= 0xffffffff ? seq : undefined
}

/** The SEQ that follows `seq`: 0 is sent only for the initial event, so the wrap goes to 1. */
export const nextSeq = (seq: number): number => (seq >= 0xffffffff ? 1 : seq + 1)

const Ipv4OrUnset = Schema.String.check(
  Schema.isPattern(/^(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$|^$/, {
    message: "an IPv4 address or empty"
  })
)

/** The evented variables of WANIPConnection / WANPPPConnection that the gateway reads. */
export const WanEventedVariables = Schema.Struct({
  ExternalIPAddress: Schema.optionalKey(Ipv4OrUnset),
  ConnectionStatus: Schema.optionalKey(Schema.String.check(Schema.isMaxLength(64))),
  PortMappingNumberOfEntries: Schema.optionalKey(Schema.NumberFromString.check(Schema.isInt(), Schema.isGreaterThanOrEqualTo(0)))
})

/** The decoded variables of one NOTIFY. */
export type WanEventedVariables = typeof WanEventedVariables.Type

const decodeVariables = Schema.decodeUnknownResult(WanEventedVariables)

/** The largest NOTIFY body taken: a WAN connection's property set is a few hundred bytes. */
export const MAX_NOTIFY_BODY_BYTES = 16 * 1024

/**
 * Reads a NOTIFY body: an `e:propertyset` of `e:property` elements, each holding one variable.
 * The strict parser refuses a DOCTYPE and never expands entities; the first value of a name wins.
 */
export const readPropertySet = (body: Uint8Array, maxBytes = MAX_NOTIFY_BODY_BYTES): Effect.Effect<WanEventedVariables, string> =>
  parseDocument(decodeText(body), { maxSize: maxBytes }).pipe(
    Effect.mapError((problem) => problem.reason),
    Effect.flatMap((root) => {
      if (localName(root.name).toLowerCase() !== "propertyset") {
        return Effect.fail(`root element is <${root.name}>, not a propertyset`)
      }
      const values = new Map<string, string>()
      for (const property of childElements(root)) {
        if (localName(property.name).toLowerCase() !== "property") continue
        for (const variable of childElements(property)) {
          const name = localName(variable.name)
          if (!values.has(name)) values.set(name, textOf(variable) ?? "")
        }
      }
      return Result.match(decodeVariables(Object.fromEntries(values)), {
        onFailure: (issue) => Effect.fail(`evented variables unusable: ${String(issue)}`),
        onSuccess: Effect.succeed
      })
    })
  )
