/**
 * Where an SSDP LOCATION may point. Anyone on the LAN can answer an M-SEARCH, so the URL we
 * later fetch is untrusted: it is only ever followed to a numeric IPv4 address on a directly
 * connected subnet, never to a host name (DNS rebinding), a link-local address (cloud
 * metadata at 169.254.169.254) or an address beyond the router (WAN).
 */
import * as Os from "node:os"
import { Equal, Option, Result, Schema } from "effect"
import { IpInterface, IpNetwork, NetAddress } from "effect/net"
import { ipv6Scope } from "../Ipv6Address.ts"

/** An IPv4 subnet one of our (non-loopback) interfaces is directly attached to. */
export interface LocalSubnet {
  readonly interfaceName: string
  /** Our own address on it. */
  readonly address: NetAddress.Ipv4Address
  readonly network: IpNetwork.IpNetwork
}

/** The shape of `os.networkInterfaces()`, so tests can describe a machine of their own. */
export type NetworkInterfaces = Readonly<Record<string, ReadonlyArray<Os.NetworkInterfaceInfo> | undefined>>

/** The directly connected IPv4 subnets, from `os.networkInterfaces()` (or the table given). */
export const localSubnets = (interfaces: NetworkInterfaces = Os.networkInterfaces()): ReadonlyArray<LocalSubnet> => {
  const subnets: Array<LocalSubnet> = []
  for (const [interfaceName, infos] of Object.entries(interfaces)) {
    for (const info of infos ?? []) {
      if (info.family !== "IPv4" || info.internal || info.cidr === null) continue
      const parsed = IpInterface.ipv4FromString(info.cidr)
      if (Result.isFailure(parsed)) continue
      const address = parsed.success.address
      if (NetAddress.isLoopback(address) || NetAddress.isLinkLocal(address)) continue
      subnets.push({ interfaceName, address, network: IpNetwork.fromInterface(parsed.success) })
    }
  }
  return subnets
}

/**
 * The global IPv6 networks `device` is directly attached to, from `os.networkInterfaces()` (or
 * the table given): where the router's own global address lies, seen from an IPv6 LAN.
 */
export const localIpv6Networks = (
  device: string,
  interfaces: NetworkInterfaces = Os.networkInterfaces()
): ReadonlyArray<IpNetwork.IpNetwork> =>
  (interfaces[device] ?? []).flatMap((info) => {
    if (info.family !== "IPv6" || info.internal || info.cidr === null || ipv6Scope(info.address) !== "global") return []
    const parsed = IpInterface.ipv6FromString(info.cidr)
    return Result.isSuccess(parsed) ? [IpNetwork.fromInterface(parsed.success)] : []
  })

const parseIpv4 = (ip: string): NetAddress.Ipv4Address | undefined => {
  const parsed = NetAddress.ipv4FromString(ip)
  return Result.isSuccess(parsed) ? parsed.success : undefined
}

/**
 * Whether `ip` is a host on a directly connected IPv4 subnet: not loopback, not link-local
 * (169.254/16, where cloud metadata lives), not multicast or broadcast, and neither the
 * network nor the broadcast address of the subnet it falls in.
 */
export const isOnDirectlyConnectedLan = (
  ip: string,
  subnets: ReadonlyArray<LocalSubnet> = localSubnets()
): boolean => {
  const address = parseIpv4(ip)
  return address !== undefined && lanSubnetOf(address, subnets) !== undefined
}

const lanSubnetOf = (
  address: NetAddress.Ipv4Address,
  subnets: ReadonlyArray<LocalSubnet>
): LocalSubnet | undefined => {
  if (
    NetAddress.isLoopback(address) || NetAddress.isLinkLocal(address) || NetAddress.isUnspecified(address) ||
    NetAddress.isMulticast(address) || NetAddress.isBroadcast(address)
  ) return undefined
  return subnets.find((subnet) =>
    IpNetwork.contains(subnet.network, address) &&
    (subnet.network.prefixLength >= 31 ||
      (!Equal.equals(address, IpNetwork.firstAddress(subnet.network)) &&
        !Equal.equals(address, IpNetwork.lastAddress(subnet.network))))
  )
}

/** A LOCATION we will not follow, and why. */
export class LocationRefused extends Schema.TaggedError<LocationRefused>()("LocationRefused", {
  /** The SSDP header at fault: always LOCATION. */
  field: Schema.Literal("LOCATION"),
  location: Schema.String,
  responder: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `refused LOCATION ${JSON.stringify(this.location)} from ${this.responder}: ${this.reason}`
  }
}

/**
 * Makes a LOCATION safe to fetch, or refuses it.
 *
 * - A loopback or unspecified host (TP-Link sends `http://[::1]:1900/…`), or one that differs
 *   from the responder, is replaced by the responder: the address the reply came from.
 * - Refused: anything but an absolute `http:` URL; a host name; a link-local, multicast or
 *   broadcast address; an IPv4 address outside our directly connected subnets (WAN); and a
 *   responder that is not itself on a directly connected subnet.
 * - Loopback is allowed only when the responder is loopback too: a fake on this machine.
 *
 * User info and fragments are dropped; the port and path are kept.
 */
export const repairLocation = (
  location: string,
  responder: string,
  subnets: ReadonlyArray<LocalSubnet> = localSubnets()
): Result.Result<string, LocationRefused> => {
  const refuse = (reason: string) => Result.fail(new LocationRefused({ field: "LOCATION", location, responder, reason }))
  const url = URL.parse(location.trim())
  if (url === null) return refuse("not an absolute URL")
  if (url.protocol !== "http:") return refuse(`scheme ${url.protocol.replace(/:$/, "")} is not http`)

  const source = parseIpv4(responder)
  if (source === undefined) return refuse("the responder is not an IPv4 address")
  const fromLoopback = NetAddress.isLoopback(source)
  if (!fromLoopback && lanSubnetOf(source, subnets) === undefined) {
    return refuse(`the responder ${responder} is not on a directly connected LAN subnet`)
  }

  // The URL parser has already canonicalised numeric IPv4 forms (0x7f.1, 3232235777, …).
  const hostname = url.hostname
  const isIpv6 = hostname.startsWith("[") && hostname.endsWith("]")
  const v6 = isIpv6 ? NetAddress.ipv6FromString(hostname.slice(1, -1)) : undefined
  if (v6 !== undefined && Result.isFailure(v6)) return refuse(`host ${hostname} is not an IP address`)
  const v4 = v6 !== undefined
    ? Option.getOrUndefined(NetAddress.fromIpv4Mapped(v6.success))
    : parseIpv4(hostname)

  if (v4 !== undefined) {
    if (NetAddress.isLinkLocal(v4)) return refuse(`host ${hostname} is link-local (the cloud metadata range)`)
    if (NetAddress.isMulticast(v4) || NetAddress.isBroadcast(v4)) {
      return refuse(`host ${hostname} is not a unicast address`)
    }
    if (!NetAddress.isLoopback(v4) && !NetAddress.isUnspecified(v4) && lanSubnetOf(v4, subnets) === undefined) {
      return refuse(`host ${hostname} is not on a directly connected LAN subnet (a WAN or routed address)`)
    }
  } else if (!isIpv6) {
    return refuse(`host ${JSON.stringify(hostname)} is a name, not a numeric address`)
  }
  // Every other case (loopback, unspecified, IPv6 in an answer that came over IPv4, or a
  // LAN host other than the responder) is fetched from the responder itself.
  url.hostname = NetAddress.formatIp(source)
  url.username = ""
  url.password = ""
  url.hash = ""
  return Result.succeed(url.href)
}
