import { assert, describe, it } from "@effect/vitest"
import { Effect, FileSystem, Layer, PlatformError } from "effect"
import { parseDefaultGateway, PROC_NET_ROUTE, readDefaultGateway } from "../../../src/gateway/upnp/SsdpRoute.ts"

const HEADER = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT"
const table = (...rows: ReadonlyArray<string>) => [HEADER, ...rows, ""].join("\n")

describe("parseDefaultGateway", () => {
  it.effect("reads the default route's gateway (little-endian hex)", () =>
    Effect.sync(() => {
      const routes = table(
        "eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0",
        "eth0\t0001A8C0\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0"
      )
      assert.strictEqual(parseDefaultGateway(routes, "LE"), "192.168.1.1")
      assert.strictEqual(parseDefaultGateway(routes, "BE"), "1.1.168.192")
    }))

  it.effect("picks the lowest metric among default routes", () =>
    Effect.sync(() => {
      const routes = table(
        "wlan0\t00000000\t014DA8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0",
        "eth0\t00000000\t0101A8C0\t0003\t0\t0\t100\t00000000\t0\t0\t0"
      )
      assert.strictEqual(parseDefaultGateway(routes, "LE"), "192.168.1.1")
    }))

  it.effect("ignores routes that are down, have no gateway, or are not default", () =>
    Effect.sync(() => {
      assert.strictEqual(
        parseDefaultGateway(
          table(
            "eth0\t00000000\t0101A8C0\t0002\t0\t0\t0\t00000000\t0\t0\t0",
            "eth0\t00000000\t00000000\t0001\t0\t0\t0\t00000000\t0\t0\t0",
            "eth0\t0001A8C0\t0101A8C0\t0003\t0\t0\t0\t00FFFFFF\t0\t0\t0",
            "garbage line",
            "eth0\t00000000\tZZZZZZZZ\t0003\t0\t0\t0\t00000000\t0\t0\t0"
          ),
          "LE"
        ),
        undefined
      )
      assert.strictEqual(parseDefaultGateway("", "LE"), undefined)
    }))
})

describe("readDefaultGateway", () => {
  const fileSystem = (read: FileSystem.FileSystem["readFileString"]) =>
    Layer.succeed(FileSystem.FileSystem, FileSystem.makeNoop({ readFileString: read }))

  it.effect("reads /proc/net/route", () =>
    Effect.gen(function*() {
      const paths: Array<string> = []
      const gateway = yield* readDefaultGateway.pipe(
        Effect.provide(fileSystem((path) => {
          paths.push(path)
          return Effect.succeed(table("eth0\t00000000\t014DA8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0"))
        }))
      )
      assert.deepStrictEqual(paths, [PROC_NET_ROUTE])
      assert.strictEqual(gateway, parseDefaultGateway(table("eth0\t00000000\t014DA8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0")))
    }))

  it.effect("is undefined where the table cannot be read", () =>
    Effect.gen(function*() {
      const gateway = yield* readDefaultGateway.pipe(
        Effect.provide(fileSystem(() =>
          Effect.fail(PlatformError.systemError({ _tag: "NotFound", module: "FileSystem", method: "readFileString" }))
        ))
      )
      assert.strictEqual(gateway, undefined)
    }))
})
