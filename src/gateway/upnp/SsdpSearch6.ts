/**
 * SSDP over IPv6 for the router's firewall service: an M-SEARCH to the link-local group
 * `[ff02::c]:1900` from the interface of the node's IPv6 default route. miniupnpd answers from
 * its link-local address with a LOCATION on its global one (docs/ipv6-field-notes.md, section
 * 1); a description read there resolves the firewall's control URL on the router's IPv6
 * address, which is where AddPinhole must go.
 *
 * Trust: only a LOCATION whose host is the router (the IPv6 default route's gateway, or the
 * address configured) is kept, whoever sent the reply: a LAN host can at most point us at the
 * real router. Replies are capped in size (the SSDP decoder's) and number, and the search ends
 * after its window.
 */
import * as Dgram from "node:dgram"
import { Duration, Effect, Result } from "effect"
import { sameIpv6 } from "../Ipv6Address.ts"
import { clampMx, decodeMessage, encodeMSearch, SSDP_PORT } from "./Ssdp.ts"
import { FIREWALL_SERVICE_TYPE } from "./Pinholes.ts"

/** The link-local SSDP group (UPnP Device Architecture 2.0, IPv6). */
export const SSDP_IPV6_LINK_LOCAL_GROUP = "ff02::c"

/** What the firewall's root description is searched for: the service, then the device that holds it. */
export const FIREWALL_SEARCH_TARGETS: ReadonlyArray<string> = [
  FIREWALL_SERVICE_TYPE,
  "urn:schemas-upnp-org:device:InternetGatewayDevice:2"
]

/** Replies looked at per search, at most: a flood costs nothing beyond this. */
const MAX_REPLIES = 64

/** Where and how long to search. */
export interface Ipv6SearchOptions {
  /** The interface the search leaves on (the IPv6 default route's). */
  readonly device: string
  /** The router's IPv6 address: only a LOCATION on it is kept. */
  readonly router: string
  readonly timeout?: Duration.Input | undefined
  /** Default `[ff02::c]:1900`; tests aim at a loopback fake. */
  readonly group?: string | undefined
  readonly port?: number | undefined
}

const sameHost = (location: string, router: string): boolean => {
  const url = URL.canParse(location) ? new URL(location) : undefined
  return url !== undefined && url.protocol === "http:" && url.hostname.startsWith("[") &&
    sameIpv6(url.hostname.slice(1, -1), router)
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
    let replies = 0
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
      replies += 1
      if (replies > MAX_REPLIES) return
      const decoded = decodeMessage(payload, from.address)
      if (Result.isFailure(decoded) || decoded.success._tag !== "SearchReply") return
      const reply = decoded.success
      if (FIREWALL_SEARCH_TARGETS.includes(reply.searchTarget.trim()) && sameHost(reply.location, options.router)) {
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
