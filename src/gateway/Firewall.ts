/**
 * The router's IPv6 firewall as the controller uses it, through one or two routes: UPnP IGD:2
 * (`upnp/UpnpFirewall.ts`) and PCP MAP over IPv6 (`pcp/PcpFirewall.ts`), which also opens the
 * ports below 1024 miniupnpd refuses over UPnP. It finds the node's address a pinhole opens (the
 * kernel's source address toward the router), each route's boot time (the evidence that a
 * recorded handle still names our pinhole), and carries out the three actions. It also
 * remembers when it last opened or renewed each pinhole, so renewals come at half the lease
 * without a record write per renewal.
 */
import { Clock, Context, Duration, Effect, Exit, Layer, Predicate, Ref, Result } from "effect"
import type {
  FirewallBackend,
  FirewallError,
  HeldPinhole,
  OpenPinhole,
  PinholeHandle,
  PinholeProtocol,
  RouteLocation
} from "./FirewallBackend.ts"
import { FirewallUnavailable, type GatewayUnreachable, type NoGlobalIpv6Address } from "./GatewayError.ts"
import { type Ipv6SourceOptions, localIpv6AddressToward } from "./localAddress.ts"
import type { Protocol } from "./Mapping.ts"
import { makePcpFirewallBackend, type PcpFirewallOptions } from "./pcp/PcpFirewall.ts"
import type { Description } from "./upnp/Description.ts"
import * as Pinholes from "./upnp/Pinholes.ts"
import type { SoapTransport } from "./upnp/SoapTransport.ts"
import { makeUpnpFirewallBackend, type UpnpFirewallOptions } from "./upnp/UpnpFirewall.ts"

export { FirewallUnavailable }
export type { FirewallError, HeldPinhole, OpenPinhole, PinholeHandle, PinholeProtocol }

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
}>()("edge-ccm/gateway/Firewall") {
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
export interface FirewallOptions extends Ipv6SourceOptions, UpnpFirewallOptions {
  /** Which protocols open pinholes (`--pinhole-protocol`, default `auto`: UPnP, then PCP for what UPnP cannot). */
  readonly protocol?: PinholeProtocol | "auto" | undefined
  /** PCP's port, patience and sockets (tests replace them). */
  readonly pcp?: Omit<PcpFirewallOptions, "routerAddress"> | undefined
  /** Seconds, 1-86400 (default `DEFAULT_PINHOLE_LEASE_SECONDS`). */
  readonly leaseSeconds?: number | undefined
  /**
   * Where PCP goes when no flag or URL names the router (`ipv6DefaultPcpServer`: the default
   * route's gateway, a link-local one with its interface); else `defaultRouterIpv6`.
   */
  readonly defaultPcpServer?: Effect.Effect<string, FirewallUnavailable> | undefined
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

/** The router's IPv6 address for PCP: the flag, the firewall URL's host, or the IPv6 default route's gateway (link-local too). */
const pcpRouterAddress = (options: FirewallOptions): Effect.Effect<string, FirewallUnavailable> => {
  if (options.routerIpv6 !== undefined) return Effect.succeed(options.routerIpv6)
  const fromUrl = options.firewallUrl === undefined ? undefined : Pinholes.firewallEndpoint(options.firewallUrl)
  if (fromUrl !== undefined && Result.isSuccess(fromUrl)) return Effect.succeed(fromUrl.success.routerIp)
  return options.defaultPcpServer ?? options.defaultRouterIpv6 ??
    Effect.fail(new FirewallUnavailable({ reason: "no router IPv6 address for PCP: give --gateway-address6" }))
}

/** How long one look at the firewall serves the passes that ask after it. */
export const VIEW_SHARED_FOR = Duration.seconds(1)

const makeFirewall = Effect.fnUntraced(function*(options: FirewallOptions) {
  const protocol = options.protocol ?? "auto"
  const backends: Array<FirewallBackend> = []
  if (protocol !== "pcp") backends.push(yield* makeUpnpFirewallBackend(options))
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
      // The router's own answer to this request says nothing about where the route is.
      Predicate.isTagged(error, "PinholeError") || Predicate.isTagged(error, "PortControlError") ? Effect.void : backend.forget)

  const backendOf = (router: string) =>
    Effect.flatMap(Ref.get(routes), (known) => {
      const backend = known.get(router)
      return backend === undefined
        ? Effect.fail(new FirewallUnavailable({ reason: `${router} is not a route to the firewall that answered` }))
        : Effect.succeed(backend)
    })

  const freshView = Effect.gen(function*() {
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
  // The passes of one burst (a resync, a reboot's repair) share one answer, asked once, instead
  // of one uptime read (and one PCP exchange) per dual-stack Service. A view this young proves no
  // less than a pass's own, which its later steps rely on for as long; failures are not kept.
  const view = yield* Effect.cachedWithTTL(freshView, (exit) => Exit.isSuccess(exit) ? VIEW_SHARED_FOR : Duration.zero)

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
