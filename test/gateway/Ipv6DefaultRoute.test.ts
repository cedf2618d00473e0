/**
 * The IPv6 default route's gateway from /proc/net/ipv6_route, on the table captured in the lab's
 * node namespace and on variations of it.
 */
import { assert, it as effectIt } from "@effect/vitest"
import { Effect, FileSystem, Result } from "effect"
import { describe, expect, it } from "vitest"
import { ipv6DefaultPcpServer, ipv6DefaultRouter, parseIpv6DefaultGateway } from "../../src/gateway/Ipv6DefaultRoute.ts"

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

describe("where PCP and a description read over IPv4 go without a flag", () => {
  const RA = "00000000000000000000000000000000 00 00000000000000000000000000000000 00 fe80000000000000021122fffe334455 00000400 00000001 00000000 00000003     eth0"
  const ULA = RA.replace("fe80000000000000021122fffe334455", "fd000000000000000000000000000001")
  const withTable = <A, E>(table: string, effect: Effect.Effect<A, E, FileSystem.FileSystem>) =>
    Effect.result(Effect.provideService(effect, FileSystem.FileSystem, FileSystem.makeNoop({ readFileString: () => Effect.succeed(table) })))

  effectIt.effect("a global gateway serves both", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(yield* withTable(LAB_NODE, ipv6DefaultPcpServer), Result.succeed("2001:db8:2::1"))
      assert.deepStrictEqual(yield* withTable(LAB_NODE, ipv6DefaultRouter), Result.succeed("2001:db8:2::1"))
    }))

  effectIt.effect("a link-local gateway (router advertisements): PCP goes to it on its interface; a URL cannot name it", () =>
    Effect.gen(function*() {
      assert.deepStrictEqual(yield* withTable(RA, ipv6DefaultPcpServer), Result.succeed("fe80::211:22ff:fe33:4455%eth0"))
      const refused = yield* withTable(RA, ipv6DefaultRouter)
      assert.isTrue(Result.isFailure(refused))
      if (Result.isFailure(refused)) assert.match(refused.failure.reason, /is link-local: give the router's global address with --gateway-address6/)
    }))

  effectIt.effect("a unique-local gateway: neither, and the reason names the flag", () =>
    Effect.gen(function*() {
      const refused = yield* withTable(ULA, ipv6DefaultPcpServer)
      assert.isTrue(Result.isFailure(refused))
      if (Result.isFailure(refused)) assert.match(refused.failure.reason, /unique-local: give the router's global address with --gateway-address6/)
    }))
})
