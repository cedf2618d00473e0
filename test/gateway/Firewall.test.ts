/**
 * The firewall as the controller sees it, against miniupnpd 2.3.1's captured answers: found in
 * the IGD:2 description (read over IPv4, called on the router's IPv6 address), the node's
 * address, the router's boot time from its uptime, and each way it opens nothing for us.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Ref, Result } from "effect"
import { HttpClient, HttpClientError, HttpClientResponse } from "effect/http"
import { TestClock } from "effect/testing"
import { acceptIpv6Source } from "../../src/gateway/localAddress.ts"
import { Description } from "../../src/gateway/upnp/Description.ts"
import { Firewall, type FirewallOptions } from "../../src/gateway/Firewall.ts"
import { SoapTransport } from "../../src/gateway/upnp/SoapTransport.ts"
import { fixtureBytes, fixtureText } from "./upnp/fixtures.ts"

const LOCATION = "http://192.168.77.1:49536/rootDesc.xml"
const FIREWALL_STATUS_CLOSED = `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><u:GetFirewallStatusResponse xmlns:u="urn:schemas-upnp-org:service:WANIPv6FirewallControl:1"><FirewallEnabled>1</FirewallEnabled><InboundPinholeAllowed>0</InboundPinholeAllowed></u:GetFirewallStatusResponse></s:Body></s:Envelope>`

/** A router serving a description and SOAP answers by action; what was asked lands in `sent`. */
const router = (
  options: {
    readonly description?: (text: string) => string
    readonly firewallStatus?: string
    /** Nothing listens on the router's IPv6 address (miniupnpd with ipv6_disable=yes). */
    readonly refuseIpv6?: boolean
  } = {}
) =>
  Effect.gen(function*() {
    const sent = yield* Ref.make<ReadonlyArray<string>>([])
    const client = HttpClient.make((request) =>
      Effect.gen(function*() {
        const action = (request.headers["soapaction"] ?? "").replace(/^"|"$/g, "").split("#")[1] ?? "GET"
        yield* Ref.update(sent, (all) => [...all, `${action} ${request.url}`])
        if (options.refuseIpv6 === true && request.url.startsWith("http://[")) {
          return yield* new HttpClientError.HttpClientError({
            reason: new HttpClientError.TransportError({
              request,
              cause: Object.assign(new Error("connect ECONNREFUSED 2001:db8:2::1:49536"), { code: "ECONNREFUSED" })
            })
          })
        }
        const body = action === "GET"
          ? new TextEncoder().encode((options.description ?? ((text) => text))(fixtureText("descriptions/miniupnpd-2.3.1-igd2.xml")))
          : action === "GetFirewallStatus" && options.firewallStatus !== undefined
          ? new TextEncoder().encode(options.firewallStatus)
          : action === "GetStatusInfo"
          ? fixtureBytes("soap/miniupnpd-2.3.1/GetStatusInfo.xml")
          : fixtureBytes(`soap/miniupnpd-2.3.1-ipv6/${action}.xml`)
        return HttpClientResponse.fromWeb(request, new Response(body, { status: 200 }))
      })
    )
    const http = Layer.succeed(HttpClient.HttpClient, client)
    const firewall = (settings: FirewallOptions) =>
      // UPnP only: PCP would send real datagrams (its route is tested over loopback in pcp/).
      Firewall.layer({ protocol: "upnp-igd", sourceAddress: () => Effect.succeed("2001:db8:2::10"), ...settings }).pipe(
        // No retries: a refused connection is answered at once (the test clock never sleeps).
        Layer.provide(Layer.mergeAll(SoapTransport.layer({ retry: { times: 0, base: "1 millis", cap: "1 millis" } }), Description.layer())),
        Layer.provide(http)
      )
    return { sent, firewall }
  })

const viewWith = (settings: FirewallOptions, routerOptions: Parameters<typeof router>[0] = {}) =>
  Effect.gen(function*() {
    const fake = yield* router(routerOptions)
    const firewall = yield* Effect.provide(Effect.service(Firewall), fake.firewall(settings))
    return { firewall, fake }
  })

describe("Firewall", () => {
  it.effect("found in the IGD:2 description read over IPv4: called on the router's IPv6 address; boot time from the uptime", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(100_000)
      const { firewall, fake } = yield* viewWith({ descriptionUrl: LOCATION, routerIpv6: "2001:DB8:2:0::1" })
      const view = yield* firewall.view
      assert.deepStrictEqual(view, {
        nodeAddress: "2001:db8:2::10",
        routes: [{ router: "http://[2001:db8:2::1]:49536/ctl/IP6FCtl", protocol: "upnp-igd", bootedAt: 100_000 - 15_000, opensLowPorts: false }]
      })
      // Eight passes of one burst, at once and within the second: the same answer, not asked again.
      const shared = yield* Effect.all(Array.from({ length: 8 }, () => firewall.view), { concurrency: "unbounded" })
      for (const again of shared) assert.deepStrictEqual(again, view)
      yield* TestClock.adjust("999 millis")
      yield* firewall.view
      // A second on, the uptime is read afresh: the boot time is the proof a pass acts on.
      yield* TestClock.adjust("1 millis")
      yield* firewall.view
      // The description and the firewall's status once; the uptime once per second of looks.
      assert.deepStrictEqual(yield* Ref.get(fake.sent), [
        `GET ${LOCATION}`,
        "GetFirewallStatus http://[2001:db8:2::1]:49536/ctl/IP6FCtl",
        "GetStatusInfo http://192.168.77.1:49536/ctl/IPConn",
        "GetStatusInfo http://192.168.77.1:49536/ctl/IPConn"
      ])
    }))

  it.effect("no URL given: the description found over IPv6 is used, and the uptime read on the router's IPv6 address", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(100_000)
      const location6 = "http://[2001:db8:2::1]:49536/rootDesc.xml"
      const { firewall, fake } = yield* viewWith({ discoverDescription: Effect.succeed(location6) })
      const view = yield* firewall.view
      assert.deepStrictEqual(view.routes, [
        { router: "http://[2001:db8:2::1]:49536/ctl/IP6FCtl", protocol: "upnp-igd", bootedAt: 100_000 - 15_000, opensLowPorts: false }
      ])
      assert.deepStrictEqual(yield* Ref.get(fake.sent), [
        `GET ${location6}`,
        "GetFirewallStatus http://[2001:db8:2::1]:49536/ctl/IP6FCtl",
        "GetStatusInfo http://[2001:db8:2::1]:49536/ctl/IPConn"
      ])
    }))

  it.effect("a search that found nothing: unavailable, and not searched again before the quiet time", () =>
    Effect.gen(function*() {
      let searches = 0
      const discoverDescription = Effect.sync(() => {
        searches += 1
        return undefined
      })
      const { firewall } = yield* viewWith({ discoverDescription, rediscoverAfter: 60_000 })
      for (const _ of [1, 2]) {
        const result = yield* Effect.result(firewall.view)
        assert.isTrue(Result.isFailure(result) && result.failure._tag === "FirewallUnavailable")
      }
      assert.strictEqual(searches, 1)
      yield* TestClock.adjust("60 seconds")
      yield* Effect.result(firewall.view)
      assert.strictEqual(searches, 2)
    }))

  it.effect("add remembers when, for renewal at half the lease; the static URL gives no boot time", () =>
    Effect.gen(function*() {
      yield* TestClock.setTime(5_000)
      const { firewall } = yield* viewWith({ firewallUrl: "http://[2001:db8:2::1]:49536/ctl/IP6FCtl" })
      const router = "http://[2001:db8:2::1]:49536/ctl/IP6FCtl"
      assert.strictEqual((yield* firewall.view).routes[0]?.bootedAt, undefined)
      const handle = yield* firewall.add(router, { internalClient: "2001:db8:2::10", port: 8080, protocol: "TCP", leaseSeconds: 600 })
      assert.deepStrictEqual(handle, { uniqueId: 1 })
      const held = { protocol: "TCP" as const, port: 8080, internalClient: "2001:db8:2::10", router, uniqueId: 1 }
      assert.strictEqual(yield* firewall.renewedAt(held), 5_000)
      assert.strictEqual(yield* firewall.renewedAt({ ...held, port: 8081 }), undefined)
    }))

  const unavailable = (settings: FirewallOptions, routerOptions: Parameters<typeof router>[0], expected: RegExp) =>
    Effect.gen(function*() {
      const { firewall } = yield* viewWith(settings, routerOptions)
      const result = yield* Effect.result(firewall.view)
      assert.isTrue(Result.isFailure(result))
      const error = (result as Result.Failure<unknown, { _tag: string; message: string }>).failure
      assert.strictEqual(error._tag, "FirewallUnavailable")
      assert.match(error.message, expected)
    })

  it.effect("a description without the firewall service: unavailable, naming it", () =>
    unavailable(
      { descriptionUrl: LOCATION, routerIpv6: "2001:db8:2::1" },
      { description: (text) => text.replace(/<service><serviceType>urn:schemas-upnp-org:service:WANIPv6FirewallControl:1<\/serviceType>.*?<\/service>/, "") },
      /lists no urn:schemas-upnp-org:service:WANIPv6FirewallControl:1/
    ))

  it.effect("a description read over IPv4 without the router's IPv6 address: unavailable, naming what to give", () =>
    unavailable({ descriptionUrl: LOCATION }, {}, /give the router's IPv6 address/))

  it.effect("inbound pinholes not allowed: unavailable", () =>
    unavailable({ firewallUrl: "http://[2001:db8:2::1]:49536/ctl/IP6FCtl" }, { firewallStatus: FIREWALL_STATUS_CLOSED }, /does not allow inbound pinholes/))

  it.effect("a described firewall that does not answer over IPv6 (IPv6 off): unavailable, not an error to retry", () =>
    unavailable({ descriptionUrl: LOCATION, routerIpv6: "2001:db8:2::1" }, { refuseIpv6: true }, /does not answer over IPv6.*is IPv6 off/))

  it.effect("nothing configured: unavailable, naming the flags", () => unavailable({}, {}, /--firewall-url/))

  it.effect("a link-local node address: unavailable unless allowed", () =>
    unavailable({
      firewallUrl: "http://[2001:db8:2::1]:49536/ctl/IP6FCtl",
      sourceAddress: (ip) => Effect.fromResult(acceptIpv6Source(ip, "fe80::10"))
    }, {}, /link-local/))
})
