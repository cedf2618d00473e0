/**
 * The router's IPv6 firewall as the controller uses it: where pinholes go (the static control
 * URL, or the `WANIPv6FirewallControl:1` service of the router's IGD:2 description), the
 * node's address a pinhole opens (the kernel's source address toward the router), the router's
 * boot time (the evidence that a recorded UniqueID still names our pinhole), and the three
 * actions. It also remembers when it last added or updated each pinhole, so renewals come at
 * half the lease without a record write per renewal.
 */
import { Clock, Context, Effect, Layer, Ref, Result, Schema } from "effect"
import type { GatewayProtocolError, GatewayUnreachable, NoGlobalIpv6Address } from "../GatewayError.ts"
import { type Ipv6SourceOptions, localIpv6AddressToward } from "../localAddress.ts"
import type { Protocol } from "../Mapping.ts"
import { Description } from "./Description.ts"
import { getStatusInfo, type IgdEndpoint } from "./IgdActions.ts"
import type { PinholeError } from "./PinholeError.ts"
import * as Pinholes from "./Pinholes.ts"
import { SoapTransport } from "./SoapTransport.ts"

/**
 * The router opens no IPv6 pinholes for us: no firewall service, inbound pinholes not
 * allowed, no usable node address, or nothing configured. Said once per Service, never an
 * error per pass: IPv4 goes on unaffected.
 */
export class FirewallUnavailable extends Schema.TaggedError<FirewallUnavailable>()("FirewallUnavailable", {
  reason: Schema.String
}) {
  override get message(): string {
    return this.reason
  }
}

/** What a pass needs to know of the firewall before it plans. */
export interface FirewallView {
  /** The firewall control URL: a recorded pinhole belongs to this router only. */
  readonly router: string
  /** The node's address, canonical: what pinholes open and what is published. */
  readonly nodeAddress: string
  /**
   * When the router booted (Clock milliseconds: now minus its uptime, whole seconds), or
   * undefined when it does not say: then no recorded UniqueID is provably still ours.
   */
  readonly bootedAt: number | undefined
}

/** Errors of a firewall action or view. */
export type FirewallError =
  | FirewallUnavailable
  | PinholeError
  | Pinholes.PinholeActionError
  | GatewayUnreachable
  | GatewayProtocolError

/** What opening one pinhole asks. */
export interface OpenPinhole {
  readonly internalClient: string
  readonly port: number
  readonly protocol: Protocol
  readonly leaseSeconds: number
}

/** The router's IPv6 firewall. */
export class Firewall extends Context.Service<Firewall, {
  /** The lease every pinhole is asked for, in seconds. */
  readonly leaseSeconds: number
  /** The endpoint, the node's address and the router's boot time, asked afresh (the boot time is the proof). */
  readonly view: Effect.Effect<FirewallView, FirewallError>
  /** AddPinhole: the new UniqueID. Never repeated by the client (a repeat spoils the expiry). */
  readonly add: (request: OpenPinhole) => Effect.Effect<number, FirewallError>
  /** UpdatePinhole: the one way to renew. */
  readonly update: (uniqueId: number, leaseSeconds: number) => Effect.Effect<void, FirewallError>
  /** DeletePinhole. */
  readonly remove: (uniqueId: number) => Effect.Effect<void, FirewallError>
  /** When this process last added or updated the pinhole (Clock ms), if it did. */
  readonly renewedAt: (uniqueId: number) => Effect.Effect<number | undefined>
}>()("edge-ccm/gateway/upnp/Firewall") {
  /** A firewall that opens nothing, and says why (IPv6 not configured). */
  static layerOff(reason: string): Layer.Layer<Firewall> {
    return Layer.succeed(Firewall, firewallOff(reason))
  }

  /** The firewall found from the options, over the SOAP transport. */
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
  /** The control URL on the router's IPv6 address (`--firewall-url`). */
  readonly firewallUrl?: string | undefined
  /** The router's root description (`--gateway-url`): its firewall service is used. */
  readonly descriptionUrl?: string | undefined
  /** The router's IPv6 address, for a description read over IPv4 (`--gateway-address6`). */
  readonly routerIpv6?: string | undefined
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

/** Where pinhole actions go, and where the router's uptime is read. */
interface Located {
  readonly endpoint: Pinholes.FirewallEndpoint
  readonly uptimeFrom: IgdEndpoint | undefined
}

const makeFirewall = Effect.fnUntraced(function*(options: FirewallOptions) {
  const soap = yield* SoapTransport
  const descriptions = yield* Description
  const provide = Effect.provideService(SoapTransport, soap)
  const located = yield* Ref.make<Located | undefined>(undefined)
  const renewals = yield* Ref.make<ReadonlyMap<string, number>>(new Map())
  const leaseSeconds = options.leaseSeconds ?? DEFAULT_PINHOLE_LEASE_SECONDS
  const sourceAddress = options.sourceAddress ??
    ((routerIp: string, routerPort: number) => localIpv6AddressToward(routerIp, routerPort, options))

  const locate: Effect.Effect<Located, FirewallError> = Effect.gen(function*() {
    const known = yield* Ref.get(located)
    if (known !== undefined) return known
    let found: Located
    if (options.firewallUrl !== undefined) {
      found = { endpoint: yield* Effect.fromResult(Pinholes.firewallEndpoint(options.firewallUrl)), uptimeFrom: undefined }
    } else if (options.descriptionUrl !== undefined) {
      const description = yield* descriptions.fetch(options.descriptionUrl)
      const endpoint = Pinholes.firewallEndpointFrom(description, { routerIpv6: options.routerIpv6 })
      // No service, or one we must not call as described: asking again will not change that.
      if (Result.isFailure(endpoint)) {
        const failure = endpoint.failure
        return yield* new FirewallUnavailable({ reason: failure._tag === "GatewayNotFound" ? failure.reason : failure.message })
      }
      const wan = description.wanServices[0]
      found = {
        endpoint: endpoint.success,
        uptimeFrom: wan === undefined ? undefined : { controlUrl: wan.controlUrl, serviceType: wan.serviceType, igdV2: wan.igdV2 }
      }
    } else {
      return yield* new FirewallUnavailable({
        reason: "no IPv6 firewall configured: give --firewall-url, or --gateway-url with the router's IGD:2 description"
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

  /** A failure may mean another router or a moved service: find it again next time. */
  const forgetOnFailure = <A, E>(effect: Effect.Effect<A, E>) =>
    Effect.tapError(effect, (error) =>
      typeof error === "object" && error !== null && "_tag" in error && error._tag === "PinholeError"
        ? Effect.void
        : Ref.set(located, undefined))

  const stamp = (router: string, uniqueId: number) =>
    Effect.flatMap(Clock.currentTimeMillis, (now) => Ref.update(renewals, (all) => new Map(all).set(`${router}#${uniqueId}`, now)))

  const view = Effect.gen(function*() {
    const { endpoint, uptimeFrom } = yield* locate
    const nodeAddress = yield* sourceAddress(endpoint.routerIp, endpoint.routerPort).pipe(
      Effect.catchTag("NoGlobalIpv6Address", (error: NoGlobalIpv6Address) => Effect.fail(new FirewallUnavailable({ reason: error.message })))
    )
    let bootedAt: number | undefined
    if (uptimeFrom !== undefined) {
      // A router that refuses to say its uptime gives no proof: recorded IDs are then never touched.
      const info = yield* provide(getStatusInfo(uptimeFrom)).pipe(Effect.catchTag("UpnpError", () => Effect.succeed(undefined)))
      const now = yield* Clock.currentTimeMillis
      bootedAt = info?.uptimeSeconds === undefined ? undefined : now - info.uptimeSeconds * 1000
    }
    return { router: endpoint.controlUrl, nodeAddress, bootedAt } satisfies FirewallView
  }).pipe(forgetOnFailure, Effect.withSpan("Firewall.view"))

  return Firewall.of({
    leaseSeconds,
    view,
    add: (request) =>
      Effect.gen(function*() {
        const { endpoint } = yield* locate
        const uniqueId = yield* provide(Pinholes.addPinhole(endpoint, {
          internalClient: request.internalClient,
          internalPort: request.port,
          protocol: request.protocol,
          leaseSeconds: request.leaseSeconds
        }))
        yield* stamp(endpoint.controlUrl, uniqueId)
        return uniqueId
      }).pipe(forgetOnFailure, Effect.withSpan("Firewall.add")),
    update: (uniqueId, seconds) =>
      Effect.gen(function*() {
        const { endpoint } = yield* locate
        yield* provide(Pinholes.updatePinhole(endpoint, uniqueId, seconds))
        yield* stamp(endpoint.controlUrl, uniqueId)
      }).pipe(forgetOnFailure, Effect.withSpan("Firewall.update")),
    remove: (uniqueId) =>
      Effect.gen(function*() {
        const { endpoint } = yield* locate
        yield* provide(Pinholes.deletePinhole(endpoint, uniqueId))
        yield* Ref.update(renewals, (all) => {
          const left = new Map(all)
          left.delete(`${endpoint.controlUrl}#${uniqueId}`)
          return left
        })
      }).pipe(forgetOnFailure, Effect.withSpan("Firewall.remove")),
    renewedAt: (uniqueId) =>
      Effect.gen(function*() {
        const known = yield* Ref.get(located)
        if (known === undefined) return undefined
        return (yield* Ref.get(renewals)).get(`${known.endpoint.controlUrl}#${uniqueId}`)
      })
  })
})
