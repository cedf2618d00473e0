/**
 * SSDP discovery against the lab's real miniupnpd, from the node namespace (192.168.77.10):
 * real multicast M-SEARCH, the unicast copy to the default gateway read from /proc/net/route,
 * and the NOTIFY advertisements miniupnpd sends when it restarts.
 */
import { assert, describe, it } from "@effect/vitest"
import { Duration, Effect, Fiber, Stream } from "effect"
import { Discovery, type SsdpAdvertisement } from "../../src/gateway/upnp/Discovery.ts"
import * as lab from "./support/lab.ts"

const IGD2 = "urn:schemas-upnp-org:device:InternetGatewayDevice:2"

const search = (options: Parameters<typeof Discovery.layer>[0]) =>
  Effect.gen(function*() {
    const discovery = yield* Discovery
    return (yield* discovery.search()).responses
  }).pipe(Effect.provide(Discovery.layer(options)))

describe("Discovery against miniupnpd", () => {
  it.live("finds the gateway by multicast and by unicast to the default route", () =>
    Effect.gen(function*() {
      const state = lab.loadLab()
      for (
        const options of [
          { unicastGateway: undefined },
          { unicastGateway: undefined, multicastInterface: state.nodeIp },
          // Multicast aimed nowhere useful: only the unicast copy to the default gateway can answer.
          { ssdpAddress: "239.255.255.251", unicastGateway: "default-route" }
        ]
      ) {
        const found = yield* search(options)
        const gateway = found.find((response) => response.location === state.rootDescUrl)
        assert.isDefined(gateway, JSON.stringify({ options, found }))
        assert.strictEqual(gateway?.responder, state.gatewayLanIp)
        assert.strictEqual(gateway?.searchTarget, IGD2)
        assert.match(gateway?.server ?? "", /MiniUPnPd/)
        assert.isNumber(gateway?.bootId)
      }
    }), 30_000)

  it.live("hears the NOTIFYs of a gateway reboot, with a new BOOTID", () =>
    Effect.gen(function*() {
      const state = lab.loadLab()
      const discovery = yield* Effect.service(Discovery).pipe(
        Effect.provide(Discovery.layer({ multicastInterface: state.nodeIp, unicastGateway: undefined }))
      )
      const [before] = (yield* discovery.search()).responses.filter((response) => response.location === state.rootDescUrl)
      const bootId = before?.bootId
      assert.isNumber(bootId)
      // miniupnpd's BOOTID is its start time in seconds: a restart within that second keeps it.
      yield* Effect.promise(() =>
        lab.waitFor(() => Date.now() / 1000 > (bootId ?? 0) + 1, { description: "a new second for the BOOTID" })
      )
      const heard = yield* discovery.advertisements.pipe(
        Stream.filter((advertisement: SsdpAdvertisement) => advertisement.location === state.rootDescUrl),
        Stream.takeUntil((advertisement) => advertisement.kind === "alive" && advertisement.bootId !== bootId),
        Stream.runCollect,
        // miniupnpd announces at start and then every 30 s, so a burst missed while binding recurs.
        Effect.timeout(Duration.seconds(45)),
        Effect.forkChild
      )
      yield* Effect.promise(() => lab.rebootGateway())
      const advertisements = yield* Fiber.join(heard)
      const alive = advertisements.at(-1)
      assert.strictEqual(alive?.kind, "alive")
      assert.strictEqual(alive?.responder, state.gatewayLanIp)
      assert.isNumber(alive?.bootId)
      assert.notStrictEqual(alive?.bootId, bootId)
    }), 60_000)
})
