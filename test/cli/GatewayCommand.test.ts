import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import * as FakeIgd from "../support/FakeIgd.ts"
import { assertOneLine, cli } from "./harness.ts"

const DISCOVER_KEYS = [
  "location",
  "deviceType",
  "serviceType",
  "controlUrl",
  "status",
  "externalIp",
  "externalIpClass",
  "selected",
  "reason"
]

const LIST_KEYS = [
  "externalPort",
  "protocol",
  "internalClient",
  "internalPort",
  "description",
  "leaseDuration",
  "enabled",
  "remoteHost"
]

const mapArgs = (fake: FakeIgd.FakeIgd, description = "kubernetes/default/http-nginx-service/http") => [
  "gateway",
  "map",
  "--gateway-url",
  fake.location,
  "--external-port",
  "8080",
  "--internal-port",
  "30000",
  "--protocol",
  "TCP",
  "--description",
  description
]

describe("edge-ccm gateway", () => {
  it.live("discover --json finds the fake over SSDP on loopback and explains the choice", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make({ ssdp: true })
      const result = yield* cli([
        "gateway",
        "discover",
        "--json",
        "--timeout",
        "300ms",
        "--ssdp-address",
        "127.0.0.1",
        "--ssdp-port",
        String(fake.ssdpPort),
        "--no-unicast",
        "--gateway-address",
        "127.0.0.1"
      ])
      assert.strictEqual(result.code, 0, result.err)
      const rows = JSON.parse(result.out) as ReadonlyArray<Record<string, unknown>>
      assert.strictEqual(rows.length, 1)
      assert.deepStrictEqual(Object.keys(rows[0]!), DISCOVER_KEYS)
      assert.deepStrictEqual(rows[0], {
        location: fake.location,
        deviceType: "urn:schemas-upnp-org:device:InternetGatewayDevice:2",
        serviceType: "urn:schemas-upnp-org:service:WANIPConnection:2",
        controlUrl: fake.controlUrl,
        status: "Connected",
        externalIp: "122.112.219.229",
        externalIpClass: "public",
        selected: true,
        reason: "selected: connected with a public external address, WANIPConnection:2"
      })
      assert.isAbove(fake.searches.length, 0)
      assert.isTrue(fake.searches.every((search) => search.startsWith("M-SEARCH * HTTP/1.1\r\n")))
    }).pipe(Effect.scoped))

  it.live("discover prints a readable block per gateway", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make()
      const result = yield* cli(["gateway", "discover", "--gateway-url", fake.location])
      assert.strictEqual(result.code, 0, result.err)
      assert.include(result.out, `* ${fake.location}`)
      assert.match(result.out, /external\s+122\.112\.219\.229 \(public\)/)
      assert.match(result.out, /selected\s+connected with a public external address/)
    }).pipe(Effect.scoped))

  it.live("status --json", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make()
      const result = yield* cli(["gateway", "status", "--json", "--gateway-url", fake.location])
      assert.strictEqual(result.code, 0, result.err)
      assert.deepStrictEqual(JSON.parse(result.out), {
        location: fake.location,
        controlUrl: fake.controlUrl,
        serviceType: "urn:schemas-upnp-org:service:WANIPConnection:2",
        status: "Connected",
        connected: true,
        uptimeSeconds: 4242,
        externalIp: "122.112.219.229",
        externalIpClass: "public",
        localAddress: "127.0.0.1",
        permanentLeasesOnly: false,
        selection: `${fake.location}, the URL given by --gateway-url`
      })
    }).pipe(Effect.scoped))

  it.live("map, list, unmap", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make()
      const mapped = yield* cli([...mapArgs(fake), "--json"])
      assert.strictEqual(mapped.code, 0, mapped.err)
      assert.deepStrictEqual(JSON.parse(mapped.out), {
        externalPort: 8080,
        protocol: "TCP",
        internalClient: "127.0.0.1",
        internalPort: 30000,
        description: "kubernetes/default/http-nginx-service/http",
        leaseDuration: 3600,
        externalIp: "122.112.219.229",
        externalIpClass: "public"
      })
      const listed = yield* cli(["gateway", "list", "--json", "--gateway-url", fake.location])
      assert.strictEqual(listed.code, 0, listed.err)
      const rows = JSON.parse(listed.out) as ReadonlyArray<Record<string, unknown>>
      assert.deepStrictEqual(rows.map((row) => Object.keys(row)), [LIST_KEYS])
      assert.deepStrictEqual(rows[0], {
        externalPort: 8080,
        protocol: "TCP",
        internalClient: "127.0.0.1",
        internalPort: 30000,
        description: "kubernetes/default/http-nginx-service/http",
        leaseDuration: 3600,
        enabled: true,
        remoteHost: ""
      })
      const table = yield* cli(["gateway", "list", "--gateway-url", fake.location])
      assert.match(table.out, /^PROTOCOL\s+EXTERNAL\s+INTERNAL\s+DESCRIPTION\s+LEASE\s+ENABLED\s+REMOTE HOST$/m)
      assert.match(table.out, /^TCP\s+8080\s+127\.0\.0\.1:30000\s+kubernetes\/default\/http-nginx-service\/http\s+\d+ s\s+yes\s+\*$/m)
      const removed = yield* cli(["gateway", "unmap", "--gateway-url", fake.location, "--external-port", "8080", "--protocol", "TCP"])
      assert.strictEqual(removed.code, 0, removed.err)
      assert.strictEqual(removed.out, "removed TCP 8080")
      assert.strictEqual(fake.mappings.length, 0)
    }).pipe(Effect.scoped))

  it.live("map refuses another description without --force, in one line, and takes it with --force", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make()
      yield* cli(mapArgs(fake, "first"))
      const refused = yield* cli(mapArgs(fake, "second"))
      assert.strictEqual(refused.code, 1)
      assertOneLine(refused.err)
      assert.match(
        refused.err,
        /^edge-ccm gateway map: TCP 8080 on http:\/\/127\.0\.0\.1:\d+\/ctl\/IPConn is held by 127\.0\.0\.1:30000 "first": .*another description; force/
      )
      assert.strictEqual(fake.mappings[0]!.description, "first")
      const forced = yield* cli([...mapArgs(fake, "second"), "--force"])
      assert.strictEqual(forced.code, 0, forced.err)
      assert.strictEqual(fake.mappings[0]!.description, "second")
    }).pipe(Effect.scoped))

  it.live("a private WAN address: map fails and says double NAT", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make({ externalIp: "10.0.0.2" })
      const result = yield* cli(mapArgs(fake))
      assert.strictEqual(result.code, 1)
      assertOneLine(result.err)
      assert.match(result.err, /^edge-ccm gateway map: http:\/\/127\.0\.0\.1:\d+\/ctl\/IPConn: double NAT: .*UPnP 501/)
    }).pipe(Effect.scoped))

  it.live("a UPnP fault is one line with the action, the router, the code and its meaning", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make()
      fake.inject({ kind: "upnp", code: 729, description: "ConflictWithOtherMechanisms" }, { action: "AddPortMapping" })
      const result = yield* cli(mapArgs(fake))
      assert.strictEqual(result.code, 1)
      assertOneLine(result.err)
      assert.strictEqual(
        result.err,
        `edge-ccm gateway map: AddPortMapping on ${fake.controlUrl} failed: UPnP error 729 (ConflictWithOtherMechanisms)`
      )
    }).pipe(Effect.scoped))

  it.live("an unreachable gateway is one line and a non-zero exit", () =>
    Effect.gen(function*() {
      const result = yield* cli(["gateway", "status", "--gateway-url", "http://127.0.0.1:9/rootDesc.xml"])
      assert.strictEqual(result.code, 1)
      assertOneLine(result.err)
      assert.strictEqual(
        result.err,
        "edge-ccm gateway status: root description on http://127.0.0.1:9/rootDesc.xml: gateway unreachable (connect ECONNREFUSED 127.0.0.1:9)"
      )
    }))

  it.live("the gateway URL can come from the environment", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make()
      const result = yield* cli(["gateway", "status", "--json"], { EDGE_CCM_GATEWAY_URL: fake.location })
      assert.strictEqual(result.code, 0, result.err)
      assert.strictEqual((JSON.parse(result.out) as { location: string }).location, fake.location)
    }).pipe(Effect.scoped))

  it.live("a usage error exits 2 without touching the network", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make()
      const result = yield* cli([
        "gateway",
        "map",
        "--gateway-url",
        fake.location,
        "--external-port",
        "0",
        "--internal-port",
        "30000",
        "--protocol",
        "TCP"
      ])
      assert.strictEqual(result.code, 2)
      assert.include(result.err, "--external-port")
      assert.strictEqual(fake.requests.length, 0)
      assert.strictEqual(fake.descriptionFetches(), 0)
    }).pipe(Effect.scoped))
})
