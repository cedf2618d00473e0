import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { cli } from "../cli/harness.ts"

describe("edge-ccm run flags", () => {
  it.effect("--gateway-address must be an IPv4 address: a usage error, nothing started", () =>
    Effect.gen(function*() {
      for (const args of [["--gateway-address", "router.lan"], ["--gateway-address", "192.168.77"]]) {
        const result = yield* cli(["run", ...args])
        assert.strictEqual(result.code, 2, args.join(" "))
        assert.include(`${result.out}\n${result.err}`, "an IPv4 address", args.join(" "))
      }
      const fromEnv = yield* cli(["run"], { EDGE_CCM_GATEWAY_ADDRESS: "not-an-address" })
      assert.strictEqual(fromEnv.code, 2)
    }))

  it.effect("--help lists --gateway-address and its environment variable", () =>
    Effect.gen(function*() {
      const result = yield* cli(["run", "--help"])
      assert.strictEqual(result.code, 0, result.err)
      assert.include(result.out, "--gateway-address")
      assert.include(result.out, "EDGE_CCM_GATEWAY_ADDRESS")
    }))
})
