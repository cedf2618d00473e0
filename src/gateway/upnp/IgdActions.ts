/**
 * The IGD actions, one SOAP call each, with a Schema for each response: a value that does not
 * decode is a `GatewayProtocolError` naming the field. No reactions here (IgdClient.ts has them).
 */
import { Effect, Result, Schema, SchemaIssue, SchemaTransformation } from "effect"
import { NetAddress } from "effect/net"
import { GatewayProtocolError, InvalidMapping, UpnpError } from "../GatewayError.ts"
import { isMappablePort, MappablePort, MAX_DESCRIPTION_BYTES, type MappingEntry, Protocol } from "../Mapping.ts"
import { type SoapError, type SoapResponse, SoapTransport } from "./SoapTransport.ts"
import { childElements, childTexts, localName, parseDocument } from "./XmlDocument.ts"

/** Where the actions go: one WAN connection service of one router. */
export interface IgdEndpoint {
  readonly controlUrl: string
  readonly serviceType: string
  /** WANIPConnection:2: AddAnyPortMapping and GetListOfPortMappings may be tried. */
  readonly igdV2: boolean
}

// ---------------------------------------------------------------------------------------------
// Response schemas. SOAP values arrive as trimmed strings; each is decoded by its schema, and
// a failure names the field.
// ---------------------------------------------------------------------------------------------

/** A decimal port 1-65535: 0 is the wildcard, never a real mapping. */
export const PortFromString = Schema.NumberFromString.pipe(Schema.decodeTo(MappablePort))

/** Seconds, a non-negative integer (lease durations, uptime). */
export const SecondsFromString = Schema.NumberFromString.pipe(
  Schema.decodeTo(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0)))
)

/** A dotted-quad IPv4 address, kept in its canonical text form. */
export const Ipv4FromString = Schema.Ipv4AddressFromString.pipe(
  Schema.decodeTo(
    Schema.String,
    SchemaTransformation.transform({
      decode: (address: NetAddress.Ipv4Address) => NetAddress.formatIp(address),
      encode: (text: string) => Result.getOrThrow(NetAddress.ipv4FromString(text))
    })
  )
)

/** An external address as routers report it: empty when the WAN link is down. */
export const ExternalIpFromString = Schema.Union([Schema.Literal(""), Ipv4FromString])

/** `1`/`0`, `true`/`false`, `yes`/`no`, any case. */
export const BooleanFromString = Schema.String.check(Schema.isPattern(/^(1|0|true|false|yes|no)$/i)).pipe(
  Schema.decodeTo(
    Schema.Boolean,
    SchemaTransformation.transform({
      decode: (word: string) => /^(1|true|yes)$/i.test(word),
      encode: (value: boolean): string => value ? "1" : "0"
    })
  )
)

/** `TCP` or `UDP`; some routers answer in lower case. */
export const ProtocolFromString = Schema.String.pipe(
  Schema.decodeTo(Schema.String, SchemaTransformation.toUpperCase()),
  Schema.decodeTo(Protocol)
)

/** GetExternalIPAddress's answer. */
export const ExternalIpResponse = Schema.Struct({ NewExternalIPAddress: ExternalIpFromString })

/** GetStatusInfo's answer. */
export const StatusInfoResponse = Schema.Struct({
  NewConnectionStatus: Schema.String,
  NewLastConnectionError: Schema.optionalKey(Schema.String),
  NewUptime: Schema.optionalKey(SecondsFromString)
})

/** AddAnyPortMapping's answer. */
export const ReservedPortResponse = Schema.Struct({ NewReservedPort: PortFromString })

/** GetSpecificPortMappingEntry's answer. */
export const SpecificEntryResponse = Schema.Struct({
  NewInternalPort: PortFromString,
  NewInternalClient: Ipv4FromString,
  NewEnabled: Schema.optionalKey(BooleanFromString),
  NewPortMappingDescription: Schema.optionalKey(Schema.String),
  NewLeaseDuration: Schema.optionalKey(SecondsFromString)
})

/** The fields of a table entry that GetGenericPortMappingEntry and GetListOfPortMappings share. */
const TableEntry = Schema.Struct({
  NewRemoteHost: Schema.optionalKey(Schema.String),
  NewExternalPort: PortFromString,
  NewProtocol: ProtocolFromString,
  NewInternalPort: PortFromString,
  NewInternalClient: Ipv4FromString,
  NewEnabled: Schema.optionalKey(BooleanFromString)
})

/** GetGenericPortMappingEntry's answer. */
export const GenericEntryResponse = Schema.Struct({
  ...TableEntry.fields,
  NewPortMappingDescription: Schema.optionalKey(Schema.String),
  NewLeaseDuration: Schema.optionalKey(SecondsFromString)
})

/** GetListOfPortMappings' answer: an XML document in a string. */
export const PortListingResponse = Schema.Struct({ NewPortListing: Schema.String })

/** One `PortMappingEntry` of a GetListOfPortMappings document (IGDv2 names two fields differently). */
export const PortListingEntry = Schema.Struct({
  ...TableEntry.fields,
  NewDescription: Schema.optionalKey(Schema.String),
  NewLeaseTime: Schema.optionalKey(SecondsFromString)
})

/** A table entry from the shared fields and the two each action names its own way. */
const toMappingEntry = (
  entry: typeof TableEntry.Type,
  description: string | undefined,
  leaseDuration: number | undefined
): MappingEntry => ({
  externalPort: entry.NewExternalPort,
  protocol: entry.NewProtocol,
  internalClient: entry.NewInternalClient,
  internalPort: entry.NewInternalPort,
  description: description ?? "",
  leaseDuration,
  enabled: entry.NewEnabled ?? true,
  remoteHost: entry.NewRemoteHost ?? ""
})

/** Decodes a response with its schema; a failure is a `GatewayProtocolError` naming the field. */
export const decodeResponse = <T>(
  schema: Schema.ConstraintDecoder<T>,
  context: { readonly router: string; readonly action: string }
) =>
(values: SoapResponse): Effect.Effect<T, GatewayProtocolError> =>
  Schema.decodeUnknownEffect(schema)(values).pipe(
    Effect.mapError((error) => {
      const [first] = SchemaIssue.makeFormatterStandardSchemaV1()(error.issue).issues
      const key = first?.path?.[0]
      return new GatewayProtocolError({
        ...context,
        reason: first?.message ?? error.message,
        ...(key !== undefined ? { field: String(key) } : {})
      })
    })
  )

// ---------------------------------------------------------------------------------------------
// Raw actions: one SOAP call each, decoded, no reactions.
// ---------------------------------------------------------------------------------------------

/** The WAN connection's state, as GetStatusInfo reports it. */
export interface StatusInfo {
  readonly connectionStatus: string
  /** Connected or Up: the WAN link carries traffic. */
  readonly connected: boolean
  readonly lastConnectionError: string | undefined
  readonly uptimeSeconds: number | undefined
}

/** The arguments of AddPortMapping / AddAnyPortMapping. */
export interface PortMappingArgs {
  readonly externalPort: number
  readonly protocol: Protocol
  readonly internalPort: number
  readonly internalClient: string
  readonly description: string
  readonly leaseSeconds: number
  readonly enabled?: boolean | undefined
}

const invoke = Effect.fnUntraced(function*(
  endpoint: IgdEndpoint,
  action: string,
  args: ReadonlyArray<readonly [string, string]>,
  idempotent = true
) {
  const soap = yield* SoapTransport
  return yield* soap.call({ controlUrl: endpoint.controlUrl, serviceType: endpoint.serviceType, action, args, idempotent })
})

const decoded = <T>(endpoint: IgdEndpoint, action: string, schema: Schema.ConstraintDecoder<T>) =>
  decodeResponse(schema, { router: endpoint.controlUrl, action })

/** GetExternalIPAddress. */
export const getExternalIPAddress = Effect.fn("IgdActions.getExternalIPAddress")(function*(endpoint: IgdEndpoint) {
  const values = yield* invoke(endpoint, "GetExternalIPAddress", [])
  const response = yield* decoded(endpoint, "GetExternalIPAddress", ExternalIpResponse)(values)
  return response.NewExternalIPAddress
})

/** GetStatusInfo. */
export const getStatusInfo = Effect.fn("IgdActions.getStatusInfo")(function*(endpoint: IgdEndpoint) {
  const values = yield* invoke(endpoint, "GetStatusInfo", [])
  const response = yield* decoded(endpoint, "GetStatusInfo", StatusInfoResponse)(values)
  const status = response.NewConnectionStatus
  return {
    connectionStatus: status,
    connected: /^(connected|up)$/i.test(status),
    lastConnectionError: response.NewLastConnectionError,
    uptimeSeconds: response.NewUptime
  } satisfies StatusInfo
})

/**
 * Refuses, before anything is sent, what a router could only reject or garble: port 0 (the
 * wildcard, 716), a non-IPv4 internal client, a description of 64 bytes or more.
 */
export const validatePortMappingArgs = (
  router: string,
  action: string,
  args: PortMappingArgs
): Effect.Effect<void, InvalidMapping> => {
  const refuse = (field: string, reason: string) => Effect.fail(new InvalidMapping({ router, action, field, reason }))
  if (!isMappablePort(args.externalPort)) return refuse("NewExternalPort", `${args.externalPort} is not a port in 1-65535`)
  if (!isMappablePort(args.internalPort)) return refuse("NewInternalPort", `${args.internalPort} is not a port in 1-65535`)
  if (Result.isFailure(NetAddress.ipv4FromString(args.internalClient))) {
    return refuse("NewInternalClient", `${JSON.stringify(args.internalClient)} is not an IPv4 address`)
  }
  const bytes = new TextEncoder().encode(args.description).length
  if (bytes > MAX_DESCRIPTION_BYTES) {
    return refuse(
      "NewPortMappingDescription",
      `is ${bytes} bytes; at most ${MAX_DESCRIPTION_BYTES} are kept intact by routers`
    )
  }
  if (!Number.isInteger(args.leaseSeconds) || args.leaseSeconds < 0 || args.leaseSeconds > 0xffffffff) {
    return refuse("NewLeaseDuration", `${args.leaseSeconds} is not a number of seconds`)
  }
  return Effect.void
}

const mappingArgs = (args: PortMappingArgs): ReadonlyArray<readonly [string, string]> => [
  ["NewRemoteHost", ""],
  ["NewExternalPort", String(args.externalPort)],
  ["NewProtocol", args.protocol],
  ["NewInternalPort", String(args.internalPort)],
  ["NewInternalClient", args.internalClient],
  ["NewEnabled", args.enabled === false ? "0" : "1"],
  ["NewPortMappingDescription", args.description],
  ["NewLeaseDuration", String(args.leaseSeconds)]
]

/** AddPortMapping. */
export const addPortMapping = Effect.fn("IgdActions.addPortMapping")(function*(endpoint: IgdEndpoint, args: PortMappingArgs) {
  yield* validatePortMappingArgs(endpoint.controlUrl, "AddPortMapping", args)
  yield* invoke(endpoint, "AddPortMapping", mappingArgs(args))
})

/** IGDv2: the router picks the external port (ideally the one asked for) and returns it. */
export const addAnyPortMapping = Effect.fn("IgdActions.addAnyPortMapping")(function*(endpoint: IgdEndpoint, args: PortMappingArgs) {
  yield* validatePortMappingArgs(endpoint.controlUrl, "AddAnyPortMapping", args)
  const values = yield* invoke(endpoint, "AddAnyPortMapping", mappingArgs(args), false)
  const response = yield* decoded(endpoint, "AddAnyPortMapping", ReservedPortResponse)(values)
  return response.NewReservedPort
})

/** DeletePortMapping of one external port and protocol. */
export const deletePortMapping = Effect.fn("IgdActions.deletePortMapping")(
  function*(endpoint: IgdEndpoint, externalPort: number, protocol: Protocol) {
    if (!isMappablePort(externalPort)) {
      return yield* new InvalidMapping({
        router: endpoint.controlUrl,
        action: "DeletePortMapping",
        field: "NewExternalPort",
        reason: `${externalPort} is not a port in 1-65535`
      })
    }
    // The protocol is always sent: miniupnpd reads an empty one as TCP, and UDP mappings leak.
    yield* invoke(endpoint, "DeletePortMapping", [
      ["NewRemoteHost", ""],
      ["NewExternalPort", String(externalPort)],
      ["NewProtocol", protocol]
    ])
  }
)

/** The mapping on one port; fails with UPnP 714 when there is none. */
export const getSpecificPortMappingEntry = Effect.fn("IgdActions.getSpecificPortMappingEntry")(
  function*(endpoint: IgdEndpoint, externalPort: number, protocol: Protocol) {
    const values = yield* invoke(endpoint, "GetSpecificPortMappingEntry", [
      ["NewRemoteHost", ""],
      ["NewExternalPort", String(externalPort)],
      ["NewProtocol", protocol]
    ])
    const entry = yield* decoded(endpoint, "GetSpecificPortMappingEntry", SpecificEntryResponse)(values)
    return {
      externalPort,
      protocol,
      internalClient: entry.NewInternalClient,
      internalPort: entry.NewInternalPort,
      description: entry.NewPortMappingDescription ?? "",
      leaseDuration: entry.NewLeaseDuration,
      enabled: entry.NewEnabled ?? true,
      remoteHost: ""
    } satisfies MappingEntry
  }
)

/** GetGenericPortMappingEntry: the table's entry at an index. */
export const getGenericPortMappingEntry = Effect.fn("IgdActions.getGenericPortMappingEntry")(
  function*(endpoint: IgdEndpoint, index: number) {
    const values = yield* invoke(endpoint, "GetGenericPortMappingEntry", [["NewPortMappingIndex", String(index)]])
    const entry = yield* decoded(endpoint, "GetGenericPortMappingEntry", GenericEntryResponse)(values)
    return toMappingEntry(entry, entry.NewPortMappingDescription, entry.NewLeaseDuration)
  }
)

/** A listing: the entries read, and how many entries could not be read (treat those as foreign). */
export interface Listing {
  readonly entries: ReadonlyArray<MappingEntry>
  readonly unreadable: number
}

/**
 * Reads the inner document of GetListOfPortMappings (CDATA or entity-escaped, both arrive
 * here as text). Entries that do not decode are counted, not fatal.
 */
export const parsePortListing = (
  document: string,
  context: { readonly router: string; readonly action: string }
): Effect.Effect<Listing, GatewayProtocolError> =>
  Effect.gen(function*() {
    if (document.trim() === "") return { entries: [], unreadable: 0 }
    const root = yield* parseDocument(document).pipe(
      Effect.mapError((problem) => new GatewayProtocolError({ ...context, field: "NewPortListing", reason: problem.reason }))
    )
    const entries: Array<MappingEntry> = []
    let unreadable = 0
    for (const element of childElements(root)) {
      if (localName(element.name).toLowerCase() !== "portmappingentry") continue
      const decodedEntry = yield* Effect.result(decodeResponse(PortListingEntry, context)(childTexts(element)))
      if (Result.isFailure(decodedEntry)) {
        unreadable++
        continue
      }
      const entry = decodedEntry.success
      entries.push(toMappingEntry(entry, entry.NewDescription, entry.NewLeaseTime))
    }
    return { entries, unreadable }
  })

/** IGDv2: one page of one protocol's mappings with external ports in [startPort, endPort]. */
export const getListOfPortMappings = Effect.fn("IgdActions.getListOfPortMappings")(function*(
  endpoint: IgdEndpoint,
  page: { readonly protocol: Protocol; readonly startPort: number; readonly endPort: number; readonly numberOfPorts: number }
) {
  const context = { router: endpoint.controlUrl, action: "GetListOfPortMappings" }
  const values = yield* invoke(endpoint, "GetListOfPortMappings", [
    ["NewStartPort", String(page.startPort)],
    ["NewEndPort", String(page.endPort)],
    ["NewProtocol", page.protocol],
    ["NewManage", "1"],
    ["NewNumberOfPorts", String(page.numberOfPorts)]
  ])
  const response = yield* decodeResponse(PortListingResponse, context)(values)
  return yield* parsePortListing(response.NewPortListing, context)
})

/** Whether the error is a UPnP fault with one of these codes (deliberately not a type guard). */
export const isUpnp = (error: unknown, ...codes: ReadonlyArray<number>): boolean =>
  error instanceof UpnpError && codes.includes(error.code)

/** An answer that says the router has no usable GetListOfPortMappings (list entry by entry instead). */
export const isListingUnusable = (error: SoapError): boolean =>
  isUpnp(error, 401, 402, 404, 501, 602) || error._tag === "GatewayProtocolError"
