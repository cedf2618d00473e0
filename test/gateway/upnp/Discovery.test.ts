/**
 * Discovery against an in-process SSDP responder on loopback. Every search here is aimed at
 * 127.0.0.x with no unicast gateway: nothing is sent onto a real network, and no multicast
 * group is joined.
 */
import { assert, describe, it } from "@effect/vitest"
import { Cause, Deferred, Duration, Effect, Exit, FileSystem, Fiber, Layer, Logger, Option, References, Stream } from "effect"
import { TestClock } from "effect/testing"
import { NetAddress } from "effect/net"
import {
  Discovery,
  DiscoveryError,
  type DiscoveryOptions,
  make as makeDiscovery,
  makeAdvertisementReader,
  MAX_KNOWN_DEVICES,
  MAX_REPORTS_PER_SEARCH,
  MAX_SEARCH_CANDIDATES,
  type SsdpAdvertisement
} from "../../../src/gateway/upnp/Discovery.ts"
import { GATEWAY_SEARCH_TARGETS } from "../../../src/gateway/upnp/Ssdp.ts"
import * as FakeSsdp from "../../support/FakeSsdp.ts"

const IGD1 = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"
const IGD2 = "urn:schemas-upnp-org:device:InternetGatewayDevice:2"
const WANIP1 = "urn:schemas-upnp-org:service:WANIPConnection:1"

/** Discovery aimed at the fake, which is the trusted router: loopback only, no unicast gateway. */
const aimedAt = (fake: { readonly port: number; readonly address?: string }, options?: Partial<DiscoveryOptions>) =>
  Discovery.layer({
    ssdpAddress: fake.address ?? FakeSsdp.LOOPBACK,
    ssdpPort: fake.port,
    gatewayAddress: fake.address ?? FakeSsdp.LOOPBACK,
    unicastGateway: undefined,
    timeout: Duration.millis(400),
    resends: 2,
    ...options
  })

const searchAt = (fake: FakeSsdp.FakeSsdp, options?: Partial<DiscoveryOptions>) =>
  Effect.gen(function*() {
    const discovery = yield* Discovery
    return (yield* discovery.search()).responses
  }).pipe(Effect.provide(aimedAt(fake, options)))

const M_SEARCH = /^M-SEARCH \* HTTP\/1\.1\r\nHOST: ([^\r\n]+)\r\nST: ([^\r\n]+)\r\nMAN: "ssdp:discover"\r\nMX: ([1-5])\r\n\r\n$/

describe("Discovery.search", () => {
  it.live("finds the fake, which answers from another port than it listens on", () =>
    Effect.gen(function*() {
      const fake = yield* FakeSsdp.make()
      assert.notStrictEqual(fake.answerPort, fake.port)
      const found = yield* searchAt(fake)
      assert.deepStrictEqual(found, [{
        location: `http://127.0.0.1:${fake.port}/rootDesc.xml`,
        // It echoed every ST; the most telling one is kept.
        searchTarget: IGD2,
        usn: `uuid:fake-igd::${IGD2}`,
        server: "Linux/5.10 UPnP/1.1 MiniUPnPd/2.3.1",
        bootId: undefined,
        configId: undefined,
        responder: "127.0.0.1"
      }])
    }))

  it.live("sends every target, in order, each round, in the field guide's format", () =>
    Effect.gen(function*() {
      const fake = yield* FakeSsdp.make({ silent: true })
      yield* searchAt(fake, { resends: 2, timeout: Duration.millis(300) })
      const searches = yield* fake.awaitSearches(2 * GATEWAY_SEARCH_TARGETS.length)
      assert.strictEqual(searches.length, 2 * GATEWAY_SEARCH_TARGETS.length)
      assert.deepStrictEqual(searches.map((search) => search.searchTarget), [
        ...GATEWAY_SEARCH_TARGETS,
        ...GATEWAY_SEARCH_TARGETS
      ])
      for (const search of searches) {
        const match = M_SEARCH.exec(search.text)
        assert.isNotNull(match, search.text)
        assert.strictEqual(match?.[1], `127.0.0.1:${fake.port}`)
      }
    }))

  it.effect("resends evenly within the window, and collects until it closes (TestClock)", () =>
    Effect.gen(function*() {
      const fake = yield* FakeSsdp.make()
      const targets = GATEWAY_SEARCH_TARGETS.length
      const discovery = yield* Effect.service(Discovery).pipe(
        Effect.provide(aimedAt(fake, { timeout: Duration.seconds(3), resends: 3 }))
      )
      const search = yield* Effect.forkChild(discovery.search())
      yield* fake.awaitSearches(targets)
      assert.strictEqual((yield* fake.searches).length, targets)
      yield* TestClock.adjust("999 millis")
      assert.strictEqual((yield* fake.searches).length, targets)
      yield* TestClock.adjust("1 millis")
      yield* fake.awaitSearches(2 * targets)
      yield* TestClock.adjust("1 second")
      yield* fake.awaitSearches(3 * targets)
      assert.isUndefined(search.pollUnsafe())
      yield* TestClock.adjust("1 second")
      const found = (yield* Fiber.join(search)).responses
      assert.deepStrictEqual(found.map((response) => response.location), [`http://127.0.0.1:${fake.port}/rootDesc.xml`])
      assert.strictEqual((yield* fake.searches).length, 3 * targets)
    }))

  it.live("a search's own timeout overrides the layer's", () =>
    Effect.gen(function*() {
      const fake = yield* FakeSsdp.make()
      const found = yield* Effect.gen(function*() {
        const discovery = yield* Discovery
        return yield* discovery.search({ timeout: "300 millis" })
      }).pipe(Effect.provide(aimedAt(fake, { timeout: Duration.minutes(10) })))
      assert.strictEqual(found.responses.length, 1)
    }), 5_000)

  it.live("deduplicates by LOCATION: repeated answers count once, distinct ones each", () =>
    Effect.gen(function*() {
      const fake = yield* FakeSsdp.make({
        repeat: 3,
        answer: (search, { port }) =>
          search.searchTarget === IGD1
            ? [
              FakeSsdp.searchReply({ location: `http://127.0.0.1:${port}/a.xml`, st: IGD1, usn: "uuid:a" }),
              FakeSsdp.searchReply({ location: `http://127.0.0.1:${port}/b.xml`, st: IGD1, usn: "uuid:b" })
            ]
            : []
      })
      const found = yield* searchAt(fake)
      assert.deepStrictEqual(found.map((response) => [response.location, response.usn]), [
        [`http://127.0.0.1:${fake.port}/a.xml`, "uuid:a"],
        [`http://127.0.0.1:${fake.port}/b.xml`, "uuid:b"]
      ])
      assert.isAtLeast(yield* fake.sent, 2 * 3 * 2)
    }))

  it.live("skips garbage, non-gateways and refused LOCATIONs, and keeps the good answer", () =>
    Effect.gen(function*() {
      const reply = (location: string, st = IGD1) => FakeSsdp.searchReply({ location, st })
      const fake = yield* FakeSsdp.make({
        garbage: [
          new Uint8Array([0, 1, 2, 255, 254, 13, 10, 13, 10]),
          "HTTP/1.1 200 OK\r\n\r\n",
          "HTTP/1.1 500 Internal Server Error\r\nLOCATION: http://127.0.0.1/x.xml\r\nST: ssdp:all\r\n\r\n",
          new Uint8Array(9000).fill(65),
          reply("http://122.112.219.229:5000/wan.xml"),
          reply("http://169.254.169.254/latest/meta-data/"),
          reply("http://router.lan:5000/name.xml"),
          reply("https://127.0.0.1/tls.xml"),
          reply("http://127.0.0.1:9/tv.xml", "urn:schemas-upnp-org:device:MediaRenderer:1"),
          FakeSsdp.notify({ nts: "ssdp:alive", nt: IGD1, usn: "uuid:n", location: "http://127.0.0.1:9/notify.xml" }),
          "M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nST: ssdp:all\r\nMAN: \"ssdp:discover\"\r\nMX: 2\r\n\r\n"
        ]
      })
      const found = yield* searchAt(fake)
      assert.deepStrictEqual(found.map((response) => response.location), [`http://127.0.0.1:${fake.port}/rootDesc.xml`])
    }))

  it.live("stays silent: an empty result after the window, never a failure", () =>
    Effect.gen(function*() {
      const fake = yield* FakeSsdp.make({ silent: true })
      const found = yield* searchAt(fake, { timeout: Duration.millis(250) })
      assert.deepStrictEqual(found, [])
      assert.isAtLeast((yield* fake.awaitSearches(1)).length, 1)
    }))

  it.live("router quirks: TP-Link [::1] LOCATION, Linksys `Location:http`, lower case, BOOTID/CONFIGID", () =>
    Effect.gen(function*() {
      const fake = yield* FakeSsdp.make({
        answer: (search, { port }) => {
          switch (search.searchTarget) {
            case IGD1:
              return [FakeSsdp.searchReply({ location: `http://[::1]:${port}/tplink.xml`, st: IGD1, usn: "uuid:tp" })]
            case IGD2:
              return [FakeSsdp.searchReply({
                location: `http://127.0.0.1:${port}/linksys.xml`,
                st: IGD2,
                usn: "uuid:ls",
                style: "linksys"
              })]
            case WANIP1:
              return [FakeSsdp.searchReply({
                location: `http://127.0.0.1:${port}/lower.xml`,
                st: WANIP1,
                usn: "uuid:lc",
                bootId: 42,
                configId: 7,
                style: "lowercase"
              })]
            default:
              return []
          }
        }
      })
      const found = yield* searchAt(fake)
      assert.deepStrictEqual(
        found.map((response) => [response.location, response.searchTarget, response.usn, response.bootId, response.configId]),
        [
          [`http://127.0.0.1:${fake.port}/tplink.xml`, IGD1, "uuid:tp", undefined, undefined],
          [`http://127.0.0.1:${fake.port}/linksys.xml`, IGD2, "uuid:ls", undefined, undefined],
          [`http://127.0.0.1:${fake.port}/lower.xml`, WANIP1, "uuid:lc", 42, 7]
        ]
      )
    }))

  it.live("also searches unicast at the gateway: a router that answers only unicast is found", () =>
    Effect.gen(function*() {
      const multicast = yield* FakeSsdp.make({ silent: true })
      // 127.0.0.2 plays the gateway, on the same port as the SSDP destination.
      const gateway = yield* FakeSsdp.make({ address: "127.0.0.2", port: multicast.port })
      const found = yield* searchAt(multicast, { unicastGateway: "127.0.0.2", gatewayAddress: "127.0.0.2" })
      assert.deepStrictEqual(found.map((response) => [response.location, response.responder]), [
        [`http://127.0.0.2:${multicast.port}/rootDesc.xml`, "127.0.0.2"]
      ])
      const unicast = yield* gateway.awaitSearches(2 * GATEWAY_SEARCH_TARGETS.length)
      assert.isTrue(unicast.every((search) => M_SEARCH.exec(search.text)?.[1] === `127.0.0.2:${multicast.port}`))
      assert.strictEqual((yield* multicast.awaitSearches(2 * GATEWAY_SEARCH_TARGETS.length)).length, 12)
    }))

  it.live("\"default-route\" sends nothing beyond a loopback SSDP destination", () =>
    Effect.gen(function*() {
      const fake = yield* FakeSsdp.make({ silent: true })
      // Were the guard missing, the route table below would aim the unicast copy at 127.0.0.3.
      const bystander = yield* FakeSsdp.make({ address: "127.0.0.3", port: fake.port, silent: true })
      const reads: Array<string> = []
      const routes = "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n" +
        "lo\t00000000\t0300007F\t0003\t0\t0\t0\t00000000\t0\t0\t0\n"
      const discovery = yield* makeDiscovery({
        ssdpAddress: "127.0.0.1",
        ssdpPort: fake.port,
        unicastGateway: "default-route",
        timeout: Duration.millis(250),
        resends: 1
      }).pipe(
        Effect.provideService(
          FileSystem.FileSystem,
          FileSystem.makeNoop({
            readFileString: (path) => Effect.sync(() => reads.push(path)).pipe(Effect.as(routes))
          })
        )
      )
      const searched = yield* discovery.search()
      yield* fake.awaitSearches(GATEWAY_SEARCH_TARGETS.length)
      // The route is read, for the trust rule: its gateway is trusted, yet sent nothing.
      assert.deepStrictEqual(reads, ["/proc/net/route"])
      assert.deepStrictEqual(searched.router, { address: "127.0.0.3", source: "default-route" })
      assert.strictEqual((yield* bystander.searches).length, 0)
    }))

  it.effect("an invalid option stops the layer with a DiscoveryError naming it", () =>
    Effect.gen(function*() {
      for (
        const [options, target] of [
          [{ multicastInterface: "eth0" }, "multicastInterface"],
          [{ ssdpAddress: "ssdp.local" }, "ssdpAddress"],
          [{ unicastGateway: "gateway" }, "unicastGateway"],
          [{ ssdpPort: 0 }, "ssdpPort"],
          [{ resends: 0 }, "resends"],
          [{ searchTargets: ["ssdp:all\r\nX: y"] }, "searchTargets"],
          [{ timeout: Duration.zero }, "timeout"]
        ] as const
      ) {
        const exit = yield* Effect.exit(Layer.build(Discovery.layer({ unicastGateway: undefined, ...options })))
        assert.isTrue(Exit.isFailure(exit), target)
        const defect = Exit.isFailure(exit) ? Cause.squash(exit.cause) : undefined
        assert.instanceOf(defect, DiscoveryError, target)
        assert.strictEqual(defect instanceof DiscoveryError ? defect.target : undefined, target)
      }
    }))
})

describe("Discovery.advertisements", () => {
  it.live("hears alive/update/byebye with BOOTID and CONFIGID, repairing LOCATION and naming a byebye's device", () =>
    Effect.gen(function*() {
      const port = yield* FakeSsdp.freePort
      const sender = yield* FakeSsdp.make({ silent: true })
      const discovery = yield* Effect.service(Discovery).pipe(Effect.provide(aimedAt({ port })))
      const usn = `uuid:router::${IGD1}`
      const heard = yield* Deferred.make<void>()
      const collected = yield* discovery.advertisements.pipe(
        Stream.tap(() => Deferred.succeed(heard, undefined)),
        Stream.takeUntil((advertisement) => advertisement.kind === "byebye" && advertisement.usn === usn),
        Stream.runCollect,
        Effect.forkChild
      )
      // The listener binds asynchronously: repeat a probe until it is heard.
      const probe = FakeSsdp.notify({
        nts: "ssdp:alive",
        nt: IGD1,
        usn: "uuid:probe",
        location: "http://127.0.0.1:1/probe.xml"
      })
      yield* sender.sendTo(port, [probe]).pipe(
        Effect.andThen(Deferred.await(heard).pipe(Effect.timeoutOption("50 millis"))),
        Effect.repeat({ until: Option.isSome })
      )
      yield* sender.sendTo(port, [
        new Uint8Array([0x16, 0x03, 0x01, 0, 0]),
        FakeSsdp.notify({ nts: "ssdp:alive", nt: "urn:schemas-upnp-org:device:MediaRenderer:1", usn: "uuid:tv", location: "http://127.0.0.1:9/tv.xml" }),
        FakeSsdp.notify({ nts: "ssdp:byebye", nt: IGD1, usn: "uuid:never-seen" }),
        FakeSsdp.notify({ nts: "ssdp:alive", nt: IGD1, usn: "uuid:wan", location: "http://122.112.219.229:5000/r.xml" }),
        "M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\nST: ssdp:all\r\nMAN: \"ssdp:discover\"\r\nMX: 2\r\n\r\n",
        FakeSsdp.notify({ nts: "ssdp:alive", nt: IGD1, usn, location: "http://[::1]:5000/rootDesc.xml", bootId: 5, configId: 1 }),
        FakeSsdp.notify({ nts: "ssdp:update", nt: IGD1, usn, location: "http://127.0.0.1:5000/rootDesc.xml", bootId: 5, configId: 1, nextBootId: 6 }),
        FakeSsdp.notify({ nts: "ssdp:byebye", nt: IGD1, usn, bootId: 6, configId: 1 })
      ])
      const advertisements = Array.from(yield* Fiber.join(collected)).filter((a) => a.usn !== "uuid:probe")
      const expected: ReadonlyArray<SsdpAdvertisement> = [
        {
          kind: "alive",
          location: "http://127.0.0.1:5000/rootDesc.xml",
          searchTarget: IGD1,
          usn,
          server: "Linux/5.10 UPnP/1.1 MiniUPnPd/2.3.1",
          bootId: 5,
          configId: 1,
          nextBootId: undefined,
          responder: "127.0.0.1"
        },
        {
          kind: "update",
          location: "http://127.0.0.1:5000/rootDesc.xml",
          searchTarget: IGD1,
          usn,
          server: "Linux/5.10 UPnP/1.1 MiniUPnPd/2.3.1",
          bootId: 5,
          configId: 1,
          nextBootId: 6,
          responder: "127.0.0.1"
        },
        {
          kind: "byebye",
          location: "http://127.0.0.1:5000/rootDesc.xml",
          searchTarget: IGD1,
          usn,
          server: undefined,
          bootId: 6,
          configId: 1,
          nextBootId: undefined,
          responder: "127.0.0.1"
        }
      ]
      assert.deepStrictEqual(advertisements, expected)
    }), 10_000)

  it.live("fails with a DiscoveryError when it cannot listen", () =>
    Effect.gen(function*() {
      // The fake holds the port without SO_REUSEADDR, so the listener cannot share it.
      const holder = yield* FakeSsdp.make({ silent: true })
      const discovery = yield* Effect.service(Discovery).pipe(Effect.provide(aimedAt(holder)))
      const error = yield* Effect.flip(Stream.runDrain(discovery.advertisements))
      assert.instanceOf(error, DiscoveryError)
      assert.strictEqual(error.target, `127.0.0.1:${holder.port}`)
      assert.strictEqual(error.operation, "listen")
    }))
})

describe("Discovery trusts only the router", () => {
  const routesVia = (hexGateway: string | undefined) =>
    FileSystem.makeNoop({
      readFileString: () =>
        Effect.succeed(
          "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\tMTU\tWindow\tIRTT\n" +
            (hexGateway === undefined ? "" : `lo\t00000000\t${hexGateway}\t0003\t0\t0\t0\t00000000\t0\t0\t0\n`)
        )
    })

  it.live("another host's replies are dropped (listed as ignored, never kept); --gateway-address picks which", () =>
    Effect.gen(function*() {
      const router = yield* FakeSsdp.make()
      // 127.0.0.2 plays a laptop on the LAN with a fake IGD; it gets every search as a unicast copy.
      const laptop = yield* FakeSsdp.make({ address: "127.0.0.2", port: router.port })
      const searchTrusting = (gatewayAddress: string) =>
        Effect.gen(function*() {
          const discovery = yield* Discovery
          return yield* discovery.search()
        }).pipe(Effect.provide(aimedAt(router, { unicastGateway: "127.0.0.2", gatewayAddress })))

      const trustingRouter = yield* searchTrusting("127.0.0.1")
      assert.deepStrictEqual(trustingRouter.router, { address: "127.0.0.1", source: "gateway-address" })
      assert.deepStrictEqual(trustingRouter.responses.map((r) => r.responder), ["127.0.0.1"])
      assert.deepStrictEqual(trustingRouter.ignored.map((i) => [i.responder, i.location]), [
        ["127.0.0.2", `http://127.0.0.2:${router.port}/rootDesc.xml`]
      ])
      assert.isAtLeast(yield* laptop.sent, 1)

      const trustingLaptop = yield* searchTrusting("127.0.0.2")
      assert.deepStrictEqual(trustingLaptop.responses.map((r) => r.location), [`http://127.0.0.2:${router.port}/rootDesc.xml`])
      assert.deepStrictEqual(trustingLaptop.ignored.map((i) => i.responder), ["127.0.0.1"])
    }))

  it.live("without --gateway-address the default route's gateway is the one trusted; none without a default route", () =>
    Effect.gen(function*() {
      const fake = yield* FakeSsdp.make()
      const searchWithRoute = (hexGateway: string | undefined) =>
        makeDiscovery({
          ssdpAddress: "127.0.0.1",
          ssdpPort: fake.port,
          timeout: Duration.millis(250),
          resends: 1
        }).pipe(
          Effect.flatMap((discovery) => discovery.search()),
          Effect.provideService(FileSystem.FileSystem, routesVia(hexGateway))
        )
      // Default route via 127.0.0.1: the fake is the router.
      const viaFake = yield* searchWithRoute("0100007F")
      assert.deepStrictEqual(viaFake.router, { address: "127.0.0.1", source: "default-route" })
      assert.strictEqual(viaFake.responses.length, 1)
      // Default route via 127.0.0.2: the fake is just another host.
      const viaOther = yield* searchWithRoute("0200007F")
      assert.deepStrictEqual(viaOther.responses, [])
      assert.deepStrictEqual(viaOther.ignored.map((i) => i.responder), ["127.0.0.1"])
      // No default route: nothing is trusted.
      const none = yield* searchWithRoute(undefined)
      assert.isUndefined(none.router)
      assert.deepStrictEqual(none.responses, [])
    }))

  it.live(`keeps at most ${MAX_SEARCH_CANDIDATES} distinct LOCATIONs per search`, () =>
    Effect.gen(function*() {
      const fake = yield* FakeSsdp.make({
        answer: (search, { port }) =>
          search.searchTarget === IGD1
            ? Array.from({ length: 40 }, (_, i) =>
              FakeSsdp.searchReply({ location: `http://127.0.0.1:${port}/d${i}.xml`, st: IGD1, usn: `uuid:d${i}` }))
            : []
      })
      const found = yield* searchAt(fake, { resends: 1 })
      assert.strictEqual(found.length, MAX_SEARCH_CANDIDATES)
      assert.deepStrictEqual(
        found.map((r) => r.location),
        Array.from({ length: MAX_SEARCH_CANDIDATES }, (_, i) => `http://127.0.0.1:${fake.port}/d${i}.xml`)
      )
    }))
})

describe("Discovery logs are bounded", () => {
  it.live(`a search logs at most ${MAX_REPORTS_PER_SEARCH} warnings, however many replies it refuses`, () =>
    Effect.gen(function*() {
      const fake = yield* FakeSsdp.make({
        answer: (search) =>
          search.searchTarget === IGD1
            ? Array.from({ length: 50 }, (_, i) => FakeSsdp.searchReply({ location: `http://8.8.${i}.8/wan.xml`, st: IGD1 }))
            : []
      })
      const warnings: Array<string> = []
      const capture = Logger.make(({ logLevel, message }) => {
        if (logLevel === "Warn") warnings.push(String(Array.isArray(message) ? message[0] : message))
      })
      const found = yield* searchAt(fake, { resends: 1 }).pipe(Effect.provide(Logger.layer([capture])))
      assert.deepStrictEqual(found, [])
      assert.strictEqual(warnings.filter((w) => w === "refused an SSDP reply").length, MAX_REPORTS_PER_SEARCH)
    }))
})

describe("makeAdvertisementReader", () => {
  const ROUTER = { address: "127.0.0.1", source: "gateway-address" } as const
  const encoder = new TextEncoder()
  const datagram = (from: string, text: string) => ({
    payload: encoder.encode(text),
    address: NetAddress.inetAddressFromIpStringUnsafe(from, 1900)
  })
  const alive = (usn: string, location: string, bootId = 1) =>
    FakeSsdp.notify({ nts: "ssdp:alive", nt: IGD1, usn, location, bootId })
  const byebye = (usn: string) => FakeSsdp.notify({ nts: "ssdp:byebye", nt: IGD1, usn })

  it.effect("another host's NOTIFYs are dropped before anything is remembered", () =>
    Effect.gen(function*() {
      const reader = makeAdvertisementReader()
      const heard = yield* reader.read(datagram("127.0.0.2", alive("uuid:laptop", "http://127.0.0.2:5000/igd.xml")), ROUTER)
      assert.deepStrictEqual(heard, [])
      assert.strictEqual(reader.remembered(), 0)
      // The router's own byebye for that USN cannot be named: nothing of the laptop was kept.
      assert.deepStrictEqual(yield* reader.read(datagram("127.0.0.1", byebye("uuid:laptop")), ROUTER), [])
      // Without a trusted router, even the router's is dropped.
      assert.deepStrictEqual(yield* reader.read(datagram("127.0.0.1", alive("uuid:r", "http://127.0.0.1:5000/r.xml")), undefined), [])
      const own = yield* reader.read(datagram("127.0.0.1", alive("uuid:r", "http://127.0.0.1:5000/r.xml")), ROUTER)
      assert.deepStrictEqual(own.map((a) => [a.kind, a.location]), [["alive", "http://127.0.0.1:5000/r.xml"]])
    }))

  it.effect("1,000 NOTIFYs from another host: one debug line, no warning", () =>
    Effect.gen(function*() {
      const reader = makeAdvertisementReader()
      const lines: Array<string> = []
      const capture = Logger.make(({ logLevel }) => void lines.push(logLevel))
      yield* Effect.gen(function*() {
        for (let i = 0; i < 1_000; i++) {
          yield* reader.read(datagram("127.0.0.2", alive(`uuid:x-${i}`, `http://127.0.0.2:5000/${i}.xml`)), ROUTER)
        }
      }).pipe(
        Effect.provide(Logger.layer([capture])),
        Effect.provideService(References.MinimumLogLevel, "Debug")
      )
      assert.deepStrictEqual(lines, ["Debug"])
      assert.strictEqual(reader.remembered(), 0)
    }))

  it.effect(`10,000 distinct USNs and LOCATIONs leave ${MAX_KNOWN_DEVICES} remembered, the latest`, () =>
    Effect.gen(function*() {
      const reader = makeAdvertisementReader()
      for (let i = 0; i < 10_000; i++) {
        const heard = yield* reader.read(
          datagram("127.0.0.1", alive(`uuid:flood-${i}`, `http://127.0.0.1:${1024 + (i % 60000)}/p${i}.xml`, i)),
          ROUTER
        )
        assert.strictEqual(heard.length, 1)
        assert.isAtMost(reader.remembered(), MAX_KNOWN_DEVICES)
      }
      assert.strictEqual(reader.remembered(), MAX_KNOWN_DEVICES)
      const last = yield* reader.read(datagram("127.0.0.1", byebye("uuid:flood-9999")), ROUTER)
      assert.deepStrictEqual(last.map((a) => a.location), ["http://127.0.0.1:11023/p9999.xml"])
      assert.deepStrictEqual(yield* reader.read(datagram("127.0.0.1", byebye("uuid:flood-0")), ROUTER), [])
    }), { timeout: 60_000 }) // 10,000 decodes: 3.7 s alone on 2 cores, 6-16 s while e2e labs keep them busy
})
