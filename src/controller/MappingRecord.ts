/**
 * The Service's own record of what was mapped for it (annotation `midokura.com/mappings`),
 * written before the router is changed and kept alive by the finalizer, so cleanup after a
 * restart never depends on memory or on a router that can list its table.
 *
 * Whoever may edit the Service may edit this record, so it is read as hostile input: an entry
 * is trusted only when the record carries the controller's signature for this very Service
 * (annotation `midokura.com/mappings-signature`, see RecordKey.ts), or when the entry is
 * provably the Service's own without it (a UPnP description its own ports derive; a NAT-PMP or
 * PCP mapping to one of its own nodePorts, which the apiserver gives to no other Service).
 * Everything else is refused: never acted on, named in an `InvalidRecord` Warning, and dropped
 * from the record at the next write. A record written by an earlier version (unsigned) is
 * migrated the same way: its provable entries are kept and signed.
 */
import type { Service } from "../kube/objects.ts"
import { Result, Schema } from "effect"
import { Backend, MappablePort, Protocol } from "../gateway/Mapping.ts"
import { perServiceObject } from "./perServiceObject.ts"
import type { RecordKey, RecordOwner } from "./RecordKey.ts"
import { MAPPINGS_ANNOTATION, MAPPINGS_SIGNATURE_ANNOTATION, mappingDescription, portNameOf } from "./ServiceSpec.ts"

/** Bounded text: a record is hostile input, and what it says ends up in Events and logs. */
const Text = (maxLength: number) => Schema.String.check(Schema.isMaxLength(maxLength))

/** One mapping as the record annotation carries it: enough to undo it without the router's help. */
export const RecordedMapping = Schema.Struct({
  backend: Text(16),
  /** The router the mapping was made on (its control URL or address). */
  gateway: Text(512),
  protocol: Protocol,
  externalPort: MappablePort,
  internalClient: Text(64),
  internalPort: MappablePort,
  description: Text(128),
  /** PCP: the nonce that owns the mapping (12 bytes, hex). */
  nonce: Schema.optionalKey(Schema.String.check(Schema.isPattern(/^[0-9a-f]{24}$/)))
})
/** One recorded mapping. */
export type RecordedMapping = typeof RecordedMapping.Type

const MappingRecordJson = Schema.fromJsonString(Schema.Array(RecordedMapping))
const decodeRecord = Schema.decodeUnknownResult(MappingRecordJson)
const encodeRecord = Schema.encodeSync(MappingRecordJson)

/** What a Service's record says, sorted by whether it may be believed. */
export interface ReadRecord {
  /** Entries the controller may act on. */
  readonly trusted: ReadonlyArray<RecordedMapping>
  /** What was refused, one line each (an entry, or the whole annotation), for the Warning. */
  readonly refused: ReadonlyArray<string>
  /** The annotations as written are not what the controller would write: rewrite (and sign) them. */
  readonly stale: boolean
}

/** What checking a record needs: the key that signs it and the cluster's name. */
export interface RecordCheck {
  readonly key: RecordKey["Service"]
  readonly clusterName: string
}

const empty: ReadRecord = { trusted: [], refused: [], stale: false }

/**
 * Reads and checks a Service's record. Pure, and memoized per Service object and per key and
 * cluster name (not per `check` object: the loops each hold their own, and a memo that missed
 * whenever another loop looked would decode and verify every record again on every pass).
 */
export const readRecord = (service: Service, check: RecordCheck): ReadRecord =>
  readRecordMemo(service, check.key, check.clusterName)

const readRecordMemo = perServiceObject((service: Service, key: RecordKey["Service"], clusterName: string): ReadRecord => {
  const check: RecordCheck = { key, clusterName }
  const annotations = service.metadata?.annotations ?? {}
  const text = annotations[MAPPINGS_ANNOTATION]
  const signature = annotations[MAPPINGS_SIGNATURE_ANNOTATION]
  if (text === undefined || text === "") return signature === undefined ? empty : { ...empty, stale: true }
  const decoded = decodeRecord(text)
  if (Result.isFailure(decoded)) {
    return {
      trusted: [],
      refused: [`the annotation is not a record (${firstLine(decoded.failure.message)})`],
      stale: true
    }
  }
  const mappings = decoded.success
  if (signature !== undefined && check.key.verify(ownerOf(service), text, signature)) {
    return { trusted: mappings, refused: [], stale: false }
  }
  const provable = provableOwn(service, check.clusterName)
  const trusted = mappings.filter(provable)
  const refused = mappings.filter((mapping) => !provable(mapping)).map((mapping) =>
    `${describeEntry(mapping)}: ${signature === undefined ? "not signed" : "signed for another Service or edited"}, ` +
    "and not provably this Service's own"
  )
  return { trusted, refused, stale: true }
})

/**
 * Without our signature, an entry is believed only when nobody else could hold what it names:
 * UPnP entries by a description this Service's own ports derive, NAT-PMP/PCP entries (deleted
 * by internal port) by a nodePort of this Service, which the apiserver allots to it alone.
 */
const provableOwn = (service: Service, clusterName: string) => {
  const namespace = service.metadata?.namespace ?? "default"
  const name = service.metadata?.name ?? ""
  const ports = service.spec?.ports ?? []
  const descriptions = new Set(ports.map((port) => mappingDescription(clusterName, namespace, name, portNameOf(port))))
  const nodePorts = new Set(ports.flatMap((port) => port.nodePort ? [`${port.protocol ?? "TCP"}/${port.nodePort}`] : []))
  return (mapping: RecordedMapping): boolean =>
    mapping.backend === "nat-pmp" || mapping.backend === "pcp"
      ? nodePorts.has(`${mapping.protocol}/${mapping.internalPort}`)
      : descriptions.has(mapping.description)
}

/** The signature binds a record to one Service object: a re-created namesake is another owner. */
export const ownerOf = (service: Service): RecordOwner => ({
  namespace: service.metadata?.namespace ?? "default",
  name: service.metadata?.name ?? "",
  uid: service.metadata?.uid ?? ""
})

/** Stable text for the annotation: sorted, so an unchanged record is never rewritten. */
export const writeRecord = (mappings: ReadonlyArray<RecordedMapping>): string =>
  encodeRecord([...mappings].sort((a, b) => compareText(portKey(a), portKey(b))))

/**
 * Code-unit order. `localeCompare` would page in ICU's collation data: about 8 MiB of RSS for a
 * process that never sorts anything but port keys.
 */
export const compareText = (a: string, b: string): number => a < b ? -1 : a > b ? 1 : 0

/** The record's two annotations, text and signature, as one metadata change. */
export const recordAnnotations = (
  service: Service,
  mappings: ReadonlyArray<RecordedMapping>,
  key: RecordKey["Service"]
): Record<string, string> => {
  const text = writeRecord(mappings)
  return { [MAPPINGS_ANNOTATION]: text, [MAPPINGS_SIGNATURE_ANNOTATION]: key.sign(ownerOf(service), text) }
}

/** The backend an entry was mapped through: a record of an older version (or by hand) may lack it, and was UPnP. */
export const recordedBackend = (mapping: RecordedMapping): Backend =>
  Schema.is(Backend)(mapping.backend) ? mapping.backend : "upnp-igd"

/** `TCP/8080`: a router holds at most one mapping per external port and protocol. */
export const portKey = (mapping: { readonly protocol: Protocol; readonly externalPort: number }): string =>
  `${mapping.protocol}/${mapping.externalPort}`

/** `TCP 443 'kubernetes/prod/web/https' via upnp-igd`, as a Warning names an entry. */
export const describeEntry = (mapping: RecordedMapping): string =>
  `${mapping.protocol} ${mapping.externalPort} -> ${JSON.stringify(mapping.internalClient)}:${mapping.internalPort} ` +
  `${JSON.stringify(mapping.description)} via ${JSON.stringify(mapping.backend)}`

const firstLine = (text: string) => text.split("\n")[0] ?? text
