/**
 * The IGD actions, each with a Schema for its response, and the reactions real routers need
 * (field guide, "Error codes and the reaction each needs"): 725 and 402-on-lease fall back to
 * a permanent lease and remember it; 714 on delete is success; 718/606 are conflicts; 501 is
 * checked against the external address so a double NAT is never reported as success.
 */
import { Effect, Ref, Result, Schema, SchemaIssue, SchemaTransformation } from "effect"
import { NetAddress } from "effect/net"
import { classifyExternalIp } from "../classifyExternalIp.ts"
import { DoubleNat, GatewayProtocolError, InvalidMapping, PortConflict, UpnpError } from "../GatewayError.ts"
import { MappablePort, type MappingEntry, Protocol } from "../Mapping.ts"
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

export const ExternalIpResponse = Schema.Struct({ NewExternalIPAddress: ExternalIpFromString })

export const StatusInfoResponse = Schema.Struct({
  NewConnectionStatus: Schema.String,
  NewLastConnectionError: Schema.optionalKey(Schema.String),
  NewUptime: Schema.optionalKey(SecondsFromString)
})

export const ReservedPortResponse = Schema.Struct({ NewReservedPort: PortFromString })

export const SpecificEntryResponse = Schema.Struct({
  NewInternalPort: PortFromString,
  NewInternalClient: Ipv4FromString,
  NewEnabled: Schema.optionalKey(BooleanFromString),
  NewPortMappingDescription: Schema.optionalKey(Schema.String),
  NewLeaseDuration: Schema.optionalKey(SecondsFromString)
})

export const GenericEntryResponse = Schema.Struct({
  NewRemoteHost: Schema.optionalKey(Schema.String),
  NewExternalPort: PortFromString,
  NewProtocol: ProtocolFromString,
  NewInternalPort: PortFromString,
  NewInternalClient: Ipv4FromString,
  NewEnabled: Schema.optionalKey(BooleanFromString),
  NewPortMappingDescription: Schema.optionalKey(Schema.String),
  NewLeaseDuration: Schema.optionalKey(SecondsFromString)
})

export const PortListingResponse = Schema.Struct({ NewPortListing: Schema.String })

/** One `PortMappingEntry` of a GetListOfPortMappings document (IGDv2 names two fields differently). */
export const PortListingEntry = Schema.Struct({
  NewRemoteHost: Schema.optionalKey(Schema.String),
  NewExternalPort: PortFromString,
  NewProtocol: ProtocolFromString,
  NewInternalPort: PortFromString,
  NewInternalClient: Ipv4FromString,
  NewEnabled: Schema.optionalKey(BooleanFromString),
  NewDescription: Schema.optionalKey(Schema.String),
  NewLeaseTime: Schema.optionalKey(SecondsFromString)
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

/** The longest description miniupnpd returns intact: it appends garbage from byte 64 on. */
export const MAX_DESCRIPTION_BYTES = 63

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

export const getExternalIPAddress = Effect.fn("IgdClient.getExternalIPAddress")(function*(endpoint: IgdEndpoint) {
  const values = yield* invoke(endpoint, "GetExternalIPAddress", [])
  const response = yield* decoded(endpoint, "GetExternalIPAddress", ExternalIpResponse)(values)
  return response.NewExternalIPAddress
})

export const getStatusInfo = Effect.fn("IgdClient.getStatusInfo")(function*(endpoint: IgdEndpoint) {
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
  const isPort = (port: number) => Number.isInteger(port) && port >= 1 && port <= 65535
  if (!isPort(args.externalPort)) return refuse("NewExternalPort", `${args.externalPort} is not a port in 1-65535`)
  if (!isPort(args.internalPort)) return refuse("NewInternalPort", `${args.internalPort} is not a port in 1-65535`)
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

export const addPortMapping = Effect.fn("IgdClient.addPortMapping")(function*(endpoint: IgdEndpoint, args: PortMappingArgs) {
  yield* validatePortMappingArgs(endpoint.controlUrl, "AddPortMapping", args)
  yield* invoke(endpoint, "AddPortMapping", mappingArgs(args))
})

/** IGDv2: the router picks the external port (ideally the one asked for) and returns it. */
export const addAnyPortMapping = Effect.fn("IgdClient.addAnyPortMapping")(function*(endpoint: IgdEndpoint, args: PortMappingArgs) {
  yield* validatePortMappingArgs(endpoint.controlUrl, "AddAnyPortMapping", args)
  const values = yield* invoke(endpoint, "AddAnyPortMapping", mappingArgs(args), false)
  const response = yield* decoded(endpoint, "AddAnyPortMapping", ReservedPortResponse)(values)
  return response.NewReservedPort
})

export const deletePortMapping = Effect.fn("IgdClient.deletePortMapping")(
  function*(endpoint: IgdEndpoint, externalPort: number, protocol: Protocol) {
    if (!Number.isInteger(externalPort) || externalPort < 1 || externalPort > 65535) {
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
export const getSpecificPortMappingEntry = Effect.fn("IgdClient.getSpecificPortMappingEntry")(
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

export const getGenericPortMappingEntry = Effect.fn("IgdClient.getGenericPortMappingEntry")(
  function*(endpoint: IgdEndpoint, index: number) {
    const values = yield* invoke(endpoint, "GetGenericPortMappingEntry", [["NewPortMappingIndex", String(index)]])
    const entry = yield* decoded(endpoint, "GetGenericPortMappingEntry", GenericEntryResponse)(values)
    return {
      externalPort: entry.NewExternalPort,
      protocol: entry.NewProtocol,
      internalClient: entry.NewInternalClient,
      internalPort: entry.NewInternalPort,
      description: entry.NewPortMappingDescription ?? "",
      leaseDuration: entry.NewLeaseDuration,
      enabled: entry.NewEnabled ?? true,
      remoteHost: entry.NewRemoteHost ?? ""
    } satisfies MappingEntry
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
      entries.push({
        externalPort: entry.NewExternalPort,
        protocol: entry.NewProtocol,
        internalClient: entry.NewInternalClient,
        internalPort: entry.NewInternalPort,
        description: entry.NewDescription ?? "",
        leaseDuration: entry.NewLeaseTime,
        enabled: entry.NewEnabled ?? true,
        remoteHost: entry.NewRemoteHost ?? ""
      })
    }
    return { entries, unreadable }
  })

/** IGDv2: one page of one protocol's mappings with external ports in [startPort, endPort]. */
export const getListOfPortMappings = Effect.fn("IgdClient.getListOfPortMappings")(function*(
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

// ---------------------------------------------------------------------------------------------
// The client with reactions, for one router.
// ---------------------------------------------------------------------------------------------

export interface ListingOptions {
  /**
   * Entries per GetListOfPortMappings page (NewNumberOfPorts). The ranges asked for hold at most
   * `rangeCapacity` entries, so a page never needs a next one on miniupnpd (whose pages follow
   * its rule order, not the port order, so "the next page starts after the highest port" would
   * skip entries).
   */
  readonly pageSize: number
  /**
   * The most mappings of one protocol one GetListOfPortMappings range may hold. miniupnpd
   * (2.3.1 and earlier) gathers a range's ports into an array of 128 and, past that, writes
   * beyond its end and dies; a range no wider than this can never hold more.
   */
  readonly rangeCapacity: number
  /**
   * With fewer mappings than this in the whole table, one full-range request per protocol is
   * safe. Kept well under `rangeCapacity` so that mappings added between the count and the
   * listing cannot push a range over it.
   */
  readonly fullRangeLimit: number
  /** A listing longer than this is taken as a router that never ends it (no 713). */
  readonly maxEntries: number
  /** This many unreadable entries in a row and the listing is taken as broken. */
  readonly maxConsecutiveUnreadable: number
}

const defaultListingOptions: ListingOptions = {
  pageSize: 1000,
  rangeCapacity: 128,
  fullRangeLimit: 64,
  maxEntries: 8192,
  maxConsecutiveUnreadable: 32
}

/** The highest port; listings cover 1 to this. */
const LAST_PORT = 65535

export interface IgdClient {
  readonly endpoint: IgdEndpoint
  readonly getExternalIPAddress: Effect.Effect<string, SoapError>
  readonly getStatusInfo: Effect.Effect<StatusInfo, SoapError>
  /**
   * AddPortMapping with the reactions: 725 (only permanent leases) and 402 on a non-zero
   * lease retry once with lease 0 and remember it for this router; 718/606 are a
   * `PortConflict`; 501 with a private or missing external address is `DoubleNat`; 724 says
   * the router wants equal ports. Returns the lease actually granted.
   */
  readonly addPortMapping: (
    args: PortMappingArgs
  ) => Effect.Effect<{ readonly leaseSeconds: number }, SoapError | InvalidMapping | PortConflict | DoubleNat>
  /**
   * AddAnyPortMapping where the router has IGDv2, falling back to AddPortMapping on 401 (or
   * without IGDv2). Returns the port the router reserved: renew and delete that one.
   */
  readonly addAnyPortMapping: (
    args: PortMappingArgs
  ) => Effect.Effect<
    { readonly externalPort: number; readonly leaseSeconds: number },
    SoapError | InvalidMapping | PortConflict | DoubleNat
  >
  /** DeletePortMapping; 714 (already gone) is success, 606 (another host's, secure mode) a conflict. */
  readonly deletePortMapping: (
    externalPort: number,
    protocol: Protocol
  ) => Effect.Effect<void, SoapError | InvalidMapping | PortConflict>
  /** The mapping on one port, or undefined (714). */
  readonly getSpecificPortMappingEntry: (
    externalPort: number,
    protocol: Protocol
  ) => Effect.Effect<MappingEntry | undefined, SoapError>
  /**
   * The whole table. Where the router has IGDv2 and holds fewer than `fullRangeLimit`
   * mappings, one GetListOfPortMappings per protocol; with more, the cheaper of
   * GetGenericPortMappingEntry from index 0 until 713 and GetListOfPortMappings over ranges
   * of `rangeCapacity` ports, so no request can hold more than miniupnpd survives. Without
   * IGDv2 (or on 401/402/404/501/602 or an unreadable listing), the generic listing. Fails
   * rather than returning a listing that broke off.
   */
  readonly listPortMappings: Effect.Effect<Listing, SoapError>
  /** The first port of the `rangeCapacity`-port range that holds this port. */
  readonly rangeOf: (port: number) => number
  /**
   * One protocol's mappings in the `rangeCapacity`-port range that holds this port, by one
   * GetListOfPortMappings (IGDv2): a range miniupnpd can always answer.
   */
  readonly listRangeHolding: (protocol: Protocol, port: number) => Effect.Effect<Listing, SoapError>
  /** Whether this router has been found to accept only permanent leases. */
  readonly permanentLeasesOnly: Effect.Effect<boolean>
}

/** Whether the error is a UPnP fault with one of these codes (deliberately not a type guard). */
const isUpnp = (error: unknown, ...codes: ReadonlyArray<number>): boolean =>
  error instanceof UpnpError && codes.includes(error.code)

/** An answer that says the router has no usable GetListOfPortMappings (list entry by entry instead). */
export const isListingUnusable = (error: SoapError): boolean =>
  isUpnp(error, 401, 402, 404, 501, 602) || error._tag === "GatewayProtocolError"

/**
 * A client for one router's WAN service. `permanentOnly` carries what was learnt about its
 * leases across clients made for the same router (after a rediscovery, for instance).
 */
export const make = Effect.fnUntraced(function*(
  endpoint: IgdEndpoint,
  options?: {
    readonly permanentOnly?: Ref.Ref<boolean> | undefined
    readonly listing?: Partial<ListingOptions> | undefined
  }
) {
  const soap = yield* SoapTransport
  const provide = <A, E>(effect: Effect.Effect<A, E, SoapTransport>) => Effect.provideService(effect, SoapTransport, soap)
  const permanentOnly = options?.permanentOnly ?? (yield* Ref.make(false))
  const listing = { ...defaultListingOptions, ...options?.listing }
  const router = endpoint.controlUrl

  const conflict = (args: PortMappingArgs, error: UpnpError) =>
    new PortConflict({
      router,
      externalPort: args.externalPort,
      protocol: args.protocol,
      holder: "another host",
      reason: error.code === 606
        ? "the router refused: not authorized (606), it maps ports only for the host asking"
        : `ConflictInMappingEntry (718): the port is mapped to another host, or the router maps ports only for the host asking`
    })

  /**
   * 501: forwarding disabled. Only a public external address leaves it a plain failure.
   * miniupnpd hides a private or reserved WAN address (it reports an empty one while
   * "Connected"), so connected-without-address is a double NAT too.
   */
  const explainActionFailed = (error: UpnpError): Effect.Effect<never, UpnpError | DoubleNat> =>
    Effect.gen(function*() {
      const ip = yield* provide(getExternalIPAddress(endpoint)).pipe(Effect.orElseSucceed(() => undefined))
      if (ip === undefined) return yield* error
      const ipClass = classifyExternalIp(ip)
      if (ipClass === "public") return yield* error
      const status = yield* provide(getStatusInfo(endpoint)).pipe(Effect.orElseSucceed(() => undefined))
      const refused = `so it refuses to forward (${error.action}: UPnP ${error.code} ${error.description || "Action Failed"})`
      return yield* new DoubleNat({
        router,
        ...(ip !== "" ? { externalIp: ip } : {}),
        reason: ipClass === "private"
          ? `double NAT: the router's external address ${ip} is private or reserved, ${refused}`
          : status?.connected === false
          ? `the router's WAN link is ${status.connectionStatus} and has no external address, ${refused}`
          : `double NAT: the router is connected but reports no public external address (a private or reserved WAN address is hidden), ${refused}`
      })
    })

  const withReactions = <A>(
    args: PortMappingArgs,
    send: (args: PortMappingArgs) => Effect.Effect<A, SoapError | InvalidMapping>
  ): Effect.Effect<{ readonly result: A; readonly leaseSeconds: number }, SoapError | InvalidMapping | PortConflict | DoubleNat> =>
    Effect.gen(function*() {
      const lease = (yield* Ref.get(permanentOnly)) ? 0 : args.leaseSeconds
      const first = yield* Effect.result(send({ ...args, leaseSeconds: lease }))
      if (Result.isSuccess(first)) return { result: first.success, leaseSeconds: lease }
      const error = first.failure
      if (lease !== 0 && isUpnp(error, 725, 402)) {
        // 725: only permanent leases; 402: some routers say "invalid args" to a finite lease.
        const retried = yield* Effect.result(send({ ...args, leaseSeconds: 0 }))
        if (Result.isSuccess(retried)) {
          yield* Ref.set(permanentOnly, true)
          yield* Effect.logWarning(`${router} accepts only permanent leases (${error.message}); using lease 0`)
          return { result: retried.success, leaseSeconds: 0 }
        }
        return yield* react(args, retried.failure)
      }
      return yield* react(args, error)
    })

  const react = (
    args: PortMappingArgs,
    error: SoapError | InvalidMapping
  ): Effect.Effect<never, SoapError | InvalidMapping | PortConflict | DoubleNat> => {
    if (!(error instanceof UpnpError)) return Effect.fail(error)
    if (isUpnp(error, 718, 606)) return Effect.fail(conflict(args, error))
    if (isUpnp(error, 501)) return explainActionFailed(error)
    if (isUpnp(error, 724)) {
      return Effect.fail(
        new UpnpError({
          router,
          action: error.action,
          code: 724,
          description: `SamePortValuesRequired: this router maps only to the same internal port (asked ${args.externalPort} -> ${args.internalPort})`
        })
      )
    }
    return Effect.fail(error)
  }

  const add = Effect.fn("IgdClient.add")(function*(args: PortMappingArgs) {
    const { leaseSeconds } = yield* withReactions(args, (sent) => provide(addPortMapping(endpoint, sent)))
    return { leaseSeconds }
  })

  const addAny = Effect.fn("IgdClient.addAny")(function*(args: PortMappingArgs) {
    const viaAdd = Effect.map(add(args), ({ leaseSeconds }) => ({ externalPort: args.externalPort, leaseSeconds }))
    if (!endpoint.igdV2) return yield* viaAdd
    return yield* withReactions(args, (sent) => provide(addAnyPortMapping(endpoint, sent))).pipe(
      Effect.map(({ result, leaseSeconds }) => ({ externalPort: result, leaseSeconds })),
      Effect.catchIf((error) => isUpnp(error, 401), () => viaAdd)
    )
  })

  const remove = (externalPort: number, protocol: Protocol) =>
    provide(deletePortMapping(endpoint, externalPort, protocol)).pipe(
      Effect.catchIf((error) => isUpnp(error, 714), () => Effect.void),
      Effect.catchIf(
        (error) => isUpnp(error, 606),
        () =>
          Effect.fail(
            new PortConflict({
              router,
              externalPort,
              protocol,
              holder: "another host",
              reason: "the router refused to delete it: not authorized (606), the mapping belongs to another host"
            })
          )
      )
    )

  const getSpecific = (externalPort: number, protocol: Protocol) =>
    provide(getSpecificPortMappingEntry(endpoint, externalPort, protocol)).pipe(
      Effect.catchIf((error) => isUpnp(error, 714), () => Effect.succeed(undefined))
    )

  const listGeneric = Effect.gen(function*() {
    const entries: Array<MappingEntry> = []
    let unreadable = 0
    let consecutive = 0
    for (let index = 0; ; index++) {
      if (index >= listing.maxEntries) {
        return yield* new GatewayProtocolError({
          router,
          action: "GetGenericPortMappingEntry",
          reason: `listing did not end (no 713) after ${listing.maxEntries} entries`
        })
      }
      const result = yield* Effect.result(provide(getGenericPortMappingEntry(endpoint, index)))
      if (Result.isSuccess(result)) {
        entries.push(result.success)
        consecutive = 0
        continue
      }
      const error = result.failure
      if (isUpnp(error, 713)) break
      // A broken connection leaves the rest unknown: never return what was read so far.
      if (error._tag === "GatewayUnreachable") return yield* error
      // Some routers index from 1 and answer index 0 with an error of their own.
      if (index === 0 && error._tag === "UpnpError") continue
      unreadable++
      consecutive++
      if (consecutive >= listing.maxConsecutiveUnreadable) {
        return yield* new GatewayProtocolError({
          router,
          action: "GetGenericPortMappingEntry",
          reason: `listing broke off: ${consecutive} unreadable entries in a row up to index ${index} (last: ${error.message})`
        })
      }
    }
    return { entries, unreadable } satisfies Listing
  })

  /** One protocol's mappings with external ports in [first, last], page after page. */
  const listRange = (protocol: Protocol, first: number, last: number) =>
    Effect.gen(function*() {
      const entries: Array<MappingEntry> = []
      let unreadable = 0
      let startPort = first
      while (startPort <= last) {
        const page = yield* provide(getListOfPortMappings(endpoint, {
          protocol,
          startPort,
          endPort: last,
          numberOfPorts: listing.pageSize
        })).pipe(
          // 714/730: nothing in the range.
          Effect.catchIf((error) => isUpnp(error, 714, 730), () => Effect.succeed<Listing>({ entries: [], unreadable: 0 }))
        )
        entries.push(...page.entries)
        unreadable += page.unreadable
        if (page.entries.length + page.unreadable < listing.pageSize) break
        // A full page: the next one starts after its highest port, which holds only if the page
        // came in port order. A page we cannot read, one in another order (miniupnpd's rule
        // order), or a router that ignores NewStartPort, would leave the rest unknown.
        const ports = page.entries.map((entry) => entry.externalPort)
        const next = Math.max(0, ...ports) + 1
        if (page.unreadable > 0 || next <= startPort || ports.some((port, index) => index > 0 && port < ports[index - 1]!)) {
          return yield* new GatewayProtocolError({
            router,
            action: "GetListOfPortMappings",
            reason: `a full page from port ${startPort} is not in port order: the rest of the range cannot be asked for`
          })
        }
        startPort = next
        if (entries.length > listing.maxEntries) {
          return yield* new GatewayProtocolError({
            router,
            action: "GetListOfPortMappings",
            reason: `listing did not end after ${listing.maxEntries} entries`
          })
        }
      }
      return { entries, unreadable } satisfies Listing
    })

  const merged = (listings: ReadonlyArray<Listing>): Listing => ({
    entries: listings.flatMap((part) => part.entries),
    unreadable: listings.reduce((sum, part) => sum + part.unreadable, 0)
  })

  const fullRanges = Effect.map(
    Effect.all([listRange("TCP", 1, LAST_PORT), listRange("UDP", 1, LAST_PORT)]),
    merged
  )

  const rangeOf = (port: number) => Math.floor((port - 1) / listing.rangeCapacity) * listing.rangeCapacity + 1
  const rangeEnd = (first: number) => Math.min(LAST_PORT, first + listing.rangeCapacity - 1)

  const windowsPerProtocol = Math.ceil(LAST_PORT / listing.rangeCapacity)
  const windowed = Effect.map(
    Effect.forEach(
      (["TCP", "UDP"] as const).flatMap((protocol) =>
        Array.from({ length: windowsPerProtocol }, (_, window) => {
          const first = 1 + window * listing.rangeCapacity
          return [protocol, first, rangeEnd(first)] as const
        })
      ),
      ([protocol, first, last]) => listRange(protocol, first, last),
      { concurrency: 4 }
    ),
    merged
  )

  /**
   * Whether the table holds an entry at this index (so more than `index` mappings, counting
   * from 0), or undefined where the router cannot say. An entry that does not decode is there.
   */
  const holdsIndex = (index: number) =>
    provide(getGenericPortMappingEntry(endpoint, index)).pipe(
      Effect.as<boolean | undefined>(true),
      Effect.catchIf(
        (error) => error._tag !== "GatewayUnreachable",
        (error) => Effect.succeed(error._tag === "GatewayProtocolError" ? true : isUpnp(error, 713) ? false : undefined)
      )
    )

  // The ranges (first port, by protocol) where the last complete listing found mappings, and
  // the last count of the table.
  let previousRanges: ReadonlyMap<Protocol, ReadonlySet<number>> | undefined
  let previousCount: number | undefined

  /**
   * How many mappings the table holds (both protocols), found by GetGenericPortMappingEntry at
   * doubling, then halving, indexes (about 2 log2 n calls); undefined where the router cannot
   * say, or past `maxEntries`.
   */
  const countEntries = Effect.gen(function*() {
    // Unchanged since the last count (the usual resync): two calls say so.
    if (previousCount !== undefined && previousCount > listing.fullRangeLimit) {
      const [last, past] = yield* Effect.all([holdsIndex(previousCount - 1), holdsIndex(previousCount)])
      if (last === true && past === false) return previousCount
    }
    let held = listing.fullRangeLimit
    let free = 2 * listing.fullRangeLimit
    for (;;) {
      const holds = yield* holdsIndex(free)
      if (holds === undefined) return undefined
      if (!holds) break
      held = free
      free *= 2
      if (held >= listing.maxEntries) return undefined
    }
    while (free - held > 1) {
      const middle = Math.floor((held + free) / 2)
      const holds = yield* holdsIndex(middle)
      if (holds === undefined) return undefined
      if (holds) held = middle
      else free = middle
    }
    return free
  })

  /**
   * Guided by the last listing: the ranges that held mappings then, one request each; then,
   * if what is left of the count is small enough for any range, the gaps between them in one
   * request each. Undefined when too many mappings may lie outside those ranges.
   */
  const listGuided = (count: number, ranges: ReadonlyMap<Protocol, ReadonlySet<number>>) =>
    Effect.gen(function*() {
      const protocols = ["TCP", "UDP"] as const
      const known = protocols.flatMap((protocol) =>
        [...(ranges.get(protocol) ?? [])].map((first) =>
          [protocol, first, rangeEnd(first)] as const
        )
      )
      const inRanges = yield* Effect.forEach(known, ([protocol, first, last]) => listRange(protocol, first, last), {
        concurrency: 4
      })
      const found = inRanges.reduce((sum, part) => sum + part.entries.length + part.unreadable, 0)
      if (count - found > listing.fullRangeLimit) return undefined
      const gaps = protocols.flatMap((protocol) => {
        const starts = [...(ranges.get(protocol) ?? [])].sort((a, b) => a - b)
        const result: Array<readonly [Protocol, number, number]> = []
        let next = 1
        for (const first of starts) {
          if (first > next) result.push([protocol, next, first - 1])
          next = first + listing.rangeCapacity
        }
        if (next <= LAST_PORT) result.push([protocol, next, LAST_PORT])
        return result
      })
      const outside = yield* Effect.forEach(gaps, ([protocol, first, last]) => listRange(protocol, first, last), {
        concurrency: 4
      })
      return merged([...inRanges, ...outside])
    })

  const listLarge = Effect.gen(function*() {
    const count = yield* countEntries
    previousCount = count
    if (count !== undefined && previousRanges !== undefined) {
      const rangesToAsk = [...previousRanges.values()].reduce((sum, set) => sum + set.size, 0)
      if (rangesToAsk < count) {
        const guided = yield* listGuided(count, previousRanges)
        if (guided !== undefined) return guided
      }
    }
    // Entry by entry costs a call per mapping; ranges of `rangeCapacity` ports a flat 1,024.
    return count !== undefined && count < 2 * windowsPerProtocol ? yield* listGeneric : yield* windowed
  })

  const listV2 = Effect.gen(function*() {
    // A router without the generic action is not the miniupnpd this guards against.
    const result = (yield* holdsIndex(listing.fullRangeLimit)) !== true ? yield* fullRanges : yield* listLarge
    const ranges = new Map<Protocol, Set<number>>([["TCP", new Set()], ["UDP", new Set()]])
    for (const entry of result.entries) ranges.get(entry.protocol)?.add(rangeOf(entry.externalPort))
    previousRanges = ranges
    return result
  })

  const listPortMappings: Effect.Effect<Listing, SoapError> = endpoint.igdV2
    ? listV2.pipe(
      Effect.catchIf(
        isListingUnusable,
        (error) =>
          Effect.logDebug(`GetListOfPortMappings unusable on ${router} (${error.message}); listing entry by entry`).pipe(
            Effect.andThen(listGeneric)
          )
      )
    )
    : listGeneric

  return {
    endpoint,
    getExternalIPAddress: provide(getExternalIPAddress(endpoint)),
    getStatusInfo: provide(getStatusInfo(endpoint)),
    addPortMapping: add,
    addAnyPortMapping: addAny,
    deletePortMapping: remove,
    getSpecificPortMappingEntry: getSpecific,
    listPortMappings,
    rangeOf,
    listRangeHolding: (protocol, port) => listRange(protocol, rangeOf(port), rangeEnd(rangeOf(port))),
    permanentLeasesOnly: Ref.get(permanentOnly)
  } satisfies IgdClient

})
