/**
 * Our own address toward the router: the InternalClient a secure-mode router accepts (IPv4),
 * and the only one miniupnpd opens an IPv6 pinhole for.
 * Connecting a UDP socket only asks the kernel to pick a route and source address;
 * nothing is sent.
 */
import * as Dgram from "node:dgram"
import { Effect, Result } from "effect"
import { GatewayUnreachable, NoGlobalIpv6Address } from "./GatewayError.ts"
import { canonicalIpv6, ipv6Scope, withoutZone } from "./Ipv6Address.ts"
import { isMappablePort } from "./Mapping.ts"

/** The local IPv4 address the kernel would use to reach `routerIp:routerPort`. */
export const localAddressToward = Effect.fn("localAddressToward")(
  function*(routerIp: string, routerPort: number) {
    return yield* kernelSourceAddress("udp4", routerIp, routerPort, `${routerIp}:${routerPort}`)
  }
)

/** Any global unicast address (2000::/3): only routed, never sent to (connecting a UDP socket sends nothing). */
const GLOBAL_DESTINATION = "2000::1"

/** Which non-global source addresses `localIpv6AddressToward` may return. */
export interface Ipv6SourceOptions {
  /** fe80::/10: reachable only on the link, never from the Internet. */
  readonly allowLinkLocal?: boolean | undefined
  /** fc00::/7 (ULA): routed only inside a site, never from the Internet. */
  readonly allowUniqueLocal?: boolean | undefined
}

/**
 * The node's IPv6 source address toward the router, in canonical form: the address the
 * kernel picks (its routes and source-address rules, RFC 6724), which is also the address
 * the router sees a SOAP request come from, so the only InternalClient miniupnpd accepts.
 * A link-local or unique-local choice is refused unless allowed: the Internet could not
 * reach a pinhole opened for it.
 */
export const localIpv6AddressToward = Effect.fn("localIpv6AddressToward")(
  function*(routerIp: string, routerPort: number, options: Ipv6SourceOptions = {}) {
    const router = `[${routerIp}]:${routerPort}`
    // Toward a link-local router (`fe80::1%eth0`) the kernel picks a link-local source; the
    // address the Internet reaches is the one it picks toward a global destination.
    const toward = ipv6Scope(withoutZone(routerIp)) === "link-local" && options.allowLinkLocal !== true
      ? GLOBAL_DESTINATION
      : routerIp
    const address = yield* kernelSourceAddress("udp6", toward, routerPort, router)
    return yield* Effect.fromResult(acceptIpv6Source(router, address, options))
  }
)

/**
 * The kernel's choice of IPv6 source address, canonical, if the Internet can reach it (or the
 * options allow its scope); otherwise why not.
 */
export const acceptIpv6Source = (
  router: string,
  address: string,
  options: Ipv6SourceOptions = {}
): Result.Result<string, NoGlobalIpv6Address> => {
  // A link-local source comes with its interface (`fe80::…%eth0`): the address is what counts.
  const bare = withoutZone(address)
  const canonical = canonicalIpv6(bare)
  const scope = ipv6Scope(bare)
  if (Result.isFailure(canonical) || scope === undefined) {
    return Result.fail(new NoGlobalIpv6Address({ router, address, reason: "the kernel chose no IPv6 source address" }))
  }
  const allowed = scope === "global" ||
    (scope === "link-local" && options.allowLinkLocal === true) ||
    (scope === "unique-local" && options.allowUniqueLocal === true)
  if (!allowed) {
    return Result.fail(
      new NoGlobalIpv6Address({
        router,
        address: canonical.success,
        reason: `the node's source address toward the router is ${scope}, which the Internet cannot reach`
      })
    )
  }
  return Result.succeed(canonical.success)
}

const kernelSourceAddress = Effect.fnUntraced(
  function*(family: "udp4" | "udp6", routerIp: string, routerPort: number, router: string) {
    if (!isMappablePort(routerPort)) {
      return yield* new GatewayUnreachable({ router, action: "local address", reason: "invalid router port" })
    }
    return yield* Effect.callback<string, GatewayUnreachable>((resume) => {
      const socket = Dgram.createSocket(family)
      let open = true
      const close = () => {
        if (open) {
          open = false
          socket.close()
        }
      }
      socket.once("error", (error) => {
        close()
        resume(Effect.fail(new GatewayUnreachable({ router, action: "local address", reason: error.message })))
      })
      socket.connect(routerPort, routerIp, () => {
        const address = socket.address().address
        close()
        resume(Effect.succeed(address))
      })
      return Effect.sync(close)
    })
  }
)
