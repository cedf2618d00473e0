import { NodeHttpClient } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, type Schema } from "effect"
import * as IgdClient from "../../../src/gateway/upnp/IgdClient.ts"
import { readReply, SoapTransport } from "../../../src/gateway/upnp/SoapTransport.ts"
import * as FakeIgd from "../../support/FakeIgd.ts"
import { fixtureBytes } from "./fixtures.ts"

const context = { router: "http://192.168.77.1:49536/ctl/IPConn", action: "Test" }

/** The response values of a captured reply. */
const valuesOf = (fixture: string, action: string) =>
  Effect.flatMap(readReply(fixtureBytes(`soap/${fixture}`), action), (reply) =>
    reply._tag === "Response" ? Effect.succeed(reply.values) : Effect.die(`${fixture} is not a response`))

describe("response schemas", () => {
  it.effect("GetSpecificPortMappingEntry as miniupnpd 2.3.1 answers it", () =>
    Effect.gen(function*() {
      const values = yield* valuesOf("miniupnpd-2.3.1/GetSpecificPortMappingEntry.xml", "GetSpecificPortMappingEntry")
      const entry = yield* IgdClient.decodeResponse(IgdClient.SpecificEntryResponse, context)(values)
      assert.deepStrictEqual(entry, {
        NewInternalPort: 30000,
        NewInternalClient: "192.168.77.10",
        NewEnabled: true,
        NewPortMappingDescription: "kubernetes/default/http-nginx-service/http",
        NewLeaseDuration: 3600
      })
    }))

  it.effect("Huawei's values padded with newlines and tabs", () =>
    Effect.gen(function*() {
      const values = yield* valuesOf("other/huawei-GetSpecificPortMappingEntry.xml", "GetSpecificPortMappingEntry")
      const entry = yield* IgdClient.decodeResponse(IgdClient.SpecificEntryResponse, context)(values)
      assert.strictEqual(entry.NewInternalPort, 30000)
      assert.strictEqual(entry.NewInternalClient, "192.168.100.10")
      assert.strictEqual(entry.NewPortMappingDescription, "kubernetes/default/http-nginx-service/http")
    }))

  it.effect("lower-case protocol, a `true` boolean and escaped characters", () =>
    Effect.gen(function*() {
      const values = yield* valuesOf("other/lowercase-GetGenericPortMappingEntry.xml", "GetGenericPortMappingEntry")
      const entry = yield* IgdClient.decodeResponse(IgdClient.GenericEntryResponse, context)(values)
      assert.strictEqual(entry.NewProtocol, "UDP")
      assert.strictEqual(entry.NewEnabled, true)
      assert.strictEqual(entry.NewPortMappingDescription, "Plex & friends <media>")
    }))

  it.effect("a Latin-1 reply", () =>
    Effect.gen(function*() {
      const values = yield* valuesOf("other/latin1-GetSpecificPortMappingEntry.xml", "GetSpecificPortMappingEntry")
      const entry = yield* IgdClient.decodeResponse(IgdClient.SpecificEntryResponse, context)(values)
      assert.strictEqual(entry.NewPortMappingDescription, "Café caméra")
    }))

  it.effect("miniupnpd's description cut at 64 bytes and followed by garbage still decodes", () =>
    Effect.gen(function*() {
      const values = yield* valuesOf(
        "miniupnpd-2.3.1/GetGenericPortMappingEntry-long-description.xml",
        "GetGenericPortMappingEntry"
      )
      const entry = yield* IgdClient.decodeResponse(IgdClient.GenericEntryResponse, context)(values)
      const description = entry.NewPortMappingDescription ?? ""
      assert.isTrue(description.startsWith("kubernetes/default/a-service-with-a-rather-long-name-indeed/dns-"))
      assert.include(description, "\uFFFD")
      assert.notMatch(description, /[\u0000-\u0008]/)
      assert.strictEqual(entry.NewExternalPort, 9090)
    }))

  it.effect.each([
    ["other/bad-port-GetSpecificPortMappingEntry.xml", "GetSpecificPortMappingEntry", IgdClient.SpecificEntryResponse, "NewInternalPort"],
    ["other/bad-client-GetSpecificPortMappingEntry.xml", "GetSpecificPortMappingEntry", IgdClient.SpecificEntryResponse, "NewInternalClient"],
    ["other/missing-client-GetGenericPortMappingEntry.xml", "GetGenericPortMappingEntry", IgdClient.GenericEntryResponse, "NewInternalClient"],
    ["other/bad-ip-GetExternalIPAddress.xml", "GetExternalIPAddress", IgdClient.ExternalIpResponse, "NewExternalIPAddress"]
  ] as const)("%s fails naming %s", ([fixture, action, schema, field]) =>
    Effect.gen(function*() {
      const values = yield* valuesOf(fixture, action)
      const decoder: Schema.ConstraintDecoder<unknown> = schema
      const error = yield* Effect.flip(IgdClient.decodeResponse(decoder, { ...context, action })(values))
      assert.strictEqual(error._tag, "GatewayProtocolError")
      assert.strictEqual(error.field, field)
      assert.strictEqual(error.action, action)
      assert.include(error.message, `(field ${field})`)
    }))

  it.effect("an empty external address (a private WAN hidden by miniupnpd) decodes as empty", () =>
    Effect.gen(function*() {
      const values = yield* valuesOf("miniupnpd-2.3.1/private-wan-GetExternalIPAddress.xml", "GetExternalIPAddress")
      const response = yield* IgdClient.decodeResponse(IgdClient.ExternalIpResponse, context)(values)
      assert.strictEqual(response.NewExternalIPAddress, "")
    }))
})

describe("parsePortListing", () => {
  it.effect("miniupnpd's CDATA listing", () =>
    Effect.gen(function*() {
      const values = yield* valuesOf("miniupnpd-2.3.1/GetListOfPortMappings-TCP.xml", "GetListOfPortMappings")
      const listing = yield* IgdClient.parsePortListing(values["NewPortListing"] ?? "", context)
      assert.deepStrictEqual(listing, {
        entries: [{
          externalPort: 8080,
          protocol: "TCP",
          internalClient: "192.168.77.10",
          internalPort: 30000,
          description: "kubernetes/default/http-nginx-service/http",
          leaseDuration: 3600,
          enabled: true,
          remoteHost: ""
        }],
        unreadable: 0
      })
    }))

  it.effect("an entity-escaped listing; an entry with port 0 is counted as unreadable", () =>
    Effect.gen(function*() {
      const values = yield* valuesOf("other/escaped-GetListOfPortMappings.xml", "GetListOfPortMappings")
      const listing = yield* IgdClient.parsePortListing(values["NewPortListing"] ?? "", context)
      assert.deepStrictEqual(listing.entries.map((entry) => entry.externalPort), [8080])
      assert.strictEqual(listing.unreadable, 1)
    }))

  it.effect("miniupnpd's empty listing", () =>
    Effect.gen(function*() {
      const values = yield* valuesOf("miniupnpd-2.3.1/GetListOfPortMappings-empty.xml", "GetListOfPortMappings")
      const listing = yield* IgdClient.parsePortListing(values["NewPortListing"] ?? "", context)
      assert.deepStrictEqual(listing, { entries: [], unreadable: 0 })
    }))
})

// -------------------------------------------------------------------------------------------
// Reactions, against the fake IGD
// -------------------------------------------------------------------------------------------

const soapLayer = SoapTransport.layer({ timeout: "2 seconds", retry: { times: 1, base: "5 millis", cap: "5 millis" } }).pipe(
  Layer.provide(NodeHttpClient.layerNodeHttp)
)

const clientFor = (fake: FakeIgd.FakeIgd, listing?: Partial<IgdClient.ListingOptions>) =>
  IgdClient.make(
    { controlUrl: fake.controlUrl, serviceType: fake.serviceType, igdV2: fake.serviceType.endsWith(":2") },
    { listing }
  )

const mapping = (overrides: Partial<IgdClient.PortMappingArgs> = {}): IgdClient.PortMappingArgs => ({
  externalPort: 8080,
  protocol: "TCP",
  internalPort: 30000,
  internalClient: "127.0.0.1",
  description: "kubernetes/default/http-nginx-service/http",
  leaseSeconds: 3600,
  ...overrides
})

const sentLeases = (fake: FakeIgd.FakeIgd) =>
  fake.requests
    .filter((request) => request.action === "AddPortMapping")
    .map((request) => request.args.find(([name]) => name === "NewLeaseDuration")?.[1])

describe("IgdClient reactions", () => {
  it.live("725: retried with lease 0, and lease 0 is used from then on", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make({ igdVersion: 1, permanentLeasesOnly: true })
      const client = yield* clientFor(fake)
      const first = yield* client.addPortMapping(mapping())
      assert.strictEqual(first.leaseSeconds, 0)
      assert.isTrue(yield* client.permanentLeasesOnly)
      const second = yield* client.addPortMapping(mapping({ externalPort: 8081 }))
      assert.strictEqual(second.leaseSeconds, 0)
      assert.deepStrictEqual(sentLeases(fake), ["3600", "0", "0"])
      assert.deepStrictEqual(fake.violations, [])
    }).pipe(Effect.scoped, Effect.provide(soapLayer)))

  it.live("402 on a non-zero lease: retried once with lease 0, and remembered", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make({ igdVersion: 1, invalidArgsOnLease: true })
      const client = yield* clientFor(fake)
      const granted = yield* client.addPortMapping(mapping())
      assert.strictEqual(granted.leaseSeconds, 0)
      assert.isTrue(yield* client.permanentLeasesOnly)
      assert.deepStrictEqual(sentLeases(fake), ["3600", "0"])
    }).pipe(Effect.scoped, Effect.provide(soapLayer)))

  it.live("402 on lease 0 is reported as it is, without a retry", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make({ igdVersion: 1 })
      fake.inject({ kind: "upnp", code: 402 }, { action: "AddPortMapping", times: 3 })
      const client = yield* clientFor(fake)
      const error = yield* Effect.flip(client.addPortMapping(mapping({ leaseSeconds: 0 })))
      assert.strictEqual(error._tag, "UpnpError")
      assert.deepStrictEqual(sentLeases(fake), ["0"])
      assert.isFalse(yield* client.permanentLeasesOnly)
    }).pipe(Effect.scoped, Effect.provide(soapLayer)))

  it.live("718 (the port belongs to another host) is a PortConflict", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make()
      fake.seed({
        externalPort: 8080,
        protocol: "TCP",
        internalPort: 22,
        internalClient: "192.168.77.50",
        enabled: true,
        description: "someone else",
        leaseSeconds: 0
      })
      const client = yield* clientFor(fake)
      const error = yield* Effect.flip(client.addPortMapping(mapping()))
      assert.strictEqual(error._tag, "PortConflict")
      assert.match(error.message, /TCP 8080 on .* is held by another host: ConflictInMappingEntry \(718\)/)
      assert.strictEqual(fake.mappings[0]!.internalClient, "192.168.77.50")
    }).pipe(Effect.scoped, Effect.provide(soapLayer)))

  it.live("718 in secure mode (a mapping for another host) is a PortConflict too", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make({ secureMode: true })
      const client = yield* clientFor(fake)
      const error = yield* Effect.flip(client.addPortMapping(mapping({ internalClient: "192.168.77.50" })))
      assert.strictEqual(error._tag, "PortConflict")
      assert.strictEqual(fake.mappings.length, 0)
    }).pipe(Effect.scoped, Effect.provide(soapLayer)))

  it.live("714 on delete is success; 606 on delete is a conflict, and the mapping stays", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make({ secureMode: true })
      fake.seed({
        externalPort: 7071,
        protocol: "TCP",
        internalPort: 22,
        internalClient: "192.168.77.50",
        enabled: true,
        description: "peer",
        leaseSeconds: 0
      })
      const client = yield* clientFor(fake)
      yield* client.deletePortMapping(9999, "UDP")
      const error = yield* Effect.flip(client.deletePortMapping(7071, "TCP"))
      assert.strictEqual(error._tag, "PortConflict")
      assert.match(error.message, /not authorized \(606\)/)
      assert.strictEqual(fake.mappings.length, 1)
      const deleteArgs = fake.requests.filter((request) => request.action === "DeletePortMapping").map((request) => request.args)
      assert.deepStrictEqual(deleteArgs[0], [["NewRemoteHost", ""], ["NewExternalPort", "9999"], ["NewProtocol", "UDP"]])
    }).pipe(Effect.scoped, Effect.provide(soapLayer)))

  it.live("501 with a private WAN address that miniupnpd hides: DoubleNat, never success", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make({ externalIp: "10.0.0.2" })
      const client = yield* clientFor(fake)
      const error = yield* Effect.flip(client.addPortMapping(mapping()))
      assert.strictEqual(error._tag, "DoubleNat")
      assert.match(error.message, /double NAT/)
      assert.match(error.message, /UPnP 501/)
      assert.strictEqual(fake.mappings.length, 0)
    }).pipe(Effect.scoped, Effect.provide(soapLayer)))

  it.live("501 with a private WAN address the router shows: DoubleNat naming the address", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make({ externalIp: "100.64.12.7", revealPrivateExternalIp: true })
      const client = yield* clientFor(fake)
      const error = yield* Effect.flip(client.addPortMapping(mapping()))
      assert.strictEqual(error._tag, "DoubleNat")
      assert.strictEqual(error._tag === "DoubleNat" ? error.externalIp : undefined, "100.64.12.7")
      assert.match(error.message, /double NAT: the router's external address 100\.64\.12\.7 is private/)
    }).pipe(Effect.scoped, Effect.provide(soapLayer)))

  it.live("501 with the WAN link down: DoubleNat saying the link is down", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make({ externalIp: "", connectionStatus: "Disconnected" })
      const client = yield* clientFor(fake)
      const error = yield* Effect.flip(client.addPortMapping(mapping()))
      assert.strictEqual(error._tag, "DoubleNat")
      assert.match(error.message, /WAN link is Disconnected/)
    }).pipe(Effect.scoped, Effect.provide(soapLayer)))

  it.live("501 with a public address stays a plain UPnP error", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make()
      fake.inject({ kind: "upnp", code: 501 }, { action: "AddPortMapping" })
      const client = yield* clientFor(fake)
      const error = yield* Effect.flip(client.addPortMapping(mapping()))
      assert.strictEqual(error._tag, "UpnpError")
      assert.strictEqual(error._tag === "UpnpError" ? error.code : 0, 501)
    }).pipe(Effect.scoped, Effect.provide(soapLayer)))

  it.live("724 says the router wants equal ports", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make()
      fake.inject({ kind: "upnp", code: 724 }, { action: "AddPortMapping" })
      const client = yield* clientFor(fake)
      const error = yield* Effect.flip(client.addPortMapping(mapping()))
      assert.match(error.message, /UPnP error 724 \(SamePortValuesRequired: .*8080 -> 30000/)
    }).pipe(Effect.scoped, Effect.provide(soapLayer)))

  it.live("port 0 (716), a description of 64 bytes and a host name are refused before anything is sent", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make()
      const client = yield* clientFor(fake)
      const port = yield* Effect.flip(client.addPortMapping(mapping({ externalPort: 0 })))
      assert.strictEqual(port._tag, "InvalidMapping")
      assert.strictEqual(port._tag === "InvalidMapping" ? port.field : "", "NewExternalPort")
      const long = yield* Effect.flip(client.addPortMapping(mapping({ description: "d".repeat(64) })))
      assert.strictEqual(long._tag === "InvalidMapping" ? long.field : "", "NewPortMappingDescription")
      assert.match(long.message, /is 64 bytes; at most 63/)
      const multibyte = yield* Effect.flip(client.addPortMapping(mapping({ description: "é".repeat(32) })))
      assert.strictEqual(multibyte._tag, "InvalidMapping")
      const host = yield* Effect.flip(client.addPortMapping(mapping({ internalClient: "node-1.lan" })))
      assert.strictEqual(host._tag === "InvalidMapping" ? host.field : "", "NewInternalClient")
      assert.deepStrictEqual(fake.requests, [])
      yield* client.addPortMapping(mapping({ description: "d".repeat(63) }))
      assert.strictEqual(fake.mappings.length, 1)
    }).pipe(Effect.scoped, Effect.provide(soapLayer)))

  it.live("AddAnyPortMapping (IGDv2) returns the reserved port, which may differ", () =>
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
      const client = yield* clientFor(fake)
      const granted = yield* client.addAnyPortMapping(mapping())
      assert.deepStrictEqual(granted, { externalPort: 8081, leaseSeconds: 3600 })
      assert.deepStrictEqual(fake.actions(), ["AddAnyPortMapping"])
    }).pipe(Effect.scoped, Effect.provide(soapLayer)))

  it.live("AddAnyPortMapping falls back to AddPortMapping on 401, and on IGDv1", () =>
    Effect.gen(function*() {
      const v2 = yield* FakeIgd.make()
      v2.inject({ kind: "upnp", code: 401 }, { action: "AddAnyPortMapping" })
      const onV2 = yield* (yield* clientFor(v2)).addAnyPortMapping(mapping())
      assert.deepStrictEqual(onV2, { externalPort: 8080, leaseSeconds: 3600 })
      assert.deepStrictEqual(v2.actions(), ["AddAnyPortMapping", "AddPortMapping"])
      const v1 = yield* FakeIgd.make({ igdVersion: 1 })
      yield* (yield* clientFor(v1)).addAnyPortMapping(mapping())
      assert.deepStrictEqual(v1.actions(), ["AddPortMapping"])
    }).pipe(Effect.scoped, Effect.provide(soapLayer)))
})

const seedMany = (fake: FakeIgd.FakeIgd, count: number, protocol: "TCP" | "UDP" = "TCP") => {
  for (let index = 0; index < count; index++) {
    fake.seed({
      externalPort: 10000 + index,
      protocol,
      internalPort: 30000 + index,
      internalClient: "192.168.77.10",
      enabled: true,
      description: `m${index}`,
      leaseSeconds: 0
    })
  }
}

const seededPorts = (count: number) => Array.from({ length: count }, (_, index) => 10000 + index)

const argument = (request: FakeIgd.RecordedRequest, name: string) => request.args.find(([key]) => key === name)?.[1]

describe("IgdClient listing", () => {
  it.live("IGDv2: GetListOfPortMappings per protocol, paged", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make()
      seedMany(fake, 5, "TCP")
      seedMany(fake, 1, "UDP")
      const listing = yield* (yield* clientFor(fake, { pageSize: 2 })).listPortMappings
      assert.deepStrictEqual(listing.entries.map((entry) => `${entry.protocol}/${entry.externalPort}`), [
        "TCP/10000",
        "TCP/10001",
        "TCP/10002",
        "TCP/10003",
        "TCP/10004",
        "UDP/10000"
      ])
      // One count (is there an entry at index 64?), then listings only.
      assert.deepStrictEqual(fake.actions()[0], "GetGenericPortMappingEntry")
      assert.isTrue(fake.actions().slice(1).every((action) => action === "GetListOfPortMappings"))
      const starts = fake.requests.map((request) => argument(request, "NewStartPort"))
      assert.includeMembers(starts, ["1", "10002", "10004"])
    }).pipe(Effect.scoped, Effect.provide(soapLayer)))

  it.live("a small table: one count and one full-range request per protocol", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make({ rangeCapacity: 128 })
      seedMany(fake, 60, "TCP")
      seedMany(fake, 3, "UDP")
      const listing = yield* (yield* clientFor(fake)).listPortMappings
      assert.strictEqual(listing.entries.length, 63)
      assert.deepStrictEqual([...fake.actions()].sort(), [
        "GetGenericPortMappingEntry",
        "GetListOfPortMappings",
        "GetListOfPortMappings"
      ])
      assert.deepStrictEqual(argument(fake.requests[0]!, "NewPortMappingIndex"), "64")
      assert.deepStrictEqual(fake.violations, [])
    }).pipe(Effect.scoped, Effect.provide(soapLayer)))

  it.live("150 mappings of one protocol are never asked for in one range (miniupnpd overflows past 128)", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make({ rangeCapacity: 128 })
      seedMany(fake, 150, "TCP")
      const client = yield* clientFor(fake)
      const listing = yield* client.listPortMappings
      assert.deepStrictEqual(fake.violations, [])
      assert.deepStrictEqual(listing.entries.map((entry) => entry.externalPort), seededPorts(150))
      // Counted, then entry by entry: more mappings than 64, fewer than the 1,024 ranges would cost.
      assert.notInclude(fake.actions(), "GetListOfPortMappings")
      const generic = fake.actions().filter((action) => action === "GetGenericPortMappingEntry").length
      assert.isAtMost(generic, 151 + 2 * Math.ceil(Math.log2(150)))
      assert.isAtLeast(generic, 151)
    }).pipe(Effect.scoped, Effect.provide(soapLayer)))

  it.live("the next listing asks only the ranges that held mappings, then the gaps between them", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make({ rangeCapacity: 128 })
      seedMany(fake, 150, "TCP")
      seedMany(fake, 3, "UDP")
      const client = yield* clientFor(fake)
      yield* client.listPortMappings
      const before = fake.requests.length
      // A newcomer outside the ranges seen last time is still found (in a gap).
      fake.seed({
        externalPort: 40000,
        protocol: "TCP",
        internalPort: 1,
        internalClient: "192.168.77.50",
        enabled: true,
        description: "new",
        leaseSeconds: 0
      })
      const listing = yield* client.listPortMappings
      assert.deepStrictEqual(fake.violations, [])
      assert.strictEqual(listing.entries.length, 154)
      assert.include(listing.entries.map((entry) => entry.externalPort), 40000)
      const calls = fake.requests.slice(before)
      // TCP 9985-10112 and 10113-10240, UDP 9985-10112, then two gaps per protocol; besides, the count.
      assert.strictEqual(calls.filter((call) => call.action === "GetListOfPortMappings").length, 3 + 4)
      assert.isBelow(calls.length, 30)
      // Nothing changed since: the count takes two calls (an entry at index 153, none at 154).
      const third = fake.requests.length
      assert.strictEqual((yield* client.listPortMappings).entries.length, 154)
      const again = fake.requests.slice(third)
      assert.deepStrictEqual(again.filter((call) => call.action === "GetGenericPortMappingEntry").map((call) => argument(call, "NewPortMappingIndex")), ["64", "153", "154"])
      // Now 40000's range too: four ranges, five gaps.
      assert.strictEqual(again.length, 3 + 4 + 5)
    }).pipe(Effect.scoped, Effect.provide(soapLayer)))

  it.live("a table that grew from empty by its own adds is listed by their ranges, not entry by entry", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make({ rangeCapacity: 128 })
      const client = yield* clientFor(fake)
      // Listed while empty (the controller's first full pass), then 100 Services x 2 ports added.
      assert.strictEqual((yield* client.listPortMappings).entries.length, 0)
      for (let index = 0; index < 100; index++) {
        for (const protocol of ["TCP", "UDP"] as const) {
          yield* client.addPortMapping(mapping({ externalPort: 20001 + index, internalPort: 30001 + index, protocol }))
        }
      }
      const before = fake.requests.length
      const listing = yield* client.listPortMappings
      assert.strictEqual(listing.entries.length, 200)
      assert.deepStrictEqual(fake.violations, [])
      const calls = fake.requests.slice(before)
      // The count (about 2 log2 200 calls), the two ranges per protocol the adds fell in, the gaps.
      assert.isBelow(calls.length, 30, `${calls.length} calls: ${calls.filter((call) => call.action === "GetGenericPortMappingEntry").length} GetGenericPortMappingEntry`)
    }).pipe(Effect.scoped, Effect.provide(soapLayer)))

  it.live("a large table is listed over ranges no wider than the router can hold", () =>
    Effect.gen(function*() {
      // Scaled down: ranges of 4,096 ports (16 per protocol) instead of 128, so 42 mappings
      // stand in for the 1,024+ that make ranges cheaper than the entry-by-entry listing.
      const fake = yield* FakeIgd.make({ rangeCapacity: 4096 })
      seedMany(fake, 40, "TCP")
      seedMany(fake, 2, "UDP")
      const listing = yield* (yield* clientFor(fake, { rangeCapacity: 4096, fullRangeLimit: 16 })).listPortMappings
      assert.deepStrictEqual(fake.violations, [])
      assert.deepStrictEqual(
        listing.entries.filter((entry) => entry.protocol === "TCP").map((entry) => entry.externalPort).sort((a, b) => a - b),
        seededPorts(40)
      )
      assert.strictEqual(listing.entries.filter((entry) => entry.protocol === "UDP").length, 2)
      const ranges = fake.requests.filter((request) => request.action === "GetListOfPortMappings")
      assert.strictEqual(ranges.length, 32)
      const widest = Math.max(...ranges.map((request) => Number(argument(request, "NewEndPort")) - Number(argument(request, "NewStartPort")) + 1))
      assert.isAtMost(widest, 4096)
    }).pipe(Effect.scoped, Effect.provide(soapLayer)))

  it.live("a full page in the router's table order is not continued after its highest port (that would skip entries)", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make({ listingOrder: "table" })
      for (const port of [10005, 10001, 10004, 10002, 10003]) {
        fake.seed({ externalPort: port, protocol: "TCP", internalPort: 1, internalClient: "192.168.77.10", enabled: true, description: `m${port}`, leaseSeconds: 0 })
      }
      const listing = yield* (yield* clientFor(fake, { pageSize: 2 })).listPortMappings
      assert.deepStrictEqual(listing.entries.map((entry) => entry.externalPort).sort((a, b) => a - b), [10001, 10002, 10003, 10004, 10005])
      assert.include(fake.actions(), "GetGenericPortMappingEntry")
    }).pipe(Effect.scoped, Effect.provide(soapLayer)))

  it.live("IGDv2 with an entity-escaped listing", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make({ listingEncoding: "escaped" })
      seedMany(fake, 2)
      const listing = yield* (yield* clientFor(fake)).listPortMappings
      assert.deepStrictEqual(listing.entries.map((entry) => entry.description), ["m0", "m1"])
    }).pipe(Effect.scoped, Effect.provide(soapLayer)))

  it.live("IGDv2 without a usable GetListOfPortMappings falls back to the generic listing", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make()
      seedMany(fake, 2)
      fake.inject({ kind: "upnp", code: 401 }, { action: "GetListOfPortMappings", times: 2 })
      const listing = yield* (yield* clientFor(fake)).listPortMappings
      assert.deepStrictEqual(listing.entries.map((entry) => entry.externalPort), [10000, 10001])
      assert.include(fake.actions(), "GetGenericPortMappingEntry")
    }).pipe(Effect.scoped, Effect.provide(soapLayer)))

  it.live("a router that ignores NewStartPort is listed entry by entry instead", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make()
      seedMany(fake, 3)
      const entry = (port: number) =>
        `<p:PortMappingEntry><p:NewExternalPort>${port}</p:NewExternalPort><p:NewProtocol>TCP</p:NewProtocol>` +
        `<p:NewInternalPort>1</p:NewInternalPort><p:NewInternalClient>192.168.77.10</p:NewInternalClient></p:PortMappingEntry>`
      const samePage = `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>` +
        `<u:GetListOfPortMappingsResponse xmlns:u="${fake.serviceType}"><NewPortListing><![CDATA[` +
        `<p:PortMappingList xmlns:p="urn:schemas-upnp-org:gw:WANIPConnection">${entry(10000)}${entry(10001)}</p:PortMappingList>` +
        `]]></NewPortListing></u:GetListOfPortMappingsResponse></s:Body></s:Envelope>`
      fake.inject({ kind: "raw", body: samePage }, { action: "GetListOfPortMappings", times: 10 })
      const listing = yield* (yield* clientFor(fake, { pageSize: 2 })).listPortMappings
      assert.deepStrictEqual(listing.entries.map((mapping) => mapping.externalPort), [10000, 10001, 10002])
      assert.include(fake.actions(), "GetGenericPortMappingEntry")
    }).pipe(Effect.scoped, Effect.provide(soapLayer)))

  it.live("IGDv1: GetGenericPortMappingEntry from index 0 until 713", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make({ igdVersion: 1 })
      seedMany(fake, 3)
      const listing = yield* (yield* clientFor(fake)).listPortMappings
      assert.deepStrictEqual(listing.entries.map((entry) => entry.externalPort), [10000, 10001, 10002])
      const indexes = fake.requests.map((request) => request.args[0]?.[1])
      assert.deepStrictEqual(indexes, ["0", "1", "2", "3"])
    }).pipe(Effect.scoped, Effect.provide(soapLayer)))

  it.live("a router that counts from 1 (error at index 0) is listed whole", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make({ igdVersion: 1, listFromOne: true })
      seedMany(fake, 2)
      const listing = yield* (yield* clientFor(fake)).listPortMappings
      assert.deepStrictEqual(listing, {
        entries: listing.entries,
        unreadable: 0
      })
      assert.deepStrictEqual(listing.entries.map((entry) => entry.externalPort), [10000, 10001])
    }).pipe(Effect.scoped, Effect.provide(soapLayer)))

  it.live("an unreadable entry is skipped and counted, and the listing goes on", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make({ igdVersion: 1 })
      seedMany(fake, 3)
      fake.inject(
        { kind: "raw", body: FakeIgd.rootDescriptionFor("http://127.0.0.1", { igdVersion: 1, controlUrlHost: undefined, relativeControlUrl: false }) },
        { action: "GetGenericPortMappingEntry", after: 1 }
      )
      const listing = yield* (yield* clientFor(fake)).listPortMappings
      assert.deepStrictEqual(listing.entries.map((entry) => entry.externalPort), [10000, 10002])
      assert.strictEqual(listing.unreadable, 1)
    }).pipe(Effect.scoped, Effect.provide(soapLayer)))

  it.live("a listing that breaks off fails: never a partial table", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make({ igdVersion: 1 })
      seedMany(fake, 4)
      fake.inject({ kind: "reset" }, { action: "GetGenericPortMappingEntry", after: 2, times: 5 })
      const error = yield* Effect.flip((yield* clientFor(fake)).listPortMappings)
      assert.strictEqual(error._tag, "GatewayUnreachable")
    }).pipe(Effect.scoped, Effect.provide(soapLayer)))

  it.live("a router that never answers 713 is cut off with an error, not listed forever", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make({ igdVersion: 1 })
      seedMany(fake, 12)
      const error = yield* Effect.flip((yield* clientFor(fake, { maxEntries: 10 })).listPortMappings)
      assert.strictEqual(error._tag, "GatewayProtocolError")
      assert.match(error.message, /did not end/)
    }).pipe(Effect.scoped, Effect.provide(soapLayer)))

  it.live("too many unreadable entries in a row: the listing is broken", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make({ igdVersion: 1 })
      seedMany(fake, 8)
      fake.inject({ kind: "raw", body: "<garbage/>" }, { action: "GetGenericPortMappingEntry", after: 1, times: 6 })
      const error = yield* Effect.flip((yield* clientFor(fake, { maxConsecutiveUnreadable: 4 })).listPortMappings)
      assert.strictEqual(error._tag, "GatewayProtocolError")
      assert.match(error.message, /listing broke off: 4 unreadable entries in a row/)
    }).pipe(Effect.scoped, Effect.provide(soapLayer)))
})
