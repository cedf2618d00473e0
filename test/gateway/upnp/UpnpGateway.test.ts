import { NodeHttpClient } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Config, ConfigProvider, Effect, Fiber, Layer, Stream } from "effect"
import { PortMapper } from "../../../src/gateway/PortMapper.ts"
import type { TrustedRouter } from "../../../src/gateway/TrustedRouter.ts"
import { Discovery, type SearchResult, type SsdpAdvertisement, type SsdpResponse } from "../../../src/gateway/upnp/Discovery.ts"
import { makeBootIdMemory, MAX_BOOT_IDS } from "../../../src/gateway/upnp/BootIdMemory.ts"
import { effectiveLease } from "../../../src/gateway/upnp/CheckedMapping.ts"
import { UpnpGateway, type UpnpGatewayOptions } from "../../../src/gateway/upnp/UpnpGateway.ts"
import * as FakeIgd from "../../support/FakeIgd.ts"

const fast: Partial<UpnpGatewayOptions> = {
  soapTimeout: "2 seconds",
  retry: { times: 1, base: "5 millis", cap: "5 millis" }
}

const withGateway = (fake: FakeIgd.FakeIgd, options?: Partial<UpnpGatewayOptions>) =>
  UpnpGateway.layerWithoutHttp({ ...fast, gatewayUrl: fake.location, ...options }).pipe(
    Layer.provide(NodeHttpClient.layerNodeHttp)
  )

/** The router the fakes play: 127.0.0.1, named as if by --gateway-address. */
const TRUSTED: TrustedRouter = { address: "127.0.0.1", source: "gateway-address" }

/** What a search of the trusted router that found these locations returns. */
const searchResult = (
  locations: ReadonlyArray<string>,
  ignored: SearchResult["ignored"] = [],
  router: TrustedRouter | "none" = TRUSTED
): SearchResult => ({
  router: router === "none" ? undefined : router,
  responses: locations.map((location): SsdpResponse => ({
    location,
    searchTarget: "urn:schemas-upnp-org:device:InternetGatewayDevice:2",
    usn: undefined,
    server: undefined,
    bootId: undefined,
    configId: undefined,
    responder: "127.0.0.1"
  })),
  ignored
})

/** A Discovery whose successive searches return these results (the last one repeats). */
const discoverySequence = (results: ReadonlyArray<SearchResult>) => {
  let calls = 0
  return Layer.succeed(
    Discovery,
    Discovery.of({
      search: () => Effect.sync(() => results[Math.min(calls++, results.length - 1)]!),
      advertisements: Stream.empty
    })
  )
}

/** A Discovery that "finds" these locations, for tests of selection without any SSDP. */
const discoveryOf = (locations: ReadonlyArray<string>) => discoverySequence([searchResult(locations)])

const discovering = (locations: ReadonlyArray<string>) =>
  UpnpGateway.layerWithoutHttp(fast).pipe(
    Layer.provide(Layer.merge(NodeHttpClient.layerNodeHttp, discoveryOf(locations)))
  )

/** Polls a plain condition (a fake's request log) until it holds, for 5 s at most. */
const waitUntil = async (condition: () => boolean): Promise<void> => {
  const deadline = Date.now() + 5_000
  while (!condition()) {
    if (Date.now() > deadline) throw new Error("condition not met within 5 s")
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
}

const request = {
  externalPort: 8080,
  protocol: "TCP" as const,
  internalPort: 30000,
  description: "kubernetes/default/http-nginx-service/http",
  leaseSeconds: 3600
}

/** SOAP actions other than the selection probe (GetStatusInfo, GetExternalIPAddress). */
const mappingActions = (fake: FakeIgd.FakeIgd) =>
  fake.actions().filter((action) => action !== "GetStatusInfo" && action !== "GetExternalIPAddress")

const mapperOf = Effect.gen(function*() {
  return yield* PortMapper
})

const upnpOf = Effect.gen(function*() {
  return yield* UpnpGateway
})

describe("UpnpGateway as PortMapper", () => {
  it.live("map checks the port, adds with our own address, and verifies", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make()
      const granted = yield* Effect.flatMap(mapperOf, (mapper) => mapper.map(request)).pipe(
        Effect.provide(withGateway(fake))
      )
      assert.deepStrictEqual(granted, {
        externalPort: 8080,
        protocol: "TCP",
        internalClient: "127.0.0.1",
        internalPort: 30000,
        description: "kubernetes/default/http-nginx-service/http",
        leaseSeconds: 3600
      })
      assert.deepStrictEqual(mappingActions(fake), ["GetSpecificPortMappingEntry", "AddPortMapping", "GetSpecificPortMappingEntry"])
      assert.deepStrictEqual(fake.mappings.map((m) => [m.externalPort, m.internalClient, m.internalPort, m.description]), [
        [8080, "127.0.0.1", 30000, "kubernetes/default/http-nginx-service/http"]
      ])
      assert.deepStrictEqual(fake.violations, [])
    }).pipe(Effect.scoped))

  it.live("renewing our own mapping (same description) is allowed", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make()
      yield* Effect.gen(function*() {
        const mapper = yield* PortMapper
        yield* mapper.map(request)
        const renewed = yield* mapper.map({ ...request, leaseSeconds: 7200 })
        assert.strictEqual(renewed.leaseSeconds, 7200)
      }).pipe(Effect.provide(withGateway(fake)))
      assert.strictEqual(fake.mappings.length, 1)
      assert.strictEqual(fake.mappings[0]!.leaseSeconds, 7200)
    }).pipe(Effect.scoped))

  it.live("our host's mapping under another description is a conflict, left alone unless forced", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make()
      fake.seed({
        externalPort: 8080,
        protocol: "TCP",
        internalPort: 9000,
        internalClient: "127.0.0.1",
        enabled: true,
        description: "another app on this node",
        leaseSeconds: 0
      })
      yield* Effect.gen(function*() {
        const mapper = yield* PortMapper
        const error = yield* Effect.flip(mapper.map(request))
        assert.strictEqual(error._tag, "PortConflict")
        assert.match(error.message, /held by 127\.0\.0\.1:9000 "another app on this node": .*another description; force/)
        assert.notInclude(fake.actions(), "AddPortMapping")
        assert.strictEqual(fake.mappings[0]!.description, "another app on this node")
        const forced = yield* mapper.map({ ...request, force: true })
        assert.strictEqual(forced.description, request.description)
      }).pipe(Effect.provide(withGateway(fake)))
      assert.strictEqual(fake.mappings[0]!.description, request.description)
      assert.strictEqual(fake.mappings[0]!.internalPort, 30000)
    }).pipe(Effect.scoped))

  it.live("another host's mapping is never touched, even when forced", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make()
      fake.seed({
        externalPort: 8080,
        protocol: "TCP",
        internalPort: 22,
        internalClient: "192.168.77.50",
        enabled: true,
        description: "peer",
        leaseSeconds: 0
      })
      const error = yield* Effect.flatMap(mapperOf, (mapper) => Effect.flip(mapper.map({ ...request, force: true }))).pipe(
        Effect.provide(withGateway(fake))
      )
      assert.strictEqual(error._tag, "PortConflict")
      assert.match(error.message, /another host; it is left alone/)
      assert.deepStrictEqual(mappingActions(fake), ["GetSpecificPortMappingEntry"])
    }).pipe(Effect.scoped))

  it.live("the granted lease is the one the router applies: IGDv2 turns a permanent lease into a week", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make({ igdVersion: 2 })
      const granted = yield* Effect.flatMap(mapperOf, (mapper) => mapper.map({ ...request, leaseSeconds: 0 })).pipe(
        Effect.provide(withGateway(fake))
      )
      assert.strictEqual(granted.leaseSeconds, 604800)
    }).pipe(Effect.scoped))

  it.live("ownershipVerified skips the check before adding (the verification after stays)", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make()
      yield* Effect.flatMap(mapperOf, (mapper) => mapper.map({ ...request, ownershipVerified: true })).pipe(
        Effect.provide(withGateway(fake))
      )
      assert.deepStrictEqual(mappingActions(fake), ["AddPortMapping", "GetSpecificPortMappingEntry"])
    }).pipe(Effect.scoped))

  it.live("readBack false leaves the check to the caller: one AddPortMapping, the lease as granted", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make()
      const granted = yield* Effect.flatMap(mapperOf, (mapper) =>
        mapper.map({ ...request, ownershipVerified: true, readBack: false })).pipe(Effect.provide(withGateway(fake)))
      assert.deepStrictEqual(mappingActions(fake), ["AddPortMapping"])
      assert.strictEqual(granted.leaseSeconds, request.leaseSeconds)
      assert.strictEqual(fake.mappings.length, 1)
    }).pipe(Effect.scoped))

  it.live("a router that reports success but creates nothing is caught", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make()
      fake.inject(
        { kind: "raw", body: `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><u:AddPortMappingResponse xmlns:u="${fake.serviceType}"/></s:Body></s:Envelope>` },
        { action: "AddPortMapping" }
      )
      const error = yield* Effect.flatMap(mapperOf, (mapper) => Effect.flip(mapper.map(request))).pipe(
        Effect.provide(withGateway(fake))
      )
      assert.strictEqual(error._tag, "GatewayProtocolError")
      assert.match(error.message, /reported success but holds no such mapping/)
    }).pipe(Effect.scoped))

  it.live("a description of 64 bytes is refused before anything is sent", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make()
      const error = yield* Effect.flatMap(mapperOf, (mapper) => Effect.flip(mapper.map({ ...request, description: "x".repeat(64) }))).pipe(
        Effect.provide(withGateway(fake))
      )
      assert.strictEqual(error._tag, "InvalidMapping")
      assert.deepStrictEqual(mappingActions(fake), [])
    }).pipe(Effect.scoped))

  it.live("a private WAN: map fails with DoubleNat and nothing is mapped", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make({ externalIp: "10.0.0.2" })
      const error = yield* Effect.flatMap(mapperOf, (mapper) => Effect.flip(mapper.map(request))).pipe(
        Effect.provide(withGateway(fake))
      )
      assert.strictEqual(error._tag, "DoubleNat")
      assert.strictEqual(fake.mappings.length, 0)
    }).pipe(Effect.scoped))

  it.live("unmap, get and list", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make()
      yield* Effect.gen(function*() {
        const mapper = yield* PortMapper
        yield* mapper.map(request)
        yield* mapper.map({ ...request, externalPort: 5353, protocol: "UDP", internalPort: 5353, description: "dns" })
        const entry = yield* mapper.get(8080, "TCP")
        assert.strictEqual(entry?.internalPort, 30000)
        assert.strictEqual(entry?.description, request.description)
        assert.isUndefined(yield* mapper.get(8081, "TCP"))
        const table = yield* mapper.list
        assert.deepStrictEqual(table?.map((row) => `${row.protocol} ${row.externalPort} ${row.description}`), [
          `TCP 8080 ${request.description}`,
          "UDP 5353 dns"
        ])
        yield* mapper.unmap({ externalPort: 8080, protocol: "TCP" })
        yield* mapper.unmap({ externalPort: 8080, protocol: "TCP" })
        assert.isUndefined(yield* mapper.get(8080, "TCP"))
      }).pipe(Effect.provide(withGateway(fake)))
      assert.deepStrictEqual(fake.mappings.map((m) => m.externalPort), [5353])
    }).pipe(Effect.scoped))

  it.live("status and externalAddress", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make()
      yield* Effect.gen(function*() {
        const mapper = yield* PortMapper
        const status = yield* mapper.status
        assert.deepStrictEqual(status, {
          router: fake.controlUrl,
          protocol: "upnp-igd",
          connected: true,
          uptimeSeconds: 4242,
          externalAddress: { ip: "122.112.219.229", class: "public" },
          localAddress: "127.0.0.1",
          selection: `${fake.location}, the URL given by --gateway-url`
        })
        assert.strictEqual(yield* mapper.selection ?? Effect.succeed(undefined), `${fake.location}, the URL given by --gateway-url`)
        fake.configure({ externalIp: "100.64.1.2", revealPrivateExternalIp: true })
        assert.deepStrictEqual(yield* mapper.externalAddress, { ip: "100.64.1.2", class: "private" })
        fake.configure({ externalIp: "0.0.0.0" })
        assert.deepStrictEqual(yield* mapper.externalAddress, { ip: "0.0.0.0", class: "missing" })
      }).pipe(Effect.provide(withGateway(fake)))
    }).pipe(Effect.scoped))

  it.live("the gateway is found once and kept; a gateway that stops answering is looked up again", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make()
      yield* Effect.gen(function*() {
        const mapper = yield* PortMapper
        yield* mapper.externalAddress
        yield* mapper.status
        yield* mapper.get(8080, "TCP")
        assert.strictEqual(fake.descriptionFetches(), 1)
        fake.inject({ kind: "reset" }, { action: "GetExternalIPAddress", times: 2 })
        const error = yield* Effect.flip(mapper.externalAddress)
        assert.strictEqual(error._tag, "GatewayUnreachable")
        assert.strictEqual(fake.descriptionFetches(), 1)
        yield* mapper.externalAddress
        assert.strictEqual(fake.descriptionFetches(), 2)
        yield* mapper.externalAddress
        assert.strictEqual(fake.descriptionFetches(), 2)
      }).pipe(Effect.provide(withGateway(fake)))
    }).pipe(Effect.scoped))

  it.live("many maps at once all succeed through the per-router limit", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make()
      yield* Effect.gen(function*() {
        const mapper = yield* PortMapper
        yield* Effect.forEach(
          Array.from({ length: 20 }, (_, index) => index),
          (index) => mapper.map({ ...request, externalPort: 20000 + index, description: `svc-${index}` }),
          { concurrency: "unbounded" }
        )
      }).pipe(Effect.provide(withGateway(fake, { concurrency: 2 })))
      assert.strictEqual(fake.mappings.length, 20)
      assert.strictEqual(fake.descriptionFetches(), 1)
    }).pipe(Effect.scoped))

  it.live("a control URL off the LAN is refused with a typed error naming the field", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make({ controlUrlHost: "203.0.113.9" })
      const error = yield* Effect.flatMap(mapperOf, (mapper) => Effect.flip(mapper.status)).pipe(
        Effect.provide(withGateway(fake))
      )
      assert.strictEqual(error._tag, "GatewayProtocolError")
      assert.strictEqual(error._tag === "GatewayProtocolError" ? error.field : undefined, "controlURL")
      assert.match(error.message, /203\.0\.113\.9/)
      assert.deepStrictEqual(fake.actions(), [])
    }).pipe(Effect.scoped))

  it.live("a relative control URL is resolved against the description's host", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make({ relativeControlUrl: true })
      const status = yield* Effect.flatMap(mapperOf, (mapper) => mapper.status).pipe(Effect.provide(withGateway(fake)))
      assert.strictEqual(status.router, fake.controlUrl)
    }).pipe(Effect.scoped))

  it.live("an unreachable description is reported as such", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make()
      fake.inject({ kind: "bare500" }, { action: "description" })
      const error = yield* Effect.flatMap(mapperOf, (mapper) => Effect.flip(mapper.status)).pipe(
        Effect.provide(withGateway(fake))
      )
      assert.strictEqual(error._tag, "GatewayUnreachable")
      assert.match(error.message, /root description on .*HTTP 500/)
    }).pipe(Effect.scoped))

  it.live("layerConfig takes its options from Config", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make()
      const status = yield* Effect.flatMap(mapperOf, (mapper) => mapper.status).pipe(
        Effect.provide(UpnpGateway.layerConfig({
          gatewayUrl: Config.String("EDGE_CCM_GATEWAY_URL"),
          concurrency: Config.Int("EDGE_CCM_GATEWAY_CONCURRENCY")
        })),
        Effect.provide(ConfigProvider.layer(ConfigProvider.fromEnv({
          env: { EDGE_CCM_GATEWAY_URL: fake.location, EDGE_CCM_GATEWAY_CONCURRENCY: "2" }
        })))
      )
      assert.strictEqual(status.router, fake.controlUrl)
    }).pipe(Effect.scoped))

  it.effect("without a gateway URL and without discovery there is no gateway", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flatMap(mapperOf, (mapper) => Effect.flip(mapper.status)).pipe(
        Effect.provide(UpnpGateway.layerWithoutHttp(fast).pipe(Layer.provide(NodeHttpClient.layerNodeHttp)))
      )
      assert.strictEqual(error._tag, "GatewayNotFound")
    }))
})

describe("UpnpGateway selection (miniupnpc's ranking)", () => {
  it.live("a connected gateway with a public address wins over a disconnected one found first", () =>
    Effect.gen(function*() {
      const down = yield* FakeIgd.make({ connectionStatus: "Disconnected", externalIp: "" })
      const up = yield* FakeIgd.make()
      const rows = yield* Effect.flatMap(upnpOf, (gateway) => gateway.discover).pipe(
        Effect.provide(discovering([down.location, up.location]))
      )
      assert.deepStrictEqual(rows.map((row) => [row.location, row.status, row.selected]), [
        [up.location, "Connected", true],
        [down.location, "Disconnected", false]
      ])
      assert.match(rows[0]!.reason, /^selected: connected with a public external address, WANIPConnection:2$/)
      assert.strictEqual(rows[1]!.reason, "not selected: not connected (Disconnected)")
    }).pipe(Effect.scoped))

  it.live("a double NAT gateway (connected, private address hidden) is still chosen when it is the only one", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make({ externalIp: "10.0.0.2" })
      const rows = yield* Effect.flatMap(upnpOf, (gateway) => gateway.discover).pipe(
        Effect.provide(discovering([fake.location]))
      )
      assert.deepStrictEqual(rows.map((row) => [row.externalIp, row.externalIpClass, row.selected]), [[undefined, "missing", true]])
      assert.strictEqual(
        rows[0]!.reason,
        "selected: connected, but no external address reported (a private WAN address hidden by the router: double NAT), WANIPConnection:2"
      )
    }).pipe(Effect.scoped))

  it.live("connected with a public address beats connected with a private one", () =>
    Effect.gen(function*() {
      const doubleNat = yield* FakeIgd.make({ externalIp: "192.168.1.2", revealPrivateExternalIp: true })
      const direct = yield* FakeIgd.make()
      const status = yield* Effect.flatMap(mapperOf, (mapper) => mapper.status).pipe(
        Effect.provide(discovering([doubleNat.location, direct.location]))
      )
      assert.strictEqual(status.router, direct.controlUrl)
    }).pipe(Effect.scoped))

  it.live("among equals, WANIPConnection:2 is preferred over :1", () =>
    Effect.gen(function*() {
      const v1 = yield* FakeIgd.make({ igdVersion: 1 })
      const v2 = yield* FakeIgd.make({ igdVersion: 2 })
      const rows = yield* Effect.flatMap(upnpOf, (gateway) => gateway.discover).pipe(
        Effect.provide(discovering([v1.location, v2.location]))
      )
      assert.deepStrictEqual(rows.map((row) => [row.serviceType, row.selected]), [
        ["urn:schemas-upnp-org:service:WANIPConnection:2", true],
        ["urn:schemas-upnp-org:service:WANIPConnection:1", false]
      ])
      assert.match(rows[1]!.reason, /not selected: WANIPConnection:2 at .* ranks first/)
    }).pipe(Effect.scoped))

  it.live("MikroTik's two WANDevices: the connected one is used", () =>
    Effect.gen(function*() {
      const first = yield* FakeIgd.make({ igdVersion: 1, connectionStatus: "Disconnected", externalIp: "" })
      const second = yield* FakeIgd.make({ igdVersion: 1 })
      const host = yield* FakeIgd.make({
        igdVersion: 1,
        rootDescription: mikrotik(first.controlUrl, second.controlUrl)
      })
      const rows = yield* Effect.flatMap(upnpOf, (gateway) => gateway.discover).pipe(
        Effect.provide(discovering([host.location]))
      )
      assert.deepStrictEqual(rows.map((row) => [row.controlUrl, row.selected]), [
        [second.controlUrl, true],
        [first.controlUrl, false]
      ])
    }).pipe(Effect.scoped))

  it.live("unusable locations are listed with the reason; nothing answering is GatewayNotFound", () =>
    Effect.gen(function*() {
      const good = yield* FakeIgd.make()
      const media = yield* FakeIgd.make({
        rootDescription: `<?xml version="1.0"?><root xmlns="urn:schemas-upnp-org:device-1-0"><device><deviceType>urn:schemas-upnp-org:device:MediaServer:1</deviceType></device></root>`
      })
      const rows = yield* Effect.flatMap(upnpOf, (gateway) => gateway.discover).pipe(
        Effect.provide(discovering([media.location, "http://127.0.0.1:9/rootDesc.xml", good.location]))
      )
      assert.deepStrictEqual(rows.map((row) => [row.location, row.status, row.selected]), [
        [good.location, "Connected", true],
        [media.location, "not a gateway", false],
        ["http://127.0.0.1:9/rootDesc.xml", "unreachable", false]
      ])
      const none = yield* Effect.flatMap(upnpOf, (gateway) => Effect.flip(gateway.discover)).pipe(
        Effect.provide(discovering([]))
      )
      assert.strictEqual(none._tag, "GatewayNotFound")
    }).pipe(Effect.scoped))
})

const mikrotik = (first: string, second: string) => `<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0"><specVersion><major>1</major><minor>0</minor></specVersion>
<device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType><friendlyName>MikroTik Router</friendlyName>
<deviceList>
<device><deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType><deviceList><device><deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType>
<serviceList><service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType><controlURL>${first}</controlURL></service></serviceList></device></deviceList></device>
<device><deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType><deviceList><device><deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType>
<serviceList><service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType><controlURL>${second}</controlURL></service></serviceList></device></deviceList></device>
</deviceList></device></root>`

describe("effectiveLease", () => {
  it.each([
    [3600, 3600, 3600],
    [3600, 3598, 3600],
    [3600, undefined, 3600],
    [0, 0, 0],
    [0, 604800, 604800],
    [0, 604799, 604799],
    [86400 * 30, 604800, 604800]
  ] as const)("sent %s, router reports %s: %s", (sent, reported, expected) => {
    assert.strictEqual(effectiveLease(sent, reported), expected)
  })
})

describe("UpnpGateway port reads", () => {
  const seedRange = (fake: FakeIgd.FakeIgd, ports: ReadonlyArray<number>) => {
    for (const port of ports) {
      fake.seed({
        externalPort: port,
        protocol: "TCP",
        internalPort: 30000,
        internalClient: "192.168.77.10",
        enabled: true,
        description: `d${port}`,
        leaseSeconds: 0
      })
    }
  }
  const readAll = (ports: ReadonlyArray<number>) =>
    Effect.flatMap(mapperOf, (mapper) =>
      Effect.forEach(ports, (port) => mapper.get(port, "TCP"), { concurrency: "unbounded" }))

  it.live("reads made at the same instant share one listing, from the lowest of their ports to the highest", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make({ rangeCapacity: 128 })
      seedRange(fake, [20001, 20003, 20005])
      const ports = [20001, 20002, 20003, 20004, 20005, 20006]
      // With the router found already, as it is for the controller's reads.
      const read = yield* Effect.flatMap(mapperOf, (mapper) => mapper.status).pipe(
        Effect.andThen(readAll(ports)),
        Effect.provide(withGateway(fake))
      )
      assert.deepStrictEqual(read.map((entry) => entry?.description), ["d20001", undefined, "d20003", undefined, "d20005", undefined])
      assert.deepStrictEqual(mappingActions(fake), ["GetListOfPortMappings"])
      const [listing] = fake.requests.filter((r) => r.action === "GetListOfPortMappings")
      assert.deepStrictEqual(
        ["NewStartPort", "NewEndPort"].map((name) => listing?.args.find(([key]) => key === name)?.[1]),
        ["20001", "20006"]
      )
    }).pipe(Effect.scoped))

  it.live("reads made while their range's call is in flight wait for its answer and share the next call", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make({ rangeCapacity: 128 })
      seedRange(fake, [20001, 20004])
      fake.inject({ kind: "slow", ms: 100 }, { action: "GetSpecificPortMappingEntry" })
      const read = yield* Effect.gen(function*() {
        const mapper = yield* mapperOf
        yield* mapper.status
        const lone = yield* Effect.forkChild(mapper.get(20001, "TCP"))
        // The lone read's GetSpecificPortMappingEntry is on its way (and answers late).
        while (!mappingActions(fake).includes("GetSpecificPortMappingEntry")) yield* Effect.sleep("1 millis")
        // Too far apart to share a batch window: only waiting for the call in flight joins them.
        const later = yield* Effect.forEach([20002, 20003, 20004], (port) =>
          Effect.sleep("10 millis").pipe(Effect.andThen(Effect.forkChild(mapper.get(port, "TCP")))))
        return [yield* Fiber.join(lone), ...yield* Effect.forEach(later, Fiber.join)]
      }).pipe(Effect.provide(withGateway(fake)))
      assert.deepStrictEqual(read.map((entry) => entry?.description), ["d20001", undefined, undefined, "d20004"])
      assert.deepStrictEqual(mappingActions(fake), ["GetSpecificPortMappingEntry", "GetListOfPortMappings"])
    }).pipe(Effect.scoped))

  it.live("a lone read, and every read on an IGDv1 router, is one GetSpecificPortMappingEntry", () =>
    Effect.gen(function*() {
      const v2 = yield* FakeIgd.make()
      seedRange(v2, [20001])
      assert.strictEqual((yield* readAll([20001]).pipe(Effect.provide(withGateway(v2))))[0]?.description, "d20001")
      assert.deepStrictEqual(mappingActions(v2), ["GetSpecificPortMappingEntry"])
      const v1 = yield* FakeIgd.make({ igdVersion: 1 })
      seedRange(v1, [20001])
      yield* readAll([20001, 20002]).pipe(Effect.provide(withGateway(v1)))
      assert.deepStrictEqual(mappingActions(v1), ["GetSpecificPortMappingEntry", "GetSpecificPortMappingEntry"])
    }).pipe(Effect.scoped))

  it.live("a router whose listing is unusable is read port by port, and remembered as such", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make()
      seedRange(fake, [20001])
      fake.inject({ kind: "upnp", code: 401 }, { action: "GetListOfPortMappings" })
      const [first, second] = yield* Effect.gen(function*() {
        const first = yield* readAll([20001, 20002])
        const second = yield* readAll([20001, 20002])
        return [first, second]
      }).pipe(Effect.provide(withGateway(fake)))
      assert.deepStrictEqual([first?.[0]?.description, first?.[1], second?.[0]?.description], ["d20001", undefined, "d20001"])
      assert.deepStrictEqual(mappingActions(fake).filter((a) => a === "GetListOfPortMappings"), ["GetListOfPortMappings"])
      assert.strictEqual(mappingActions(fake).filter((a) => a === "GetSpecificPortMappingEntry").length, 4)
    }).pipe(Effect.scoped))
})

describe("UpnpGateway restart announcements", () => {
  it.live("one boot counts once, though the root device and its embedded devices each announce it", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make()
      const reply = (uuid: string, bootId: number): SsdpResponse => ({
        location: fake.location,
        searchTarget: "urn:schemas-upnp-org:device:InternetGatewayDevice:2",
        usn: `uuid:${uuid}::urn:schemas-upnp-org:device:InternetGatewayDevice:2`,
        server: undefined,
        bootId,
        configId: undefined,
        responder: "127.0.0.1"
      })
      // Two reboots, each announced by the root device and two embedded devices.
      const announcements = [2, 3].flatMap((bootId) =>
        ["root", "wan-device", "wan-connection-device"].map((uuid): SsdpAdvertisement => ({ ...reply(uuid, bootId), kind: "alive", nextBootId: undefined }))
      )
      const discovery = Layer.succeed(
        Discovery,
        Discovery.of({
          search: () => Effect.succeed({ router: TRUSTED, responses: [reply("root", 1)], ignored: [] }),
          advertisements: Stream.fromIterable(announcements)
        })
      )
      const restarts = yield* Effect.gen(function*() {
        const mapper = yield* PortMapper
        yield* mapper.status
        return yield* Stream.runCollect(mapper.restarts ?? Stream.empty)
      }).pipe(Effect.provide(UpnpGateway.layerWithoutHttp(fast).pipe(Layer.provide(Layer.merge(NodeHttpClient.layerNodeHttp, discovery)))))
      assert.strictEqual(restarts.length, 2)
    }).pipe(Effect.scoped))
})

describe("UpnpGateway trusts only the router", () => {
  it.live("a stalled description never holds up selected: the lock is taken only to adopt a choice", () =>
    Effect.gen(function*() {
      const stalled = yield* FakeIgd.make()
      stalled.inject({ kind: "stall" }, { action: "description", times: 100 })
      const good = yield* FakeIgd.make()
      // The first search finds only the stalled description; every later one the good router.
      const layer = UpnpGateway.layerWithoutHttp({ ...fast, soapTimeout: "60 seconds" }).pipe(
        Layer.provide(Layer.merge(
          NodeHttpClient.layerNodeHttp,
          discoverySequence([searchResult([stalled.location]), searchResult([good.location])])
        ))
      )
      yield* Effect.gen(function*() {
        const upnp = yield* UpnpGateway
        const stuck = yield* Effect.forkChild(upnp.discover)
        yield* Effect.promise(() => waitUntil(() => stalled.descriptionFetches() > 0))
        // Another caller finds and adopts the good router while the first is still waiting.
        const chosen = yield* upnp.selected.pipe(Effect.timeout("5 seconds"))
        assert.strictEqual(chosen.service.controlUrl, good.controlUrl)
        // A cached choice comes back at once, whatever discovery is under way.
        const again = yield* upnp.selected.pipe(Effect.timeout("100 millis"))
        assert.strictEqual(again, chosen)
        assert.isUndefined(stuck.pollUnsafe())
        yield* Fiber.interrupt(stuck)
      }).pipe(Effect.provide(layer))
    }).pipe(Effect.scoped), 20_000)

  it.live("names the router and why: --gateway-address, or the node's default gateway", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make()
      for (
        const [router, selection] of [
          [TRUSTED, "127.0.0.1, set by --gateway-address"],
          [{ address: "127.0.0.1", source: "default-route" } as const, "127.0.0.1, the node's default gateway"]
        ] as const
      ) {
        const status = yield* Effect.flatMap(mapperOf, (mapper) => mapper.status).pipe(
          Effect.provide(UpnpGateway.layerWithoutHttp(fast).pipe(
            Layer.provide(Layer.merge(
              NodeHttpClient.layerNodeHttp,
              discoverySequence([searchResult([fake.location], [], router)])
            ))
          ))
        )
        assert.strictEqual(status.selection, selection)
      }
    }).pipe(Effect.scoped))

  it.live("other hosts' gateways are listed as ignored and never contacted; alone, they are no gateway", () =>
    Effect.gen(function*() {
      const laptop = yield* FakeIgd.make()
      const ignored = [{ responder: "127.0.0.2", location: laptop.location, searchTarget: "urn:schemas-upnp-org:device:InternetGatewayDevice:2" }]
      const layer = UpnpGateway.layerWithoutHttp(fast).pipe(
        Layer.provide(Layer.merge(NodeHttpClient.layerNodeHttp, discoverySequence([searchResult([], ignored)])))
      )
      const [rows, error] = yield* Effect.gen(function*() {
        const upnp = yield* UpnpGateway
        return [yield* upnp.discover, yield* Effect.flip(upnp.selected)] as const
      }).pipe(Effect.provide(layer))
      assert.deepStrictEqual(rows.map((row) => [row.location, row.status, row.selected, row.reason]), [
        [laptop.location, "ignored", false, "ignored: not the gateway set by --gateway-address (127.0.0.1)"]
      ])
      assert.strictEqual(error._tag, "GatewayNotFound")
      assert.include(error.message, "the router (127.0.0.1, set by --gateway-address) did not answer the SSDP search")
      assert.include(error.message, "127.0.0.2")
      assert.include(error.message, "--gateway-address")
      assert.deepStrictEqual(laptop.requests, [])
    }).pipe(Effect.scoped))

  it.effect("no default route and no --gateway-address: GatewayNotFound that says so and names the flag", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flatMap(upnpOf, (upnp) => Effect.flip(upnp.selected)).pipe(
        Effect.provide(UpnpGateway.layerWithoutHttp(fast).pipe(
          Layer.provide(Layer.merge(NodeHttpClient.layerNodeHttp, discoverySequence([searchResult([], [], "none")])))
        ))
      )
      assert.strictEqual(error._tag, "GatewayNotFound")
      assert.include(error.message, "no IPv4 default route")
      assert.include(error.message, "--gateway-address")
    }))

  it.effect("--gateway-url is refused off the LAN (a WAN host, a name)", () =>
    Effect.gen(function*() {
      for (const url of ["http://8.8.8.8:5000/rootDesc.xml", "http://router.lan/rootDesc.xml", "http://169.254.169.254/"]) {
        const error = yield* Effect.flatMap(mapperOf, (mapper) => Effect.flip(mapper.status)).pipe(
          Effect.provide(UpnpGateway.layerWithoutHttp({ ...fast, gatewayUrl: url }).pipe(Layer.provide(NodeHttpClient.layerNodeHttp)))
        )
        assert.strictEqual(error._tag, "GatewayNotFound", url)
        assert.include(error.message, `--gateway-url ${url} is refused`)
      }
    }))
})

describe("makeBootIdMemory", () => {
  const announced = (location: string, bootId: number): SsdpResponse => ({
    location,
    searchTarget: "urn:schemas-upnp-org:device:InternetGatewayDevice:2",
    usn: undefined,
    server: undefined,
    bootId,
    configId: undefined,
    responder: "127.0.0.1"
  })

  it.effect(`10,000 distinct LOCATIONs leave ${MAX_BOOT_IDS} remembered; a changed BOOTID is a reboot`, () =>
    Effect.sync(() => {
      const memory = makeBootIdMemory()
      for (let i = 0; i < 10_000; i++) {
        assert.isFalse(memory.observe(announced(`http://127.0.0.1:${1024 + i}/p${i}.xml`, i)))
        assert.isAtMost(memory.size(), MAX_BOOT_IDS)
      }
      assert.strictEqual(memory.size(), MAX_BOOT_IDS)
      // Alternating BOOTIDs of one LOCATION: each change is a reboot, and the table does not grow.
      const router = "http://127.0.0.1:49536/rootDesc.xml"
      assert.isFalse(memory.observe(announced(router, 1)))
      for (let i = 0; i < 10_000; i++) assert.isTrue(memory.observe(announced(router, 2 + (i % 2))))
      assert.strictEqual(memory.size(), MAX_BOOT_IDS)
      // The first LOCATION was forgotten: its next BOOTID is news, not a reboot.
      assert.isFalse(memory.observe(announced("http://127.0.0.1:1024/p0.xml", 99)))
    }))
})
