/**
 * SSDP over IPv6 for the router's firewall service: an M-SEARCH to the link-local group
 * `[ff02::c]:1900` from the interface of the node's IPv6 default route. miniupnpd answers from
 * its link-local address with a LOCATION on its global one (docs/ipv6-field-notes.md, section
 * 1); a description read there resolves the firewall's control URL on the router's IPv6
 * address, which is where AddPinhole must go.
 *
 * Trust: a LOCATION whose host is the router (the IPv6 default route's gateway, or the address
 * configured) is kept, whoever sent the reply: a LAN host can at most point us at the real
 * router. A default route via a link-local gateway (what router advertisements give) names no
 * global address to compare with; then a reply whose source is that gateway may name a global
 * address on the LAN (a network the interface is attached to): the router's own, which is what
 * miniupnpd sends. That is weaker than the IPv4 search, which fetches from the replying address
 * itself: a LAN host that forges the router's link-local source can point the search at its own
 * global address, so the Service's IPv6 address is published while the real router opens
 * nothing (no worse for IPv6 than not finding the firewall; IPv4 is untouched). Telling the
 * two addresses apart as one host would take the neighbour table, which only netlink gives.
 * Every datagram is decoded under the SSDP decoder's size cap and none is kept: a flood of
 * replies costs the window's CPU but cannot hide the router's answer, and the search ends
 * after its window.
 */
import * as Dgram from "node:dgram"
import { Duration, Effect, Result } from "effect"
import { IpNetwork, NetAddress } from "effect/net"
import { ipv6Scope, sameIpv6, withoutZone } from "../Ipv6Address.ts"
import { clampMx, decodeMessage, encodeMSearch, SSDP_PORT } from "./Ssdp.ts"
import { FIREWALL_SERVICE_TYPE } from "./Pinholes.ts"

/** The link-local SSDP group (UPnP Device Architecture 2.0, IPv6). */
export const SSDP_IPV6_LINK_LOCAL_GROUP = "ff02::c"

/** What the firewall's root description is searched for: the service, then the device that holds it. */
export const FIREWALL_SEARCH_TARGETS: ReadonlyArray<string> = [
  FIREWALL_SERVICE_TYPE,
  "urn:schemas-upnp-org:device:InternetGatewayDevice:2"
]

/** Where and how long to search. */
export interface Ipv6SearchOptions {
  /** The interface the search leaves on (the IPv6 default route's). */
  readonly device: string
  /** The router's IPv6 address: a LOCATION on it is kept. */
  readonly router: string
  /**
   * The global networks the interface is attached to (`localIpv6Networks`): when `router` is
   * link-local, its own replies may name a LOCATION in one of these.
   */
  readonly lan?: ReadonlyArray<IpNetwork.IpNetwork> | undefined
  readonly timeout?: Duration.Input | undefined
  /** Default `[ff02::c]:1900`; tests aim at a loopback fake. */
  readonly group?: string | undefined
  readonly port?: number | undefined
}

/** The IPv6 host of an `http:` URL, or undefined. */
const ipv6HostOf = (location: string): string | undefined => {
  const url = URL.parse(location)
  return url !== null && url.protocol === "http:" && url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : undefined
}

/**
 * Whether a reply's LOCATION may be followed: its host is the router, or the router is
 * link-local, sent the reply itself (`source`, its zone dropped), and names a global address on
 * the LAN.
 */
export const isRouterLocation = (
  location: string,
  source: string,
  options: Pick<Ipv6SearchOptions, "router" | "lan">
): boolean => {
  const host = ipv6HostOf(location)
  if (host === undefined) return false
  if (sameIpv6(host, options.router)) return true
  if (ipv6Scope(options.router) !== "link-local" || !sameIpv6(withoutZone(source), options.router)) return false
  const address = NetAddress.ipv6FromString(host)
  return Result.isSuccess(address) && ipv6Scope(host) === "global" &&
    (options.lan ?? []).some((network) => IpNetwork.contains(network, address.success))
}

/**
 * The LOCATION of the router's IGD:2 description found over IPv6, or undefined when the router
 * did not answer within the window (default 2 s). Never fails.
 */
export const searchFirewallDescription6 = (options: Ipv6SearchOptions): Effect.Effect<string | undefined> =>
  Effect.callback<string | undefined>((resume) => {
    const group = options.group ?? SSDP_IPV6_LINK_LOCAL_GROUP
    const port = options.port ?? SSDP_PORT
    const windowMs = Duration.toMillis(Duration.fromInputUnsafe(options.timeout ?? "2 seconds"))
    const loopback = group === "::1"
    const socket = Dgram.createSocket({ type: "udp6", reuseAddr: true })
    let done = false
    const finish = (location: string | undefined) => {
      if (done) return
      done = true
      clearTimeout(timer)
      socket.close()
      resume(Effect.succeed(location))
    }
    const timer = setTimeout(() => finish(undefined), windowMs)
    socket.on("error", () => finish(undefined))
    socket.on("message", (payload, from) => {
      const decoded = decodeMessage(payload, from.address)
      if (Result.isFailure(decoded) || decoded.success._tag !== "SearchReply") return
      const reply = decoded.success
      if (FIREWALL_SEARCH_TARGETS.includes(reply.searchTarget.trim()) && isRouterLocation(reply.location, from.address, options)) {
        finish(reply.location)
      }
    })
    socket.bind(0, loopback ? "::1" : "::", () => {
      if (!loopback) {
        // The link-local group is reached on the named interface only; one hop is enough.
        socket.setMulticastInterface(`::%${options.device}`)
        socket.setMulticastTTL(2)
      }
      const destination = loopback ? group : `${group}%${options.device}`
      const mx = clampMx(windowMs / 1000)
      for (const searchTarget of FIREWALL_SEARCH_TARGETS) {
        socket.send(encodeMSearch({ host: `[${group}]`, port, searchTarget, mx }), port, destination)
      }
    })
    return Effect.sync(() => finish(undefined))
  })
