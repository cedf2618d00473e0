/**
 * The router's IPv6 address when no flag names it: the gateway of the IPv6 default route, read
 * from Linux's /proc/net/ipv6_route (nothing to install in a container). A description read
 * over IPv4 is called there, so it must be global (a URL cannot name an interface). PCP over
 * IPv6 is sent there too, and to a link-local gateway (what router advertisements usually give)
 * as `fe80::1%eth0`: its socket is bound to the node's global address, which the router then sees
 * as the source and compares with the client address we send.
 */
import { Effect, FileSystem, Result } from "effect"
import { FirewallUnavailable } from "./GatewayError.ts"
import { canonicalIpv6, ipv6Scope } from "./Ipv6Address.ts"

/** Where Linux lists the IPv6 routes. */
export const PROC_NET_IPV6_ROUTE = "/proc/net/ipv6_route"

const RTF_UP = 0x1
const RTF_GATEWAY = 0x2
const ZERO = "0".repeat(32)

/** 32 hex digits as an IPv6 address, canonical; undefined when they are not that. */
const hexIpv6 = (hex: string): string | undefined => {
  if (!/^[0-9A-Fa-f]{32}$/.test(hex)) return undefined
  const groups = Array.from({ length: 8 }, (_, i) => hex.slice(i * 4, i * 4 + 4))
  const canonical = canonicalIpv6(groups.join(":"))
  return Result.isSuccess(canonical) ? canonical.success : undefined
}

/** One IPv6 default route's gateway and interface. */
export interface Ipv6DefaultGateway {
  readonly gateway: string
  readonly device: string
}

/**
 * The gateway of the up IPv6 default route (::/0 via a gateway) with the lowest metric, or
 * undefined when there is none. Lines that do not parse are skipped.
 */
export const parseIpv6DefaultGateway = (procNetIpv6Route: string): Ipv6DefaultGateway | undefined => {
  let best: (Ipv6DefaultGateway & { readonly metric: number }) | undefined
  for (const line of procNetIpv6Route.split("\n")) {
    const [destination, prefix, , , nextHop, metric, , , flags, device] = line.trim().split(/\s+/)
    if (destination !== ZERO || prefix !== "00" || nextHop === undefined || device === undefined) continue
    const flagBits = Number.parseInt(flags ?? "", 16)
    if (!Number.isFinite(flagBits) || (flagBits & (RTF_UP | RTF_GATEWAY)) !== (RTF_UP | RTF_GATEWAY)) continue
    const gateway = hexIpv6(nextHop)
    if (gateway === undefined || nextHop === ZERO) continue
    const rank = Number.parseInt(metric ?? "", 16)
    const ranked = Number.isFinite(rank) ? rank : Number.MAX_SAFE_INTEGER
    if (best === undefined || ranked < best.metric) best = { gateway, device, metric: ranked }
  }
  return best === undefined ? undefined : { gateway: best.gateway, device: best.device }
}

/** The IPv6 default route's gateway and interface, or why there is none. */
export const ipv6DefaultGateway: Effect.Effect<Ipv6DefaultGateway, FirewallUnavailable, FileSystem.FileSystem> = Effect.gen(function*() {
  const fs = yield* FileSystem.FileSystem
  const table = yield* fs.readFileString(PROC_NET_IPV6_ROUTE).pipe(
    Effect.mapError((error) => new FirewallUnavailable({ reason: `no IPv6 routes readable (${error.message}): give --gateway-address6` }))
  )
  const found = parseIpv6DefaultGateway(table)
  if (found === undefined) return yield* new FirewallUnavailable({ reason: "no IPv6 default route: give --gateway-address6" })
  return found
})

/** The router's IPv6 address from the default route, or why there is none to use. */
export const ipv6DefaultRouter: Effect.Effect<string, FirewallUnavailable, FileSystem.FileSystem> = Effect.gen(function*() {
  const found = yield* ipv6DefaultGateway
  if (ipv6Scope(found.gateway) !== "global") {
    return yield* new FirewallUnavailable({
      reason: `the IPv6 default route's gateway ${found.gateway} on ${found.device} is ${ipv6Scope(found.gateway)}: ` +
        "give the router's global address with --gateway-address6"
    })
  }
  return found.gateway
})

/**
 * Where PCP goes when no flag names the router: the IPv6 default route's gateway, a link-local
 * one with its interface (`fe80::1%eth0`).
 */
export const ipv6DefaultPcpServer: Effect.Effect<string, FirewallUnavailable, FileSystem.FileSystem> = Effect.gen(function*() {
  const found = yield* ipv6DefaultGateway
  if (ipv6Scope(found.gateway) === "link-local") return `${found.gateway}%${found.device}`
  return yield* ipv6DefaultRouter
})
