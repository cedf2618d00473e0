/**
 * Which router the controller talks to. Any host on the LAN can answer an SSDP search or
 * send a NOTIFY, so a laptop running a fake IGD would otherwise be as good a "gateway" as the
 * real router, receive every mapping and name the external address written into every
 * Service's status. Only one address is trusted: the node's IPv4 default gateway (the router
 * its traffic already goes through), or the address the operator names with
 * `--gateway-address`. UPnP uses only that address's IGD; NAT-PMP and PCP talk to it.
 */
import { Effect, type FileSystem, Result } from "effect"
import { NetAddress } from "effect/net"
import { GatewayNotFound } from "./GatewayError.ts"
import { readDefaultGateway } from "./upnp/SsdpRoute.ts"

/** The flag (and option) that names another router than the default gateway. */
export const GATEWAY_ADDRESS_FLAG = "--gateway-address"

/** The one router whose IGD is used, and why it is trusted. */
export interface TrustedRouter {
  /** Its IPv4 address: the only source whose SSDP replies and NOTIFYs are used. */
  readonly address: string
  /** Why it is trusted: the default route's gateway, or named by the operator. */
  readonly source: "default-route" | "gateway-address"
}

/** "192.168.77.1, the node's default gateway" / "192.168.77.50, set by --gateway-address". */
export const describeTrustedRouter = (router: TrustedRouter): string =>
  router.source === "default-route"
    ? `${router.address}, the node's default gateway`
    : `${router.address}, set by ${GATEWAY_ADDRESS_FLAG}`

/** What another host's candidate is told in `edge-ccm gateway discover`. */
export const notTrustedReason = (router: TrustedRouter | undefined): string =>
  router === undefined
    ? `ignored: the node has no IPv4 default route (use ${GATEWAY_ADDRESS_FLAG})`
    : router.source === "default-route"
    ? `ignored: not the default gateway (use ${GATEWAY_ADDRESS_FLAG})`
    : `ignored: not the gateway set by ${GATEWAY_ADDRESS_FLAG} (${router.address})`

/** No default route and no address given: there is no router to trust. */
export const noTrustedRouter = (): GatewayNotFound =>
  new GatewayNotFound({
    reason: `the node has no IPv4 default route, so no router is trusted: give the router's address with ${GATEWAY_ADDRESS_FLAG}`,
    candidates: []
  })

/**
 * The trusted router: `configured` when given (it must be IPv4: checked where it is read),
 * else the default route's gateway, else undefined.
 */
export const resolveTrustedRouter = (
  configured: string | undefined
): Effect.Effect<TrustedRouter | undefined, never, FileSystem.FileSystem> =>
  configured !== undefined
    ? Effect.succeed({ address: canonical(configured) ?? configured, source: "gateway-address" })
    : Effect.map(readDefaultGateway, (gateway) => {
      const address = gateway === undefined ? undefined : canonical(gateway)
      return address === undefined ? undefined : { address, source: "default-route" }
    })

/** Dotted-quad text as datagram sources are formatted, so the two compare as strings. */
const canonical = (ip: string): string | undefined => {
  const parsed = NetAddress.ipv4FromString(ip)
  return Result.isSuccess(parsed) ? NetAddress.formatIp(parsed.success) : undefined
}
