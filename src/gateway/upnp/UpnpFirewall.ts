/**
 * The UPnP IGD:2 route to the router's IPv6 firewall: the `WANIPv6FirewallControl:1` service,
 * at a control URL given or found in the router's description, over SOAP; the router's uptime
 * (from its WAN service) is the boot time that proves a recorded UniqueID still ours.
 */
import { Clock, Effect, Ref, Result } from "effect"
import type { FirewallBackend, FirewallError, HeldPinhole } from "../FirewallBackend.ts"
import { FirewallUnavailable, type GatewayUnreachable, InvalidMapping } from "../GatewayError.ts"
import { Description, type RootDescription } from "./Description.ts"
import { getStatusInfo, type IgdEndpoint } from "./IgdActions.ts"
import * as Pinholes from "./Pinholes.ts"
import { SoapTransport } from "./SoapTransport.ts"

/** Where the UPnP route is: a control URL, a description, or a search for one. */
export interface UpnpFirewallOptions {
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
}

/** Where pinhole actions go, and where the router's uptime is read. */
interface Located {
  readonly endpoint: Pinholes.FirewallEndpoint
  readonly uptimeFrom: IgdEndpoint | undefined
}

/** The UPnP IGD:2 route: `WANIPv6FirewallControl:1` over SOAP. */
export const makeUpnpFirewallBackend = Effect.fnUntraced(function*(options: UpnpFirewallOptions) {
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

