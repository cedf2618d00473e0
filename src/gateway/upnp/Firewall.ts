/**
 * The router's IPv6 firewall as the controller uses it, through one or two routes: UPnP IGD:2
 * (the static control URL, or the `WANIPv6FirewallControl:1` service of the router's IGD:2
 * description) and PCP MAP over IPv6 (`pcp/PcpFirewall.ts`), which also opens the ports below
 * 1024 miniupnpd refuses over UPnP. It finds the node's address a pinhole opens (the kernel's
 * source address toward the router), each route's boot time (the evidence that a recorded
 * handle still names our pinhole), and carries out the three actions. It also remembers when
 * it last opened or renewed each pinhole, so renewals come at half the lease without a record
 * write per renewal.
 */
import { Clock, Context, Effect, Layer, Ref, Result } from "effect"
import {
  FirewallUnavailable,
  type GatewayProtocolError,
  type GatewayUnreachable,
  InvalidMapping,
  type NoGlobalIpv6Address,
  type PortControlError
} from "../GatewayError.ts"
import { type Ipv6SourceOptions, localIpv6AddressToward } from "../localAddress.ts"
import type { Protocol } from "../Mapping.ts"
import { makePcpFirewallBackend, type PcpFirewallOptions } from "../pcp/PcpFirewall.ts"
import { Description, type RootDescription } from "./Description.ts"
import { getStatusInfo, type IgdEndpoint } from "./IgdActions.ts"
import type { PinholeError } from "./PinholeError.ts"
import * as Pinholes from "./Pinholes.ts"
import { SoapTransport } from "./SoapTransport.ts"

export { FirewallUnavailable }

/** Which protocol opens a pinhole: UPnP IGD:2's firewall service, or a PCP MAP sent over IPv6. */
export type PinholeProtocol = "upnp-igd" | "pcp"

/** One way to the router's firewall that answered, as a pass sees it. */
export interface FirewallRoute {
  /** The firewall control URL, or `pcp://[<router>]:5351`: a recorded pinhole belongs to this route only. */
  readonly router: string
  readonly protocol: PinholeProtocol
  /**
   * When the router booted (Clock milliseconds: now minus its uptime or PCP epoch, whole
   * seconds), or undefined when it does not say: then no recorded pinhole is provably still ours.
   */
  readonly bootedAt: number | undefined
  /** Whether it opens ports below 1024 (miniupnpd refuses them over UPnP, opens them over PCP). */
  readonly opensLowPorts: boolean
}

/** What a pass needs to know of the firewall before it plans. */
export interface FirewallView {
  /** The node's address, canonical: what pinholes open and what is published. */
  readonly nodeAddress: string
  /** The routes that answered, in order of preference; never empty. */
  readonly routes: ReadonlyArray<FirewallRoute>
}

/** Errors of a firewall action or view. */
export type FirewallError =
  | FirewallUnavailable
  | PinholeError
  | Pinholes.PinholeActionError
  | PortControlError
  | GatewayUnreachable
  | GatewayProtocolError

/** What opening one pinhole asks. */
export interface OpenPinhole {
  readonly internalClient: string
  readonly port: number
  readonly protocol: Protocol
  readonly leaseSeconds: number
}

/**
 * The router's handle on one pinhole: UPnP's UniqueID, or the PCP nonce (PCP names a pinhole
 * by node address, protocol and port; the nonce is what lets its owner delete it).
 */
export interface PinholeHandle {
  readonly uniqueId?: number | undefined
  readonly nonce?: string | undefined
}

/** A pinhole held: what renewing or deleting it needs. */
export interface HeldPinhole extends PinholeHandle {
  readonly protocol: Protocol
  readonly port: number
  readonly internalClient: string
  /** The route it was opened through (`FirewallRoute.router`). */
  readonly router: string
}

/** The router's IPv6 firewall, through whichever routes answer. */
export class Firewall extends Context.Service<Firewall, {
  /** The lease every pinhole is asked for, in seconds. */
  readonly leaseSeconds: number
  /** The node's address and the routes with their boot times, asked afresh (the boot time is the proof). */
  readonly view: Effect.Effect<FirewallView, FirewallError>
  /** Opens a pinhole through `router` (a route of the view): its handle. Never repeated by the client. */
  readonly add: (router: string, request: OpenPinhole) => Effect.Effect<PinholeHandle, FirewallError>
  /** Renews a held pinhole: its handle afterwards (PCP's changes, UPnP's does not). */
  readonly update: (pinhole: HeldPinhole, leaseSeconds: number) => Effect.Effect<PinholeHandle, FirewallError>
  /** Deletes a held pinhole. */
  readonly remove: (pinhole: HeldPinhole) => Effect.Effect<void, FirewallError>
  /** When this process last opened or renewed the pinhole (Clock ms), if it did. */
  readonly renewedAt: (pinhole: HeldPinhole) => Effect.Effect<number | undefined>
}>()("edge-ccm/gateway/upnp/Firewall") {
  /** A firewall that opens nothing, and says why (IPv6 not configured). */
  static layerOff(reason: string): Layer.Layer<Firewall> {
    return Layer.succeed(Firewall, firewallOff(reason))
  }

  /** The firewall found from the options: UPnP over the SOAP transport, PCP over UDP. */
  static layer(options: FirewallOptions): Layer.Layer<Firewall, never, SoapTransport | Description> {
    return Layer.effect(Firewall, makeFirewall(options))
  }
}

/** A firewall that opens nothing, and says why. */
export const firewallOff = (reason: string): Firewall["Service"] => {
  const off = Effect.fail(new FirewallUnavailable({ reason }))
  return Firewall.of({
    leaseSeconds: DEFAULT_PINHOLE_LEASE_SECONDS,
    view: off,
    add: () => off,
    update: () => off,
    remove: () => off,
    renewedAt: () => Effect.succeed(undefined)
  })
}

/** Where the firewall is, and which node addresses may be published. */
export interface FirewallOptions extends Ipv6SourceOptions {
  /** Which protocols open pinholes (`--pinhole-protocol`, default `auto`: UPnP, then PCP for what UPnP cannot). */
  readonly protocol?: PinholeProtocol | "auto" | undefined
  /** The control URL on the router's IPv6 address (`--firewall-url`). */
  readonly firewallUrl?: string | undefined
  /** The router's root description (`--gateway-url`): its firewall service is used. */
  readonly descriptionUrl?: string | undefined
  /** The router's IPv6 address, for a description read over IPv4 and for PCP (`--gateway-address6`). */
  readonly routerIpv6?: string | undefined
  /**
   * Finds the router's IGD:2 description when no URL is given: SSDP on ff02::c (`SsdpSearch6.ts`);
   * undefined when nothing answered.
   */
  readonly discoverDescription?: Effect.Effect<string | undefined, FirewallUnavailable> | undefined
  /** How long a search that found nothing is not repeated, in ms (default 60 s: each search waits its window). */
  readonly rediscoverAfter?: number | undefined
  /** The router's IPv6 address when no flag gives it: the IPv6 default route's gateway. */
  readonly defaultRouterIpv6?: Effect.Effect<string, FirewallUnavailable> | undefined
  /** PCP's port, patience and sockets (tests replace them). */
  readonly pcp?: Omit<PcpFirewallOptions, "routerAddress"> | undefined
  /** Seconds, 1-86400 (default `DEFAULT_PINHOLE_LEASE_SECONDS`). */
  readonly leaseSeconds?: number | undefined
  /** How the node's address toward the router is found (default: the kernel's choice, `localIpv6AddressToward`). */
  readonly sourceAddress?:
    | ((routerIp: string, routerPort: number) => Effect.Effect<string, NoGlobalIpv6Address | GatewayUnreachable>)
    | undefined
}

/**
 * Ten minutes: a pinhole outlives the node that asked for it by up to its lease (after a
 * failover nobody else may delete it), and renewing at half of it costs one call per pinhole
 * every five minutes.
 */
export const DEFAULT_PINHOLE_LEASE_SECONDS = 600

/** Where a route is: its name in records, and the address the node's source is chosen toward. */
export interface RouteLocation {
  readonly router: string
  readonly routerIp: string
  readonly routerPort: number
}

/** One route's implementation (UPnP here, PCP in `pcp/PcpFirewall.ts`). */
export interface FirewallBackend {
  readonly protocol: PinholeProtocol
  readonly opensLowPorts: boolean
  /** Found once and kept until a call fails; FirewallUnavailable when it opens nothing for us. */
  readonly locate: Effect.Effect<RouteLocation, FirewallError>
  /** The router's boot time, asked afresh (undefined: it does not say). */
  readonly bootedAt: (nodeAddress: string) => Effect.Effect<number | undefined, FirewallError>
  readonly add: (request: OpenPinhole) => Effect.Effect<PinholeHandle, FirewallError>
  readonly update: (pinhole: HeldPinhole, leaseSeconds: number) => Effect.Effect<PinholeHandle, FirewallError>
  readonly remove: (pinhole: HeldPinhole) => Effect.Effect<void, FirewallError>
  /** Drops what `locate` found: the next call finds it again. */
  readonly forget: Effect.Effect<void>
}

/** Where pinhole actions go, and where the router's uptime is read. */
interface Located {
  readonly endpoint: Pinholes.FirewallEndpoint
  readonly uptimeFrom: IgdEndpoint | undefined
}

/** The UPnP IGD:2 route: `WANIPv6FirewallControl:1` over SOAP. */
const makeUpnpBackend = Effect.fnUntraced(function*(options: FirewallOptions) {
  const soap = yield* SoapTransport
  const descriptions = yield* Description
  const provide = Effect.provideService(SoapTransport, soap)
  const located = yield* Ref.make<Located | undefined>(undefined)
  // A search that found nothing waits its whole window: it is not repeated on every pass.
  const searchQuietUntil = yield* Ref.make(0)

  /** The description's URL: given, or found over IPv6. */
  const descriptionUrl = Effect.gen(function*() {
    if (options.descriptionUrl !== undefined) return options.descriptionUrl
    if (options.discoverDescription === undefined) return undefined
    const now = yield* Clock.currentTimeMillis
    const quietUntil = yield* Ref.get(searchQuietUntil)
    const found = now < quietUntil ? undefined : yield* options.discoverDescription
    if (found !== undefined) return found
    if (now >= quietUntil) yield* Ref.set(searchQuietUntil, now + (options.rediscoverAfter ?? 60_000))
    return yield* new FirewallUnavailable({
      reason: "no IGD:2 description answered an SSDP search on ff02::c: give --firewall-url or --gateway-url"
    })
  })

  const find: Effect.Effect<Located, FirewallError> = Effect.gen(function*() {
    const known = yield* Ref.get(located)
    if (known !== undefined) return known
    let found: Located
    const location = options.firewallUrl === undefined ? yield* descriptionUrl : undefined
    if (options.firewallUrl !== undefined) {
      found = { endpoint: yield* Effect.fromResult(Pinholes.firewallEndpoint(options.firewallUrl)), uptimeFrom: undefined }
    } else if (location !== undefined) {
      const description = yield* descriptions.fetch(location)
      // A description read over IPv4 is called on the router's IPv6 address: the flag's, else the default route's.
      const routerIpv6 = options.routerIpv6 ??
        (options.defaultRouterIpv6 === undefined ? undefined : yield* Effect.option(options.defaultRouterIpv6).pipe(
          Effect.map((found) => found._tag === "Some" ? found.value : undefined)
        ))
      const endpoint = Pinholes.firewallEndpointFrom(description, { routerIpv6 })
      // No service, or one we must not call as described: asking again will not change that.
      if (Result.isFailure(endpoint)) {
        const failure = endpoint.failure
        return yield* new FirewallUnavailable({ reason: failure._tag === "GatewayNotFound" ? failure.reason : failure.message })
      }
      const wan = description.wanServices[0]
      found = {
        endpoint: endpoint.success,
        uptimeFrom: wan === undefined
          ? uptimeOverIpv6(description, endpoint.success)
          : { controlUrl: wan.controlUrl, serviceType: wan.serviceType, igdV2: wan.igdV2 }
      }
    } else {
      return yield* new FirewallUnavailable({
        reason: "no UPnP IPv6 firewall configured: give --firewall-url, or --gateway-url with the router's IGD:2 description"
      })
    }
    // A router that describes the service but does not answer on its IPv6 address has IPv6 off
    // (miniupnpd with ipv6_disable=yes still lists the service): nothing to retry until it changes.
    const status = yield* provide(Pinholes.getFirewallStatus(found.endpoint)).pipe(
      Effect.catchTag("GatewayUnreachable", (error: GatewayUnreachable) =>
        Effect.fail(
          new FirewallUnavailable({
            reason: `the router's firewall service does not answer over IPv6 at ${found.endpoint.controlUrl} (${error.reason}): is IPv6 off on the router?`
          })
        ))
    )
    if (!status.inboundPinholeAllowed) {
      return yield* new FirewallUnavailable({ reason: `the router's firewall does not allow inbound pinholes (${found.endpoint.controlUrl})` })
    }
    yield* Ref.set(located, found)
    return found
  })

  const uniqueIdOf = (pinhole: HeldPinhole) =>
    pinhole.uniqueId === undefined
      ? Effect.fail(new InvalidMapping({ router: pinhole.router, action: "pinhole", field: "uniqueId", reason: "the record holds no UniqueID" }))
      : Effect.succeed(pinhole.uniqueId)

  return {
    protocol: "upnp-igd",
    opensLowPorts: false,
    locate: Effect.map(find, ({ endpoint }) => ({ router: endpoint.controlUrl, routerIp: endpoint.routerIp, routerPort: endpoint.routerPort })),
    bootedAt: () =>
      Effect.gen(function*() {
        const { uptimeFrom } = yield* find
        if (uptimeFrom === undefined) return undefined
        // A router that refuses to say its uptime gives no proof: recorded IDs are then never touched.
        const info = yield* provide(getStatusInfo(uptimeFrom)).pipe(Effect.catchTag("UpnpError", () => Effect.succeed(undefined)))
        const now = yield* Clock.currentTimeMillis
        return info?.uptimeSeconds === undefined ? undefined : now - info.uptimeSeconds * 1000
      }),
    add: (request) =>
      Effect.gen(function*() {
        const { endpoint } = yield* find
        const uniqueId = yield* provide(Pinholes.addPinhole(endpoint, {
          internalClient: request.internalClient,
          internalPort: request.port,
          protocol: request.protocol,
          leaseSeconds: request.leaseSeconds
        }))
        return { uniqueId }
      }),
    update: (pinhole, seconds) =>
      Effect.gen(function*() {
        const { endpoint } = yield* find
        const uniqueId = yield* uniqueIdOf(pinhole)
        yield* provide(Pinholes.updatePinhole(endpoint, uniqueId, seconds))
        return { uniqueId }
      }),
    remove: (pinhole) =>
      Effect.gen(function*() {
        const { endpoint } = yield* find
        yield* provide(Pinholes.deletePinhole(endpoint, yield* uniqueIdOf(pinhole)))
      }),
    forget: Ref.set(located, undefined)
  } satisfies FirewallBackend
})

/**
 * Where the uptime is read when the description was read over IPv6: its WAN service is not
 * one to map through (mappings go over IPv4), but on the firewall's own origin it answers
 * GetStatusInfo, the reboot evidence.
 */
const uptimeOverIpv6 = (description: RootDescription, endpoint: Pinholes.FirewallEndpoint): IgdEndpoint | undefined => {
  const origin = new URL(endpoint.controlUrl).origin
  const wan = description.refused.find((service) =>
    /:service:WANIPConnection:[12]$/.test(service.serviceType) && URL.canParse(service.controlUrl) &&
    new URL(service.controlUrl).origin === origin
  )
  return wan === undefined ? undefined : { controlUrl: wan.controlUrl, serviceType: wan.serviceType, igdV2: wan.serviceType.endsWith(":2") }
}

/** The router's IPv6 address for PCP: the flag, the firewall URL's host, or the IPv6 default route's gateway. */
const pcpRouterAddress = (options: FirewallOptions): Effect.Effect<string, FirewallUnavailable> => {
  if (options.routerIpv6 !== undefined) return Effect.succeed(options.routerIpv6)
  const fromUrl = options.firewallUrl === undefined ? undefined : Pinholes.firewallEndpoint(options.firewallUrl)
  if (fromUrl !== undefined && Result.isSuccess(fromUrl)) return Effect.succeed(fromUrl.success.routerIp)
  return options.defaultRouterIpv6 ??
    Effect.fail(new FirewallUnavailable({ reason: "no router IPv6 address for PCP: give --gateway-address6" }))
}

const makeFirewall = Effect.fnUntraced(function*(options: FirewallOptions) {
  const protocol = options.protocol ?? "auto"
  const backends: Array<FirewallBackend> = []
  if (protocol !== "pcp") backends.push(yield* makeUpnpBackend(options))
  if (protocol !== "upnp-igd") backends.push(yield* makePcpFirewallBackend({ ...options.pcp, routerAddress: pcpRouterAddress(options) }))
  const renewals = yield* Ref.make<ReadonlyMap<string, number>>(new Map())
  const routes = yield* Ref.make<ReadonlyMap<string, FirewallBackend>>(new Map())
  const leaseSeconds = options.leaseSeconds ?? DEFAULT_PINHOLE_LEASE_SECONDS
  const sourceAddress = options.sourceAddress ??
    ((routerIp: string, routerPort: number) => localIpv6AddressToward(routerIp, routerPort, options))

  const renewalKey = (pinhole: { readonly router: string; readonly protocol: Protocol; readonly port: number }) =>
    `${pinhole.router}#${pinhole.protocol}/${pinhole.port}`
  const stamp = (pinhole: { readonly router: string; readonly protocol: Protocol; readonly port: number }) =>
    Effect.flatMap(Clock.currentTimeMillis, (now) => Ref.update(renewals, (all) => new Map(all).set(renewalKey(pinhole), now)))

  /** A failure may mean another router or a moved service: find it again next time. */
  const forgetOnFailure = (backend: FirewallBackend) => <A, E>(effect: Effect.Effect<A, E>) =>
    Effect.tapError(effect, (error) =>
      typeof error === "object" && error !== null && "_tag" in error &&
        (error._tag === "PinholeError" || error._tag === "PortControlError")
        ? Effect.void
        : backend.forget)

  const backendOf = (router: string) =>
    Effect.flatMap(Ref.get(routes), (known) => {
      const backend = known.get(router)
      return backend === undefined
        ? Effect.fail(new FirewallUnavailable({ reason: `${router} is not a route to the firewall that answered` }))
        : Effect.succeed(backend)
    })

  const view = Effect.gen(function*() {
    const found: Array<{ readonly backend: FirewallBackend; readonly location: RouteLocation }> = []
    const unavailable: Array<string> = []
    for (const backend of backends) {
      const location = yield* Effect.result(forgetOnFailure(backend)(backend.locate))
      if (location._tag === "Success") found.push({ backend, location: location.success })
      else if (location.failure._tag === "FirewallUnavailable") unavailable.push(location.failure.reason)
      else return yield* location.failure
    }
    const first = found[0]
    if (first === undefined) return yield* new FirewallUnavailable({ reason: unavailable.join("; ") })
    const nodeAddress = yield* sourceAddress(first.location.routerIp, first.location.routerPort).pipe(
      Effect.catchTag("NoGlobalIpv6Address", (error: NoGlobalIpv6Address) => Effect.fail(new FirewallUnavailable({ reason: error.message })))
    )
    const answered: Array<FirewallRoute> = []
    const known = new Map<string, FirewallBackend>()
    for (const { backend, location } of found) {
      const bootedAt = yield* Effect.result(forgetOnFailure(backend)(backend.bootedAt(nodeAddress)))
      if (bootedAt._tag === "Failure") {
        if (bootedAt.failure._tag !== "FirewallUnavailable") return yield* bootedAt.failure
        unavailable.push(bootedAt.failure.reason)
        continue
      }
      known.set(location.router, backend)
      answered.push({ router: location.router, protocol: backend.protocol, bootedAt: bootedAt.success, opensLowPorts: backend.opensLowPorts })
    }
    if (answered.length === 0) return yield* new FirewallUnavailable({ reason: unavailable.join("; ") })
    yield* Ref.set(routes, known)
    return { nodeAddress, routes: answered } satisfies FirewallView
  }).pipe(Effect.withSpan("Firewall.view"))

  return Firewall.of({
    leaseSeconds,
    view,
    add: (router, request) =>
      Effect.gen(function*() {
        const backend = yield* backendOf(router)
        const handle = yield* forgetOnFailure(backend)(backend.add(request))
        yield* stamp({ router, protocol: request.protocol, port: request.port })
        return handle
      }).pipe(Effect.withSpan("Firewall.add")),
    update: (pinhole, seconds) =>
      Effect.gen(function*() {
        const backend = yield* backendOf(pinhole.router)
        const handle = yield* forgetOnFailure(backend)(backend.update(pinhole, seconds))
        yield* stamp(pinhole)
        return handle
      }).pipe(Effect.withSpan("Firewall.update")),
    remove: (pinhole) =>
      Effect.gen(function*() {
        const backend = yield* backendOf(pinhole.router)
        yield* forgetOnFailure(backend)(backend.remove(pinhole))
        yield* Ref.update(renewals, (all) => {
          const left = new Map(all)
          left.delete(renewalKey(pinhole))
          return left
        })
      }).pipe(Effect.withSpan("Firewall.remove")),
    renewedAt: (pinhole) => Effect.map(Ref.get(renewals), (all) => all.get(renewalKey(pinhole)))
  })
})
