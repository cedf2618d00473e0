import { assert, describe, it } from "@effect/vitest"
import type * as Os from "node:os"
import { Arbitrary, Effect, Result, Schema } from "effect"
import {
  isOnDirectlyConnectedLan,
  localIpv6Networks,
  localSubnets,
  type LocationRefused,
  type NetworkInterfaces,
  repairLocation
} from "../../../src/gateway/upnp/LanGuard.ts"

const ipv4 = (cidr: string, internal = false): Os.NetworkInterfaceInfoIPv4 => {
  const [address] = cidr.split("/")
  return { address: address!, netmask: "", family: "IPv4", mac: "02:00:00:00:00:01", internal, cidr }
}

/** A node on 192.168.1.0/24 with a loopback, a link-local address, IPv6 and a /32 tunnel. */
const MACHINE: NetworkInterfaces = {
  lo: [ipv4("127.0.0.1/8", true)],
  eth0: [
    ipv4("192.168.1.10/24"),
    { address: "fe80::1", netmask: "ffff:ffff:ffff:ffff::", family: "IPv6", mac: "02:00:00:00:00:01", internal: false, cidr: "fe80::1/64", scopeid: 2 }
  ],
  eth1: [ipv4("169.254.3.4/16")],
  tun0: [ipv4("10.8.0.2/32")]
}
const subnets = localSubnets(MACHINE)
const ROUTER = "192.168.1.1"

const refusal = (location: string, responder = ROUTER): LocationRefused => {
  const result = repairLocation(location, responder, subnets)
  if (Result.isSuccess(result)) throw new Error(`expected a refusal, got ${result.success}`)
  return result.failure
}
const repaired = (location: string, responder = ROUTER): string => {
  const result = repairLocation(location, responder, subnets)
  if (Result.isFailure(result)) throw new Error(`expected a URL, got ${result.failure.message}`)
  return result.success
}

describe("localSubnets", () => {
  it.effect("keeps non-loopback, non-link-local IPv4 subnets", () =>
    Effect.sync(() => {
      assert.deepStrictEqual(
        subnets.map((subnet) => [subnet.interfaceName, `${subnet.network}`]),
        [["eth0", "192.168.1.0/24"], ["tun0", "10.8.0.2/32"]]
      )
    }))
})

describe("localIpv6Networks", () => {
  const ipv6 = (cidr: string): Os.NetworkInterfaceInfoIPv6 => ({
    address: cidr.split("/")[0]!,
    netmask: "",
    family: "IPv6",
    mac: "02:00:00:00:00:01",
    internal: false,
    cidr,
    scopeid: 0
  })
  it.effect("the device's global IPv6 networks only: not its link-local or unique-local ones, not another device's", () =>
    Effect.sync(() => {
      const table: NetworkInterfaces = {
        ...MACHINE,
        eth0: [...MACHINE["eth0"]!, ipv6("2001:db8:2::10/64"), ipv6("fd00:1::10/64")],
        eth2: [ipv6("2001:db8:9::10/64")]
      }
      assert.deepStrictEqual(localIpv6Networks("eth0", table).map(String), ["2001:db8:2::/64"])
      assert.deepStrictEqual(localIpv6Networks("wlan0", table), [])
    }))
})

describe("isOnDirectlyConnectedLan", () => {
  it.effect("accepts hosts of a connected subnet", () =>
    Effect.sync(() => {
      for (const ip of ["192.168.1.1", "192.168.1.254", "192.168.1.10", "10.8.0.2"]) {
        assert.isTrue(isOnDirectlyConnectedLan(ip, subnets), ip)
      }
    }))

  it.effect("refuses WAN, routed, link-local, loopback, broadcast and non-IPv4 addresses", () =>
    Effect.sync(() => {
      for (
        const ip of [
          "8.8.8.8",
          "122.112.219.229",
          "192.168.2.1",
          "10.8.0.1",
          "169.254.169.254",
          "169.254.3.5",
          "127.0.0.1",
          "0.0.0.0",
          "192.168.1.0",
          "192.168.1.255",
          "255.255.255.255",
          "239.255.255.250",
          "::1",
          "fe80::2",
          "router.lan",
          "192.168.1.1:80",
          ""
        ]
      ) assert.isFalse(isOnDirectlyConnectedLan(ip, subnets), ip)
    }))

  it.effect("on this machine, too, never the metadata address or loopback", () =>
    Effect.sync(() => {
      assert.isFalse(isOnDirectlyConnectedLan("169.254.169.254"))
      assert.isFalse(isOnDirectlyConnectedLan("127.0.0.1"))
    }))
})

describe("repairLocation", () => {
  it.effect("keeps a LOCATION on the responder", () =>
    Effect.sync(() => {
      assert.strictEqual(repaired("http://192.168.1.1:5000/rootDesc.xml"), "http://192.168.1.1:5000/rootDesc.xml")
      assert.strictEqual(repaired(" http://192.168.1.1/igd.xml?x=1 "), "http://192.168.1.1/igd.xml?x=1")
    }))

  it.effect("TP-Link [::1], loopback and unspecified hosts are replaced by the responder", () =>
    Effect.sync(() => {
      assert.strictEqual(repaired("http://[::1]:1900/igd.xml"), "http://192.168.1.1:1900/igd.xml")
      assert.strictEqual(repaired("http://127.0.0.1:1900/igd.xml"), "http://192.168.1.1:1900/igd.xml")
      assert.strictEqual(repaired("http://0.0.0.0:49152/desc.xml"), "http://192.168.1.1:49152/desc.xml")
      assert.strictEqual(repaired("http://[::]:80/desc.xml"), "http://192.168.1.1/desc.xml")
      // Numeric forms the URL parser canonicalises (0x7f.1 is 127.0.0.1).
      assert.strictEqual(repaired("http://0x7f.1:5000/d.xml"), "http://192.168.1.1:5000/d.xml")
    }))

  it.effect("a LAN host other than the responder is replaced by the responder", () =>
    Effect.sync(() => {
      assert.strictEqual(repaired("http://192.168.1.20:5000/d.xml"), "http://192.168.1.1:5000/d.xml")
      assert.strictEqual(repaired("http://[fe80::1]:5000/d.xml"), "http://192.168.1.1:5000/d.xml")
    }))

  it.effect("drops user info and fragments", () =>
    Effect.sync(() => {
      assert.strictEqual(repaired("http://admin:secret@192.168.1.1:80/d.xml#x"), "http://192.168.1.1/d.xml")
    }))

  it.effect("refuses a WAN/public address, naming LOCATION", () =>
    Effect.sync(() => {
      const error = refusal("http://122.112.219.229:5000/rootDesc.xml")
      assert.strictEqual(error._tag, "LocationRefused")
      assert.strictEqual(error.field, "LOCATION")
      assert.strictEqual(error.responder, ROUTER)
      assert.strictEqual(error.location, "http://122.112.219.229:5000/rootDesc.xml")
      assert.include(error.reason, "not on a directly connected LAN subnet")
      assert.include(error.message, "LOCATION")
      // A private address we have no interface on is just as far away.
      assert.include(refusal("http://10.0.0.1:5000/d.xml").reason, "not on a directly connected LAN subnet")
    }))

  it.effect("refuses the link-local cloud metadata address, however it is spelled", () =>
    Effect.sync(() => {
      assert.include(refusal("http://169.254.169.254/latest/meta-data/").reason, "link-local")
      assert.include(refusal("http://[::ffff:169.254.169.254]/").reason, "link-local")
      assert.include(refusal("http://2852039166/").reason, "link-local")
    }))

  it.effect("refuses a host name", () =>
    Effect.sync(() => {
      const error = refusal("http://router.lan:5000/rootDesc.xml")
      assert.strictEqual(error.field, "LOCATION")
      assert.include(error.reason, "name")
      assert.include(refusal("http://metadata.google.internal/").reason, "name")
    }))

  it.effect("refuses what is not an absolute http URL", () =>
    Effect.sync(() => {
      assert.include(refusal("https://192.168.1.1/d.xml").reason, "not http")
      assert.include(refusal("file:///etc/passwd").reason, "not http")
      assert.include(refusal("/rootDesc.xml").reason, "not an absolute URL")
      assert.include(refusal("").reason, "not an absolute URL")
    }))

  it.effect("refuses multicast and broadcast hosts", () =>
    Effect.sync(() => {
      assert.include(refusal("http://239.255.255.250:1900/").reason, "not a unicast")
      assert.include(refusal("http://255.255.255.255/").reason, "not a unicast")
    }))

  it.effect("refuses any LOCATION from a responder that is not on our LAN", () =>
    Effect.sync(() => {
      assert.include(refusal("http://[::1]:1900/igd.xml", "122.112.219.229").reason, "responder")
      assert.include(refusal("http://169.254.169.254/", "169.254.169.254").reason, "responder")
      assert.include(refusal("http://192.168.1.1/", "not-an-ip").reason, "responder")
    }))

  it.effect("loopback is allowed only from a loopback responder (a local fake)", () =>
    Effect.sync(() => {
      assert.strictEqual(repaired("http://127.0.0.1:4321/d.xml", "127.0.0.1"), "http://127.0.0.1:4321/d.xml")
      assert.strictEqual(repaired("http://[::1]:1900/igd.xml", "127.0.0.1"), "http://127.0.0.1:1900/igd.xml")
      assert.include(refusal("http://8.8.8.8/d.xml", "127.0.0.1").reason, "not on a directly connected LAN subnet")
    }))

  /** LOCATIONs built like URLs, so that many are usable and many are not. */
  const part = <const A extends ReadonlyArray<string>>(values: A) => Arbitrary.schema(Schema.Literals(values))
  const locations = Arbitrary.map(
    Arbitrary.all([
      part(["http://", "http://", "http://", "https://", "file://", "", "HTTP://"]),
      part(["", "", "admin:secret@", "@"]),
      part([
        "192.168.1.1",
        "192.168.1.77",
        "127.0.0.1",
        "[::1]",
        "[::ffff:169.254.169.254]",
        "0.0.0.0",
        "169.254.169.254",
        "8.8.8.8",
        "0x7f.1",
        "router.lan",
        "192.168.1.255",
        "\u00e9"
      ]),
      part(["", ":1900", ":49536", ":0", ":99999"]),
      part(["", "/", "/rootDesc.xml", "/%2e%2e/x.xml", "/d.xml?x=1", "/d.xml#frag"])
    ]),
    (pieces) => pieces.join("")
  )

  it.effect("whatever the LOCATION, the result is typed, and any URL it returns points at the responder", () =>
    Effect.gen(function*() {
      const samples = yield* Arbitrary.sampleEffect(locations, { count: 2_000, seed: 42 })
      let urls = 0
      let refusals = 0
      for (const location of samples) {
        const result = repairLocation(location, ROUTER, subnets)
        if (Result.isFailure(result)) {
          assert.strictEqual(result.failure.field, "LOCATION", location)
          assert.isAbove(result.failure.reason.length, 0, location)
          refusals += 1
          continue
        }
        const url = new URL(result.success)
        assert.strictEqual(url.protocol, "http:", location)
        assert.strictEqual(url.hostname, ROUTER, location)
        assert.strictEqual(url.username, "", location)
        assert.strictEqual(url.password, "", location)
        urls += 1
      }
      // Both kinds of outcome were checked: the assertion on returned URLs is not vacuous.
      assert.isAbove(urls, 200)
      assert.isAbove(refusals, 200)
    }))
})
