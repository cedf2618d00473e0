/**
 * A Service's record of its IPv6 pinholes (annotation `midokura.com/pinholes`), signed like the
 * mappings record (`midokura.com/pinholes-signature`, RecordKey.ts) and written before the
 * router is asked. A pinhole's UniqueID is its only handle, and the router cannot list its
 * pinholes, so this record is the whole evidence that a pinhole is ours: an entry is believed
 * only under a valid signature for this very Service (there is no description that could prove
 * it otherwise). The signed text is prefixed with its kind, so the mappings record's text and
 * signature never pass for a pinhole record, nor the other way round.
 */
import { Result, Schema } from "effect"
import { Protocol } from "../gateway/Mapping.ts"
import type { Service } from "../kube/objects.ts"
import { compareText, ownerOf, type RecordCheck } from "./MappingRecord.ts"
import { perServiceObject } from "./perServiceObject.ts"
import type { RecordKey } from "./RecordKey.ts"
import { ANNOTATION_PREFIX } from "./ServiceSpec.ts"

/** The pinholes annotation. */
export const PINHOLES_ANNOTATION = `${ANNOTATION_PREFIX}pinholes`
/** Its signature. */
export const PINHOLES_SIGNATURE_ANNOTATION = `${ANNOTATION_PREFIX}pinholes-signature`

const Text = (maxLength: number) => Schema.String.check(Schema.isMaxLength(maxLength))

/** One pinhole the Service holds, or is about to hold (no UniqueID yet). */
export const RecordedPinhole = Schema.Struct({
  protocol: Protocol,
  /** The Service port: kube-proxy serves the Service on the node's address at it. */
  port: Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 65535 })),
  /** The node's address the pinhole opens, canonical. */
  internalClient: Text(64),
  /** The route it was asked of: the firewall control URL, or `pcp://[<router>]:5351`. */
  router: Text(512),
  /** UPnP's handle; absent while the AddPinhole is under way (or was interrupted). */
  uniqueId: Schema.optionalKey(Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 65535 }))),
  /** PCP's handle (its nonce, 96 bits in hex); absent while the MAP is under way. */
  nonce: Schema.optionalKey(Schema.String.check(Schema.isPattern(/^[0-9a-f]{24}$/))),
  /** The router's boot time (Clock ms) when it gave the UniqueID: the ID is ours only within that boot. */
  bootedAt: Schema.optionalKey(Schema.Number.check(Schema.isFinite()))
})
/** One recorded pinhole. */
export type RecordedPinhole = typeof RecordedPinhole.Type

const PinholeRecordJson = Schema.fromJsonString(Schema.Array(RecordedPinhole))
const decode = Schema.decodeUnknownResult(PinholeRecordJson)
const encode = Schema.encodeSync(PinholeRecordJson)

/** The signed text: the kind, then the JSON. */
const signedText = (text: string) => `pinholes:${text}`

/** What a Service's pinhole record says, and whether it may be believed. */
export interface ReadPinholes {
  readonly trusted: ReadonlyArray<RecordedPinhole>
  /** Why the record was not believed (for the InvalidRecord Warning), if it was not. */
  readonly refused: string | undefined
}

const none: ReadPinholes = { trusted: [], refused: undefined }

/** Reads and checks a Service's pinhole record (memoized per Service object, key and cluster). */
export const readPinholes = (service: Service, check: RecordCheck): ReadPinholes => readMemo(service, check.key)

const readMemo = perServiceObject((service: Service, key: RecordKey["Service"]): ReadPinholes => {
  const annotations = service.metadata?.annotations ?? {}
  const text = annotations[PINHOLES_ANNOTATION]
  const signature = annotations[PINHOLES_SIGNATURE_ANNOTATION]
  if (text === undefined || text === "") return none
  if (signature === undefined || !key.verify(ownerOf(service), signedText(text), signature)) {
    return {
      trusted: [],
      refused: `${PINHOLES_ANNOTATION}: ${signature === undefined ? "not signed" : "signed for another Service or edited"}; ` +
        "its pinholes are never acted on (they expire with their lease)"
    }
  }
  const decoded = decode(text)
  return Result.isSuccess(decoded) ? { trusted: decoded.success, refused: undefined } : {
    trusted: [],
    refused: `${PINHOLES_ANNOTATION} is not a pinhole record`
  }
})

/**
 * The ports (`pinholeKey`) a Service's pinhole record names, read without checking its
 * signature: for the port index, to find the Services whose record to check (`readPinholes`).
 */
export const recordedPinholeKeys = perServiceObject((service: Service): ReadonlyArray<string> => {
  const text = service.metadata?.annotations?.[PINHOLES_ANNOTATION]
  if (text === undefined || text === "") return []
  const decoded = decode(text)
  return Result.isSuccess(decoded) ? decoded.success.map(pinholeKey) : []
})

/** Whether the router gave the entry a handle (its add completed). */
export const isOpened = (entry: RecordedPinhole): boolean => entry.uniqueId !== undefined || entry.nonce !== undefined

/** `TCP/8080`: one pinhole per Service port and protocol. */
export const pinholeKey = (pinhole: { readonly protocol: Protocol; readonly port: number }): string =>
  `${pinhole.protocol}/${pinhole.port}`

/** Stable text: sorted, so an unchanged record is never rewritten. */
export const writePinholes = (pinholes: ReadonlyArray<RecordedPinhole>): string =>
  encode([...pinholes].sort((a, b) => compareText(pinholeKey(a), pinholeKey(b))))

/** Whether two records say the same. */
export const samePinholes = (a: ReadonlyArray<RecordedPinhole>, b: ReadonlyArray<RecordedPinhole>): boolean =>
  writePinholes(a) === writePinholes(b)

/** The two annotations as one metadata change (both removed for an empty record). */
export const pinholeAnnotations = (
  service: Service,
  pinholes: ReadonlyArray<RecordedPinhole>,
  key: RecordKey["Service"]
): Record<string, string | null> => {
  if (pinholes.length === 0) return { [PINHOLES_ANNOTATION]: null, [PINHOLES_SIGNATURE_ANNOTATION]: null }
  const text = writePinholes(pinholes)
  return { [PINHOLES_ANNOTATION]: text, [PINHOLES_SIGNATURE_ANNOTATION]: key.sign(ownerOf(service), signedText(text)) }
}
