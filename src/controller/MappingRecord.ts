/**
 * The Service's own record of what was mapped for it (annotation `midokura.com/mappings`),
 * written before any router call and kept alive by the finalizer, so cleanup after a restart
 * never depends on memory or on a router that can list its table.
 */
import type { V1Service } from "@kubernetes/client-node"
import { Result, Schema } from "effect"
import { MappablePort, Protocol } from "../gateway/Mapping.ts"
import { MAPPINGS_ANNOTATION } from "./ServiceSpec.ts"
import { perServiceObject } from "./perServiceObject.ts"

export const RecordedMapping = Schema.Struct({
  backend: Schema.String,
  /** The router the mapping was made on (its control URL or address). */
  gateway: Schema.String,
  protocol: Protocol,
  externalPort: MappablePort,
  internalClient: Schema.String,
  internalPort: MappablePort,
  description: Schema.String,
  /** PCP: the nonce that owns the mapping. */
  nonce: Schema.optionalKey(Schema.String)
})
export type RecordedMapping = typeof RecordedMapping.Type

const MappingRecordJson = Schema.fromJsonString(Schema.Array(RecordedMapping))
const decodeRecord = Schema.decodeUnknownResult(MappingRecordJson)
const encodeRecord = Schema.encodeSync(MappingRecordJson)

export type ReadRecord =
  | { readonly _tag: "Ok"; readonly mappings: ReadonlyArray<RecordedMapping> }
  /** Someone edited the annotation into something unreadable: cleanup falls back to the router's table. */
  | { readonly _tag: "Unreadable"; readonly reason: string }

export const readRecord = perServiceObject((service: V1Service): ReadRecord => {
  const text = service.metadata?.annotations?.[MAPPINGS_ANNOTATION]
  if (text === undefined || text === "") return { _tag: "Ok", mappings: [] }
  const decoded = decodeRecord(text)
  return Result.isSuccess(decoded)
    ? { _tag: "Ok", mappings: decoded.success }
    : { _tag: "Unreadable", reason: `annotation ${MAPPINGS_ANNOTATION}: ${decoded.failure.message}` }
})

/** Stable text for the annotation: sorted, so an unchanged record is never rewritten. */
export const writeRecord = (mappings: ReadonlyArray<RecordedMapping>): string =>
  encodeRecord([...mappings].sort((a, b) => portKey(a).localeCompare(portKey(b))))

/** `TCP/8080`: a router holds at most one mapping per external port and protocol. */
export const portKey = (mapping: { readonly protocol: Protocol; readonly externalPort: number }): string =>
  `${mapping.protocol}/${mapping.externalPort}`
