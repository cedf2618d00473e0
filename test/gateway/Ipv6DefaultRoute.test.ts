/**
 * The IPv6 default route's gateway from /proc/net/ipv6_route, on the table captured in the lab's
 * node namespace and on variations of it.
 */
import { describe, expect, it } from "vitest"
import { parseIpv6DefaultGateway } from "../../src/gateway/Ipv6DefaultRoute.ts"

const LAB_NODE = [
  "20010db8000200000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000003 00000000 00000001     eth0",
  "fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000002 00000000 00000001     eth0",
  "00000000000000000000000000000000 00 00000000000000000000000000000000 00 20010db8000200000000000000000001 00000400 00000001 00000000 00000003     eth0",
  "00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000003 00000000 80200001       lo",
  "00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo"
].join("\n")

describe("parseIpv6DefaultGateway", () => {
  it("the lab node's table: 2001:db8:2::1 on eth0 (the unreachable ::/0 on lo is not a gateway)", () => {
    expect(parseIpv6DefaultGateway(LAB_NODE)).toEqual({ gateway: "2001:db8:2::1", device: "eth0" })
  })
  it("the lowest metric wins; a route that is down or has no gateway flag is skipped", () => {
    const other = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 20010db8000900000000000000000001 00000100 00000001 00000000 00000003     eth1"
    expect(parseIpv6DefaultGateway(`${LAB_NODE}\n${other}`)).toEqual({ gateway: "2001:db8:9::1", device: "eth1" })
    expect(parseIpv6DefaultGateway(LAB_NODE.replace("00000001 00000000 00000003     eth0", "00000001 00000000 00000001     eth0"))).toBeUndefined()
  })
  it("a link-local gateway is returned as such (the caller refuses it); garbage gives nothing", () => {
    const ra = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe80000000000000021122fffe334455 00000400 00000001 00000000 00000003     eth0"
    expect(parseIpv6DefaultGateway(ra)).toEqual({ gateway: "fe80::211:22ff:fe33:4455", device: "eth0" })
    expect(parseIpv6DefaultGateway("garbage\n\n00 00")).toBeUndefined()
  })
})
