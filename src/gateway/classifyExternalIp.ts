/**
 * Classifies a router's external address: only a public one makes a mapping reachable
 * from the Internet; a private or reserved one means a double NAT (or CGNAT), and an
 * empty or all-zero one means the WAN link is down.
 */
import { Result } from "effect"
import { IpNetwork, NetAddress } from "effect/net"
import type { ExternalAddress, ExternalIpClass } from "./Mapping.ts"

/**
 * The ranges miniupnpd itself refuses to forward from (its `addr_is_reserved` list): RFC 1918,
 * CGNAT 100.64/10, loopback, link-local, the TEST-NETs, benchmarking 198.18/15, multicast and
 * the reserved 240/4, among others.
 */
const RESERVED_NETWORKS: ReadonlyArray<IpNetwork.IpNetwork> = [
  "0.0.0.0/8",
  "10.0.0.0/8",
  "100.64.0.0/10",
  "127.0.0.0/8",
  "169.254.0.0/16",
  "172.16.0.0/12",
  "192.0.0.0/24",
  "192.0.2.0/24",
  "192.31.196.0/24",
  "192.52.193.0/24",
  "192.88.99.0/24",
  "192.168.0.0/16",
  "192.175.48.0/24",
  "198.18.0.0/15",
  "198.51.100.0/24",
  "203.0.113.0/24",
  "224.0.0.0/4",
  "240.0.0.0/4"
].map(IpNetwork.fromStringUnsafe)

/** public, private (double NAT: RFC 1918, CGNAT, TEST-NETs and other reserved ranges) or missing. */
export const classifyExternalIp = (ip: string | undefined): ExternalIpClass => {
  const trimmed = ip?.trim() ?? ""
  if (trimmed === "") return "missing"
  const parsed = NetAddress.ipv4FromString(trimmed)
  if (Result.isFailure(parsed)) return "missing"
  const address = parsed.success
  if (NetAddress.isUnspecified(address)) return "missing"
  return RESERVED_NETWORKS.some((network) => IpNetwork.contains(network, address)) ? "private" : "public"
}

/** The address with its class; an empty address is reported as undefined. */
export const externalAddressOf = (ip: string | undefined): ExternalAddress => {
  const trimmed = ip?.trim() ?? ""
  return { ip: trimmed === "" ? undefined : trimmed, class: classifyExternalIp(trimmed) }
}
