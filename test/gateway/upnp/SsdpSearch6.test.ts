/**
 * The IPv6 search for the router's firewall description, against a fake SSDP responder on ::1:
 * only a LOCATION on the router's address is kept, whoever answers; silence ends the window;
 * a flood of other replies does not hide the router's. And the rule for a link-local router.
 */
import * as Dgram from "node:dgram"
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { IpNetwork } from "effect/net"
import { isRouterLocation, searchFirewallDescription6 } from "../../../src/gateway/upnp/SsdpSearch6.ts"

const ROUTER = "2001:db8:2::1"
const reply = (location: string, st = "urn:schemas-upnp-org:service:WANIPv6FirewallControl:1") =>
  `HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: ${st}\r\nUSN: uuid:x::${st}\r\nEXT:\r\nSERVER: Debian/12 UPnP/2.0 MiniUPnPd/2.3.1\r\nLOCATION: ${location}\r\n\r\n`

/** A responder on ::1 that answers each M-SEARCH with `answers`, and records what it was asked. */
const responder = (answers: ReadonlyArray<string>) =>
  Effect.acquireRelease(
    Effect.callback<{ port: number; searches: Array<string>; close: () => void }>((resume) => {
      const socket = Dgram.createSocket("udp6")
      const searches: Array<string> = []
      socket.on("message", (message, from) => {
        searches.push(message.toString())
        for (const answer of answers) socket.send(answer, from.port, from.address)
      })
      socket.bind(0, "::1", () => resume(Effect.succeed({ port: socket.address().port, searches, close: () => socket.close() })))
    }),
    (fake) => Effect.sync(fake.close)
  )

const search = (port: number) => searchFirewallDescription6({ device: "lo", router: ROUTER, group: "::1", port, timeout: "300 millis" })

describe("SSDP over IPv6 for the firewall description", () => {
  it.live("keeps the LOCATION on the router's address; asks for the firewall service and IGD:2", () =>
    Effect.gen(function*() {
      const fake = yield* responder([reply(`http://[2001:DB8:2:0::1]:49536/rootDesc.xml`)])
      const found = yield* search(fake.port)
      assert.strictEqual(found, "http://[2001:DB8:2:0::1]:49536/rootDesc.xml")
      assert.match(fake.searches[0] ?? "", /^M-SEARCH \* HTTP\/1\.1\r\nHOST: \[::1\]:\d+\r\nST: urn:schemas-upnp-org:service:WANIPv6FirewallControl:1\r\n/)
    }).pipe(Effect.scoped))

  it.live("a LOCATION on another host, over IPv4, or for another device type is ignored", () =>
    Effect.gen(function*() {
      const fake = yield* responder([
        reply("http://[2001:db8:2::50]:49536/rootDesc.xml"),
        reply("http://192.168.77.1:49536/rootDesc.xml"),
        reply(`http://[${ROUTER}]:49536/rootDesc.xml`, "urn:schemas-upnp-org:device:MediaServer:1"),
        "not SSDP at all"
      ])
      assert.strictEqual(yield* search(fake.port), undefined)
      assert.isAbove(fake.searches.length, 0)
    }).pipe(Effect.scoped))

  it.live("100 other replies before the router's (more than a cap of 64 would look at) do not hide it", () =>
    Effect.gen(function*() {
      const flood = Array.from({ length: 100 }, (_, i) => reply(`http://[2001:db8:2::${i + 2}]:49536/rootDesc.xml`))
      const fake = yield* responder([...flood, reply(`http://[${ROUTER}]:49536/rootDesc.xml`)])
      assert.strictEqual(yield* search(fake.port), `http://[${ROUTER}]:49536/rootDesc.xml`)
    }).pipe(Effect.scoped))

  it.live("no answer: undefined at the end of the window", () =>
    Effect.gen(function*() {
      const fake = yield* responder([])
      const started = Date.now()
      assert.strictEqual(yield* search(fake.port), undefined)
      assert.isAtLeast(Date.now() - started, 250)
    }).pipe(Effect.scoped))
})

describe("isRouterLocation: which LOCATION a reply may name", () => {
  const lan = [IpNetwork.fromStringUnsafe("2001:db8:2::/64")]
  const GLOBAL = "http://[2001:db8:2::1]:49536/rootDesc.xml"

  it("a router given by its global address: a LOCATION on that address only, whoever sent it", () => {
    assert.isTrue(isRouterLocation(GLOBAL, "fe80::99%eth0", { router: ROUTER, lan }))
    assert.isFalse(isRouterLocation("http://[2001:db8:2::50]:49536/rootDesc.xml", ROUTER, { router: ROUTER, lan }))
  })

  it("a link-local router (router advertisements): its own reply may name a global address on the LAN", () => {
    const router = "fe80::1"
    assert.isTrue(isRouterLocation(GLOBAL, "fe80::1%eth0", { router, lan }))
    assert.isTrue(isRouterLocation(`http://[${router}]:49536/rootDesc.xml`, "fe80::99%eth0", { router, lan }))
  })

  it("a link-local router: another host's reply, a host beyond the LAN, or one not global, is not followed", () => {
    const router = "fe80::1"
    assert.isFalse(isRouterLocation(GLOBAL, "fe80::99%eth0", { router, lan }))
    assert.isFalse(isRouterLocation("http://[2001:db8:7::1]:49536/rootDesc.xml", "fe80::1%eth0", { router, lan }))
    assert.isFalse(isRouterLocation("http://[fd00::1]:49536/rootDesc.xml", "fe80::1%eth0", { router, lan: [IpNetwork.fromStringUnsafe("fd00::/64")] }))
    assert.isFalse(isRouterLocation("http://192.168.77.1:49536/rootDesc.xml", "fe80::1%eth0", { router, lan }))
    assert.isFalse(isRouterLocation(GLOBAL, "fe80::1%eth0", { router }))
  })
})
