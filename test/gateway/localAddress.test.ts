import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { localAddressToward } from "../../src/gateway/localAddress.ts"

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
