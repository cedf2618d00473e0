/**
 * The router's root description: fetched with a size cap and a timeout, read leniently, every
 * device walked, and its WAN connection services listed with absolute control URLs, best first.
 */
import { Context, Duration, Effect, Layer, Result } from "effect"
import { HttpClient, HttpClientRequest } from "effect/http"
import { NetAddress } from "effect/net"
import { GatewayProtocolError, GatewayUnreachable } from "../GatewayError.ts"
import { fromHttpClientError, readBodyCapped, routerClient, timedOut } from "./HttpExchange.ts"
import { isOnDirectlyConnectedLan } from "./LanGuard.ts"
import { childElements, decodeText, findChild, findPath, localName, parseDocument, textOf, type XmlElement } from "./XmlDocument.ts"

/** The WAN connection service flavours a client can program, in miniupnpc's order of preference. */
export type WanServiceKind =
  | "WANIPConnection:2"
  | "WANIPConnection:1"
  | "WANPPPConnection:2"
  | "WANPPPConnection:1"

/** One WAN connection service of a gateway: what the SOAP actions are sent to. */
export interface WanService {
  /** The root description URL this service was found in. */
  readonly location: string
  /** The root device's type, e.g. `urn:schemas-upnp-org:device:InternetGatewayDevice:2`. */
  readonly deviceType: string
  /** As the device wrote it; also the SOAPAction namespace. */
  readonly serviceType: string
  readonly kind: WanServiceKind
  /** Absolute `http://<ipv4>:<port>/path`. */
  readonly controlUrl: string
  /** Lower is better: WANIPConnection:2, :1 (dslforum's :1 just after), WANPPPConnection:2, :1. */
  readonly preference: number
  /** IGDv2 actions (AddAnyPortMapping, GetListOfPortMappings) may be tried. */
  readonly igdV2: boolean
  /** Absolute GENA event URL, only when on the control URL's host and port; else undefined. */
  readonly eventSubUrl?: string | undefined
}

/** A WAN service whose control URL we refuse to call, and why. */
export interface RefusedService {
  readonly serviceType: string
  readonly controlUrl: string
  readonly reason: string
}

export interface RootDescription {
  readonly location: string
  readonly deviceType: string
  readonly friendlyName: string | undefined
  readonly manufacturer: string | undefined
  readonly modelName: string | undefined
  readonly urlBase: string | undefined
  /** Every service of every device, as `serviceType` strings. */
  readonly serviceTypes: ReadonlyArray<string>
  /** Usable WAN connection services, best first. */
  readonly wanServices: ReadonlyArray<WanService>
  readonly refused: ReadonlyArray<RefusedService>
  /**
   * IGD:2's `WANIPv6FirewallControl:1` services (IPv6 pinholes), control URLs made absolute
   * but not yet vetted: Pinholes.ts decides where they may be called.
   */
  readonly firewallServices: ReadonlyArray<{ readonly serviceType: string; readonly controlUrl: string }>
}

export interface DescriptionOptions {
  readonly timeout: Duration.Input
  readonly maxResponseBytes: number
  /**
   * Whether a control URL host other than the description's own may be called. Defaults to
   * "on a directly connected LAN subnet": a description must not send us anywhere else.
   */
  readonly isAllowedHost: (ip: string) => boolean
}

export const defaultDescriptionOptions: DescriptionOptions = {
  timeout: "5 seconds",
  maxResponseBytes: 64 * 1024,
  isAllowedHost: isOnDirectlyConnectedLan
}

const FIREWALL_SERVICE = /^urn:schemas-upnp-org:service:WANIPv6FirewallControl:1$/i

const WAN_SERVICE = /^urn:(schemas-upnp-org|dslforum-org):service:(WANIPConnection|WANPPPConnection):(\d+)$/i

const classifyService = (serviceType: string): { kind: WanServiceKind; preference: number } | undefined => {
  const match = WAN_SERVICE.exec(serviceType)
  if (match === null) return undefined
  const legacy = match[1]!.toLowerCase() === "dslforum-org"
  const ip = match[2]!.toLowerCase() === "wanipconnection"
  const version = Number(match[3])
  if (ip && version === 2 && !legacy) return { kind: "WANIPConnection:2", preference: 0 }
  if (ip && version === 1) return { kind: "WANIPConnection:1", preference: legacy ? 2 : 1 }
  // Orange Livebox serves a non-standard WANPPPConnection:2.
  if (!ip && version === 2 && !legacy) return { kind: "WANPPPConnection:2", preference: 3 }
  if (!ip && version === 1) return { kind: "WANPPPConnection:1", preference: legacy ? 5 : 4 }
  return undefined
}

const parseAbsolute = (text: string): URL | undefined => {
  if (!/^https?:\/\//i.test(text)) return undefined
  return URL.canParse(text) ? new URL(text) : undefined
}

/**
 * miniupnpc's rule: an absolute URL is used as it is; otherwise the path is rooted at the host
 * of URLBase when present, or else of LOCATION (scheme://host:port, its path dropped).
 */
export const resolveControlUrl = (
  controlUrl: string,
  location: string,
  urlBase: string | undefined
): string | undefined => {
  const absolute = parseAbsolute(controlUrl)
  if (absolute !== undefined) return absolute.href
  const base = (urlBase !== undefined && urlBase !== "" ? parseAbsolute(urlBase) : undefined) ?? parseAbsolute(location)
  if (base === undefined) return undefined
  const path = controlUrl.startsWith("/") ? controlUrl : `/${controlUrl}`
  const joined = `${base.protocol}//${base.host}${path}`
  return URL.canParse(joined) ? new URL(joined).href : undefined
}

/** Why a control URL must not be called, or undefined when it may. */
const refuseControlUrl = (
  controlUrl: string,
  location: string,
  isAllowedHost: (ip: string) => boolean
): string | undefined => {
  const url = new URL(controlUrl)
  if (url.protocol !== "http:") return `scheme ${url.protocol} is not http`
  if (Result.isFailure(NetAddress.ipv4FromString(url.hostname))) {
    return `host ${url.hostname} is not a numeric IPv4 address`
  }
  const locationHost = parseAbsolute(location)?.hostname
  if (url.hostname === locationHost || isAllowedHost(url.hostname)) return undefined
  return `host ${url.hostname} is neither the description's host nor on a directly connected LAN`
}

/** The event URL, when it is on the (vetted) control URL's origin: events go nowhere else. */
const sameOrigin = (eventSubUrl: string | undefined, controlUrl: string): string | undefined =>
  eventSubUrl !== undefined && new URL(eventSubUrl).origin === new URL(controlUrl).origin ? eventSubUrl : undefined

interface RawService {
  readonly serviceType: string
  readonly controlUrl: string | undefined
  readonly eventSubUrl: string | undefined
}

/** Every `service` element anywhere under the root: devices nest to any depth. */
const collectServices = (element: XmlElement, into: Array<RawService>): Array<RawService> => {
  for (const child of childElements(element)) {
    if (localName(child.name).toLowerCase() === "service") {
      const serviceType = textOf(findChild(child, "serviceType"))
      if (serviceType !== undefined && serviceType !== "") {
        into.push({
          serviceType,
          controlUrl: textOf(findChild(child, "controlURL")),
          eventSubUrl: textOf(findChild(child, "eventSubURL"))
        })
      }
    } else {
      collectServices(child, into)
    }
  }
  return into
}

const nonEmpty = (text: string | undefined): string | undefined => text === undefined || text === "" ? undefined : text

/**
 * Parses a root description. Fails only when the bytes are not a readable UPnP root
 * description; a device without WAN services parses to an empty `wanServices`.
 */
export const parseDescription = Effect.fnUntraced(function*(
  bytes: Uint8Array,
  location: string,
  options?: { readonly isAllowedHost?: ((ip: string) => boolean) | undefined }
) {
  const isAllowedHost = options?.isAllowedHost ?? defaultDescriptionOptions.isAllowedHost
  const protocolError = (reason: string, field?: string) =>
    new GatewayProtocolError({ router: location, action: "root description", reason, ...(field ? { field } : {}) })
  const root = yield* parseDocument(decodeText(bytes)).pipe(
    Effect.mapError((problem) => protocolError(problem.reason))
  )
  if (localName(root.name).toLowerCase() !== "root") {
    return yield* protocolError(`root element is <${root.name}>, not <root>`, "root")
  }
  const device = findChild(root, "device")
  if (device === undefined) return yield* protocolError("no root device", "device")
  const urlBase = nonEmpty(textOf(findChild(root, "URLBase")))
  const deviceType = textOf(findChild(device, "deviceType")) ?? ""
  const services = collectServices(root, [])
  const wanServices: Array<WanService> = []
  const refused: Array<RefusedService> = []
  const firewallServices: Array<{ serviceType: string; controlUrl: string }> = []
  for (const service of services) {
    if (FIREWALL_SERVICE.test(service.serviceType)) {
      const controlUrl = resolveControlUrl(service.controlUrl ?? "", location, urlBase)
      if (controlUrl !== undefined && service.controlUrl) firewallServices.push({ serviceType: service.serviceType, controlUrl })
      continue
    }
    const classified = classifyService(service.serviceType)
    if (classified === undefined) continue
    const rawControlUrl = service.controlUrl ?? ""
    const controlUrl = rawControlUrl === "" ? undefined : resolveControlUrl(rawControlUrl, location, urlBase)
    if (controlUrl === undefined) {
      refused.push({ serviceType: service.serviceType, controlUrl: rawControlUrl, reason: "controlURL missing or unusable" })
      continue
    }
    const refusal = refuseControlUrl(controlUrl, location, isAllowedHost)
    if (refusal !== undefined) {
      refused.push({ serviceType: service.serviceType, controlUrl, reason: refusal })
      continue
    }
    if (wanServices.some((known) => known.controlUrl === controlUrl && known.serviceType === service.serviceType)) continue
    wanServices.push({
      location,
      deviceType,
      serviceType: service.serviceType,
      kind: classified.kind,
      controlUrl,
      preference: classified.preference,
      igdV2: classified.kind === "WANIPConnection:2",
      eventSubUrl: service.eventSubUrl ? sameOrigin(resolveControlUrl(service.eventSubUrl, location, urlBase), controlUrl) : undefined
    })
  }
  return {
    location,
    deviceType,
    friendlyName: nonEmpty(textOf(findPath(root, ["device", "friendlyName"]))),
    manufacturer: nonEmpty(textOf(findPath(root, ["device", "manufacturer"]))),
    modelName: nonEmpty(textOf(findPath(root, ["device", "modelName"]))),
    urlBase,
    serviceTypes: services.map((service) => service.serviceType),
    // A stable sort keeps document order among equals (MikroTik's two WANDevices).
    wanServices: wanServices.sort((a, b) => a.preference - b.preference),
    refused,
    firewallServices
  } satisfies RootDescription
})

/** Fetches and parses root descriptions. */
export class Description extends Context.Service<Description, {
  readonly fetch: (location: string) => Effect.Effect<RootDescription, GatewayUnreachable | GatewayProtocolError>
}>()("edge-ccm/gateway/upnp/Description") {
  /** Needs an `HttpClient`; `UpnpGateway.layer` provides Node's. */
  static make(options?: Partial<DescriptionOptions>) {
    return Effect.gen(function*() {
      const settings = { ...defaultDescriptionOptions, ...options }
      const timeoutMillis = Duration.toMillis(settings.timeout)
      const client = routerClient(yield* HttpClient.HttpClient)
      const fetch = Effect.fn("Description.fetch")(function*(location: string) {
        const context = { router: location, action: "root description" }
        if (parseAbsolute(location) === undefined) {
          return yield* new GatewayProtocolError({ ...context, field: "LOCATION", reason: "not an http URL" })
        }
        const request = HttpClientRequest.get(location).pipe(
          HttpClientRequest.setHeaders({ "Connection": "close", "Accept": "text/xml, application/xml" })
        )
        return yield* Effect.gen(function*() {
          const response = yield* client.execute(request).pipe(
            Effect.mapError((error) => fromHttpClientError(error, context))
          )
          const body = yield* readBodyCapped(response, settings.maxResponseBytes, context)
          if (response.status >= 500) {
            return yield* new GatewayUnreachable({ ...context, reason: `HTTP ${response.status}` })
          }
          if (response.status !== 200) {
            return yield* new GatewayProtocolError({ ...context, reason: `HTTP ${response.status}` })
          }
          return yield* parseDescription(body, location, settings)
        }).pipe(
          Effect.timeoutOrElse({ duration: timeoutMillis, orElse: () => Effect.fail(timedOut(context, timeoutMillis)) })
        )
      })
      return Description.of({ fetch })
    })
  }

  static layer(options?: Partial<DescriptionOptions>): Layer.Layer<Description, never, HttpClient.HttpClient> {
    return Layer.effect(Description, Description.make(options))
  }
}
