import { assert, describe, it } from "@effect/vitest"
import { Effect, Result } from "effect"
import type { NoGlobalIpv6Address } from "../../src/gateway/GatewayError.ts"
import {
  acceptIpv6Source,
  type Ipv6SourceOptions,
  localAddressToward,
  localIpv6AddressToward
} from "../../src/gateway/localAddress.ts"

describe("localAddressToward", () => {
  it.effect("is the loopback address toward a router on loopback, without sending anything", () =>
    Effect.gen(function*() {
      const address = yield* localAddressToward("127.0.0.1", 49536)
      assert.strictEqual(address, "127.0.0.1")
    }))

  it.effect("fails with a typed error for an impossible port", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(localAddressToward("127.0.0.1", 0))
      assert.strictEqual(error._tag, "GatewayUnreachable")
    }))
})

describe("localIpv6AddressToward", () => {
  it.effect("asks the kernel without sending anything, and refuses its loopback choice", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(localIpv6AddressToward("::1", 49536))
      assert.strictEqual(error._tag, "NoGlobalIpv6Address")
      assert.strictEqual((error as NoGlobalIpv6Address).address, "::1")
      assert.match(error.message, /loopback, which the Internet cannot reach/)
    }))

  it.effect("fails with a typed error for an impossible port", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(localIpv6AddressToward("::1", 0))
      assert.strictEqual(error._tag, "GatewayUnreachable")
    }))
})

describe("acceptIpv6Source", () => {
  const router = "[2001:db8:2::1]:49536"
  const accepted = (address: string, options?: Ipv6SourceOptions) => Result.getOrThrow(acceptIpv6Source(router, address, options))
  const refused = (address: string, options?: Ipv6SourceOptions) => {
    const result = acceptIpv6Source(router, address, options)
    assert.isTrue(Result.isFailure(result), `${address} accepted`)
    return Result.getOrThrow(Result.flip(result))
  }

  it("accepts a global address, in canonical form (what miniupnpd compares)", () => {
    assert.strictEqual(accepted("2001:0DB8:0002:0:0:0:0:0010"), "2001:db8:2::10")
  })

  it("refuses link-local and unique-local addresses unless allowed", () => {
    assert.match(refused("fe80::5c39:d7ff:fe6b:5098").reason, /link-local/)
    assert.match(refused("fd00:1::10").reason, /unique-local/)
    assert.match(refused("fd00:1::10", { allowLinkLocal: true }).reason, /unique-local/)
    assert.match(refused("fe80::1", { allowUniqueLocal: true }).reason, /link-local/)
    assert.strictEqual(accepted("fe80::1", { allowLinkLocal: true }), "fe80::1")
    assert.strictEqual(accepted("FD00:1::10", { allowUniqueLocal: true }), "fd00:1::10")
  })

  it("a link-local source as the kernel names it, with its interface: judged by its address", () => {
    assert.match(refused("fe80::d028:d8ff:fecc:108b%eth0").reason, /link-local, which the Internet cannot reach/)
    assert.strictEqual(accepted("fe80::d028:d8ff:fecc:108b%eth0", { allowLinkLocal: true }), "fe80::d028:d8ff:fecc:108b")
  })

  it("refuses what no flag allows: loopback, unspecified, IPv4-mapped, not an address", () => {
    const all = { allowLinkLocal: true, allowUniqueLocal: true }
    for (const address of ["::1", "::", "::ffff:192.0.2.10", "192.0.2.10", ""]) {
      assert.strictEqual(refused(address, all)._tag, "NoGlobalIpv6Address", address)
    }
  })
})
