/**
 * IPv6 firewall pinholes through UPnP IGD:2's `WANIPv6FirewallControl:1`: one SOAP call per
 * action over the shared transport (its size cap, timeout and entity-free XML), each reply
 * decoded by a Schema, each fault a `PinholeError` saying what it means for the request.
 *
 * How miniupnpd 2.3.1 behaves (docs/ipv6-field-notes.md) shapes the calls:
 * - it opens a pinhole only for the request's source address, compared as text, so the
 *   InternalClient is always sent in RFC 5952 form and the request always travels over IPv6
 *   (over IPv4 AddPinhole is refused with 606);
 * - re-sending AddPinhole sets an expiry far beyond the lease, so AddPinhole is never retried
 *   and a lease is renewed with UpdatePinhole only.
 */
import { Effect, Result, Schema } from "effect"
import { NetAddress } from "effect/net"
import { GatewayNotFound, GatewayProtocolError, InvalidMapping, UpnpError } from "../GatewayError.ts"
import { canonicalIpv6 } from "../Ipv6Address.ts"
import { isMappablePort, type Protocol } from "../Mapping.ts"
import type { RootDescription } from "./Description.ts"
import { BooleanFromString, decodeResponse } from "./IgdActions.ts"
import { PINHOLE_LEASE_SECONDS, PinholeError, pinholeFaultMeaning, type PinholeRequestContext } from "./PinholeError.ts"
import { type SoapError, SoapTransport } from "./SoapTransport.ts"

/** The service type pinhole actions are sent to (and their SOAPAction namespace). */
export const FIREWALL_SERVICE_TYPE = "urn:schemas-upnp-org:service:WANIPv6FirewallControl:1"

/** Where pinhole actions go: one router's IPv6 firewall service, reached over IPv6. */
export interface FirewallEndpoint {
  /** `http://[<router IPv6>]:<port>/<path>`. */
  readonly controlUrl: string
  readonly serviceType: string
  /** The router's IPv6 address, canonical: the node's source address is chosen toward it. */
  readonly routerIp: string
  readonly routerPort: number
}

/** What AddPinhole asks for. */
export interface PinholeRequest {
  /** The node's own IPv6 address: the request's source address (miniupnpd refuses any other). */
  readonly internalClient: string
  readonly internalPort: number
  readonly protocol: Protocol
  /** 1-86400 seconds. */
  readonly leaseSeconds: number
  /** Only this Internet host may come in (default: any). */
  readonly remoteHost?: string | undefined
  /** Only from this port (default 0: any). */
  readonly remotePort?: number | undefined
}

/** What GetFirewallStatus says. */
export interface FirewallStatus {
  readonly firewallEnabled: boolean
  /** False: this router will not open IPv6 pinholes at all. */
  readonly inboundPinholeAllowed: boolean
}

// ---------------------------------------------------------------------------------------------
// Response schemas

/** A pinhole's UniqueID: the specification's `ui2`. */
export const UniqueIdFromString = Schema.NumberFromString.pipe(
  Schema.decodeTo(Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 65535 })))
)

export const FirewallStatusResponse = Schema.Struct({
  FirewallEnabled: BooleanFromString,
  InboundPinholeAllowed: BooleanFromString
})

export const AddPinholeResponse = Schema.Struct({ UniqueID: UniqueIdFromString })

export const CheckPinholeWorkingResponse = Schema.Struct({ IsWorking: BooleanFromString })

export const PinholePacketsResponse = Schema.Struct({
  PinholePackets: Schema.NumberFromString.pipe(Schema.decodeTo(Schema.Int.check(Schema.isGreaterThanOrEqualTo(0))))
})

// ---------------------------------------------------------------------------------------------
// The endpoint

/** The URL's host as a canonical IPv6 address, or undefined when it is not an IPv6 literal. */
const ipv6Host = (url: URL): string | undefined => {
  const host = url.hostname
  if (!host.startsWith("[") || !host.endsWith("]")) return undefined
  const canonical = canonicalIpv6(host.slice(1, -1))
  return Result.isSuccess(canonical) ? canonical.success : undefined
}

/**
 * A firewall endpoint from a control URL given by the user (the static override): an http
 * URL whose host is an IPv6 literal.
 */
export const firewallEndpoint = (
  controlUrl: string,
  serviceType: string = FIREWALL_SERVICE_TYPE
): Result.Result<FirewallEndpoint, GatewayProtocolError> => {
  const refuse = (reason: string) =>
    Result.fail(new GatewayProtocolError({ router: controlUrl, action: "firewall control URL", field: "controlURL", reason }))
  const url = URL.parse(controlUrl)
  if (url === null || url.protocol !== "http:") return refuse("not an http URL")
  const routerIp = ipv6Host(url)
  if (routerIp === undefined) {
    return refuse(
      Result.isSuccess(NetAddress.ipv4FromString(url.hostname))
        ? "an IPv4 host: pinholes must be asked for over IPv6 (miniupnpd refuses AddPinhole over IPv4 with 606)"
        : `host ${url.hostname} is not an IPv6 address`
    )
  }
  const routerPort = url.port === "" ? 80 : Number(url.port)
  return Result.succeed({ controlUrl: url.href, serviceType, routerIp, routerPort })
}

/**
 * The firewall endpoint a root description offers. Its control URL is called only on the
 * description's own host or on `routerIpv6` (the router's IPv6 address, when the description
 * was fetched over IPv4): a description must not send us anywhere else. A router without the
 * service is `GatewayNotFound`: it opens no IPv6 pinholes over UPnP.
 */
export const firewallEndpointFrom = (
  description: RootDescription,
  options: { readonly routerIpv6?: string | undefined } = {}
): Result.Result<FirewallEndpoint, GatewayNotFound | GatewayProtocolError> => {
  const service = description.firewallServices[0]
  if (service === undefined) {
    return Result.fail(
      new GatewayNotFound({
        reason: `the router's description lists no ${FIREWALL_SERVICE_TYPE}: it opens no IPv6 pinholes over UPnP`,
        candidates: [description.location]
      })
    )
  }
  const refuse = (reason: string) =>
    Result.fail(
      new GatewayProtocolError({ router: description.location, action: "root description", field: "controlURL", reason })
    )
  const url = new URL(service.controlUrl)
  const location = URL.parse(description.location)
  if (location === null || url.host !== location.host) {
    return refuse(`the firewall control URL ${service.controlUrl} is not on the description's host`)
  }
  if (ipv6Host(url) === undefined) {
    if (options.routerIpv6 === undefined) {
      return refuse("the description was read over IPv4: give the router's IPv6 address, pinholes are asked for over IPv6")
    }
    const routerIp = canonicalIpv6(options.routerIpv6)
    if (Result.isFailure(routerIp)) return refuse(`router address ${JSON.stringify(options.routerIpv6)} ${routerIp.failure.reason}`)
    url.hostname = `[${routerIp.success}]`
  }
  return firewallEndpoint(url.href, service.serviceType)
}

// ---------------------------------------------------------------------------------------------
// Actions

const protocolNumber = (protocol: Protocol): string => (protocol === "TCP" ? "6" : "17")

const invoke = Effect.fnUntraced(function*(
  endpoint: FirewallEndpoint,
  action: string,
  args: ReadonlyArray<readonly [string, string]>,
  request: PinholeRequestContext,
  idempotent: boolean
) {
  const soap = yield* SoapTransport
  return yield* soap.call({ controlUrl: endpoint.controlUrl, serviceType: endpoint.serviceType, action, args, idempotent }).pipe(
    Effect.catchTag("UpnpError", (fault: UpnpError) => Effect.fail(toPinholeError(fault, request)))
  )
})

/** A UPnP fault as the pinhole error it is for this request. */
export const toPinholeError = (fault: UpnpError, request: PinholeRequestContext): PinholeError =>
  new PinholeError({
    router: fault.router,
    action: fault.action,
    code: fault.code,
    description: fault.description,
    meaning: pinholeFaultMeaning(fault.action, fault.code, request),
    ...(request.uniqueId === undefined ? {} : { uniqueId: request.uniqueId })
  })

/** Errors of a pinhole action: a refusal explained, or the transport's own. */
export type PinholeActionError = PinholeError | Exclude<SoapError, UpnpError> | InvalidMapping

const decoded = <T>(endpoint: FirewallEndpoint, action: string, schema: Schema.ConstraintDecoder<T>) =>
  decodeResponse(schema, { router: endpoint.controlUrl, action })

const refuse = (endpoint: FirewallEndpoint, action: string, field: string, reason: string) =>
  new InvalidMapping({ router: endpoint.controlUrl, action, field, reason })

const checkLease = (endpoint: FirewallEndpoint, action: string, field: string, seconds: number) =>
  Number.isInteger(seconds) && seconds >= PINHOLE_LEASE_SECONDS.min && seconds <= PINHOLE_LEASE_SECONDS.max
    ? Effect.void
    : Effect.fail(
      refuse(endpoint, action, field, `${seconds} is not ${PINHOLE_LEASE_SECONDS.min}-${PINHOLE_LEASE_SECONDS.max} seconds`)
    )

const checkUniqueId = (endpoint: FirewallEndpoint, action: string, uniqueId: number) =>
  Number.isInteger(uniqueId) && uniqueId >= 0 && uniqueId <= 65535
    ? Effect.void
    : Effect.fail(refuse(endpoint, action, "UniqueID", `${uniqueId} is not a pinhole ID (0-65535)`))

/** Whether the router's IPv6 firewall is on and lets pinholes be opened. */
export const getFirewallStatus = Effect.fn("Pinholes.getFirewallStatus")(function*(endpoint: FirewallEndpoint) {
  const values = yield* invoke(endpoint, "GetFirewallStatus", [], {}, true)
  const status = yield* decoded(endpoint, "GetFirewallStatus", FirewallStatusResponse)(values)
  return { firewallEnabled: status.FirewallEnabled, inboundPinholeAllowed: status.InboundPinholeAllowed } satisfies FirewallStatus
})

/**
 * Opens a pinhole and returns its UniqueID. The InternalClient is sent in canonical form; the
 * call is never repeated once the router may have acted on it (a repeat spoils the expiry).
 */
export const addPinhole = Effect.fn("Pinholes.addPinhole")(function*(endpoint: FirewallEndpoint, request: PinholeRequest) {
  const action = "AddPinhole"
  const client = canonicalIpv6(request.internalClient)
  if (Result.isFailure(client)) {
    return yield* refuse(endpoint, action, "InternalClient", `${JSON.stringify(request.internalClient)} ${client.failure.reason}`)
  }
  if (!isMappablePort(request.internalPort)) {
    return yield* refuse(endpoint, action, "InternalPort", `${request.internalPort} is not a port in 1-65535`)
  }
  const remotePort = request.remotePort ?? 0
  if (remotePort !== 0 && !isMappablePort(remotePort)) {
    return yield* refuse(endpoint, action, "RemotePort", `${remotePort} is not 0 (any) or a port in 1-65535`)
  }
  let remoteHost = ""
  if (request.remoteHost !== undefined && request.remoteHost !== "") {
    const canonical = canonicalIpv6(request.remoteHost)
    if (Result.isFailure(canonical)) {
      return yield* refuse(endpoint, action, "RemoteHost", `${JSON.stringify(request.remoteHost)} ${canonical.failure.reason}`)
    }
    remoteHost = canonical.success
  }
  yield* checkLease(endpoint, action, "LeaseTime", request.leaseSeconds)
  const values = yield* invoke(endpoint, action, [
    ["RemoteHost", remoteHost],
    ["RemotePort", String(remotePort)],
    ["InternalClient", client.success],
    ["InternalPort", String(request.internalPort)],
    ["Protocol", protocolNumber(request.protocol)],
    ["LeaseTime", String(request.leaseSeconds)]
  ], { internalClient: client.success, internalPort: request.internalPort }, false)
  const response = yield* decoded(endpoint, action, AddPinholeResponse)(values)
  return response.UniqueID
})

/** Renews a pinhole's lease: the one way to renew (re-adding is a miniupnpd 2.3.1 bug). */
export const updatePinhole = Effect.fn("Pinholes.updatePinhole")(
  function*(endpoint: FirewallEndpoint, uniqueId: number, leaseSeconds: number) {
    yield* checkUniqueId(endpoint, "UpdatePinhole", uniqueId)
    yield* checkLease(endpoint, "UpdatePinhole", "NewLeaseTime", leaseSeconds)
    yield* invoke(endpoint, "UpdatePinhole", [["UniqueID", String(uniqueId)], ["NewLeaseTime", String(leaseSeconds)]], {
      uniqueId
    }, true)
  }
)

/** Closes a pinhole. Not repeated: a repeat after success would report a gone pinhole (402). */
export const deletePinhole = Effect.fn("Pinholes.deletePinhole")(function*(endpoint: FirewallEndpoint, uniqueId: number) {
  yield* checkUniqueId(endpoint, "DeletePinhole", uniqueId)
  yield* invoke(endpoint, "DeletePinhole", [["UniqueID", String(uniqueId)]], { uniqueId }, false)
})

/** One read-only action on one pinhole, its reply decoded by `schema`. */
const askAboutPinhole = <T>(
  endpoint: FirewallEndpoint,
  action: string,
  uniqueId: number,
  schema: Schema.ConstraintDecoder<T>
) =>
  Effect.gen(function*() {
    yield* checkUniqueId(endpoint, action, uniqueId)
    const values = yield* invoke(endpoint, action, [["UniqueID", String(uniqueId)]], { uniqueId }, true)
    return yield* decoded(endpoint, action, schema)(values)
  })

/** Whether the router has seen traffic through the pinhole (709 NoPacketSent when not). */
export const checkPinholeWorking = Effect.fn("Pinholes.checkPinholeWorking")(
  function*(endpoint: FirewallEndpoint, uniqueId: number) {
    return (yield* askAboutPinhole(endpoint, "CheckPinholeWorking", uniqueId, CheckPinholeWorkingResponse)).IsWorking
  }
)

/** How many packets the router counted through the pinhole. */
export const getPinholePackets = Effect.fn("Pinholes.getPinholePackets")(
  function*(endpoint: FirewallEndpoint, uniqueId: number) {
    return (yield* askAboutPinhole(endpoint, "GetPinholePackets", uniqueId, PinholePacketsResponse)).PinholePackets
  }
)
