/**
 * The WANIPv6FirewallControl:1 client against miniupnpd 2.3.1's own answers, captured in the
 * lab with curl from the node namespace (test/fixtures/upnp/soap/miniupnpd-2.3.1-ipv6/): every
 * reply decoded, every fault a PinholeError whose meaning fits the request, and the requests
 * in the form miniupnpd compares (canonical InternalClient, protocol numbers, over IPv6).
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Ref, Result } from "effect"
import { HttpClient, HttpClientError, HttpClientResponse } from "effect/http"
import { parseDescription } from "../../../src/gateway/upnp/Description.ts"
import { PinholeError } from "../../../src/gateway/upnp/PinholeError.ts"
import * as Pinholes from "../../../src/gateway/upnp/Pinholes.ts"
import { SoapTransport } from "../../../src/gateway/upnp/SoapTransport.ts"
import { fixtureBytes, fixtureText } from "./fixtures.ts"

const CONTROL_URL = "http://[2001:db8:2::1]:49536/ctl/IP6FCtl"
const endpoint = Result.getOrThrow(Pinholes.firewallEndpoint(CONTROL_URL))
const NODE = "2001:db8:2::10"

interface Sent {
  readonly url: string
  readonly soapAction: string
  readonly body: string
}

/**
 * An HttpClient answering every request with one captured reply (HTTP 200 for a response,
 * 500 for a fault, as miniupnpd sends them), recording what was sent. `"reset"` drops the
 * connection instead, as a router that dies mid-request does.
 */
const capturedRouter = (reply: string | "reset") =>
  Effect.gen(function*() {
    const sent = yield* Ref.make<ReadonlyArray<Sent>>([])
    const client = HttpClient.make((request) =>
      Effect.gen(function*() {
        const body = request.body._tag === "Uint8Array" ? new TextDecoder().decode(request.body.body) : ""
        yield* Ref.update(sent, (all) => [...all, { url: request.url, soapAction: request.headers["soapaction"] ?? "", body }])
        if (reply === "reset") {
          return yield* new HttpClientError.HttpClientError({
            reason: new HttpClientError.TransportError({
              request,
              cause: Object.assign(new Error("socket hang up"), { code: "ECONNRESET" })
            })
          })
        }
        const bytes = fixtureBytes(`soap/miniupnpd-2.3.1-ipv6/${reply}`)
        const isFault = new TextDecoder().decode(bytes).includes("<s:Fault>")
        return HttpClientResponse.fromWeb(request, new Response(bytes, { status: isFault ? 500 : 200 }))
      })
    )
    const layer = SoapTransport.layer({ retry: { times: 2, base: "1 millis", cap: "2 millis" } }).pipe(
      Layer.provide(Layer.succeed(HttpClient.HttpClient, client))
    )
    return { sent, layer }
  })

/** Runs `effect` against a router that answers with `reply`; returns its exit and what was sent. */
const against = <A, E>(reply: string | "reset", effect: Effect.Effect<A, E, SoapTransport>) =>
  Effect.gen(function*() {
    const router = yield* capturedRouter(reply)
    const result = yield* Effect.result(effect.pipe(Effect.provide(router.layer)))
    return { result, sent: yield* Ref.get(router.sent) }
  })

const failureOf = <A, E>(result: Result.Result<A, E>): E => {
  assert.isTrue(Result.isFailure(result), "expected a failure")
  return (result as Result.Failure<A, E>).failure
}

const successOf = <A, E>(result: Result.Result<A, E>): A => {
  if (Result.isFailure(result)) assert.fail(`expected a success, got ${String(result.failure)}`)
  return (result as Result.Success<A, E>).success
}

const addRequest = (overrides: Partial<Pinholes.PinholeRequest> = {}): Pinholes.PinholeRequest => ({
  internalClient: NODE,
  internalPort: 8080,
  protocol: "TCP",
  leaseSeconds: 3600,
  ...overrides
})

describe("pinhole replies captured from miniupnpd 2.3.1", () => {
  it.effect("GetFirewallStatus: firewall on, pinholes allowed", () =>
    Effect.gen(function*() {
      const { result } = yield* against("GetFirewallStatus.xml", Pinholes.getFirewallStatus(endpoint))
      assert.deepStrictEqual(successOf(result), { firewallEnabled: true, inboundPinholeAllowed: true })
    }))

  it.effect("AddPinhole: the UniqueID; sent once, over IPv6, as miniupnpd compares it", () =>
    Effect.gen(function*() {
      const { result, sent } = yield* against(
        "AddPinhole.xml",
        Pinholes.addPinhole(endpoint, addRequest({ internalClient: "2001:0DB8:0002:0000:0000:0000:0000:0010" }))
      )
      assert.strictEqual(successOf(result), 1)
      assert.strictEqual(sent.length, 1)
      assert.strictEqual(sent[0]!.url, CONTROL_URL)
      assert.strictEqual(sent[0]!.soapAction, `"urn:schemas-upnp-org:service:WANIPv6FirewallControl:1#AddPinhole"`)
      assert.include(
        sent[0]!.body,
        "<RemoteHost></RemoteHost><RemotePort>0</RemotePort><InternalClient>2001:db8:2::10</InternalClient>" +
          "<InternalPort>8080</InternalPort><Protocol>6</Protocol><LeaseTime>3600</LeaseTime>"
      )
    }))

  it.effect("AddPinhole for UDP sends protocol 17", () =>
    Effect.gen(function*() {
      const { sent } = yield* against("AddPinhole.xml", Pinholes.addPinhole(endpoint, addRequest({ protocol: "UDP" })))
      assert.include(sent[0]!.body, "<Protocol>17</Protocol>")
    }))

  it.effect("UpdatePinhole: success is an empty response", () =>
    Effect.gen(function*() {
      const { result, sent } = yield* against("UpdatePinhole.xml", Pinholes.updatePinhole(endpoint, 1, 600))
      successOf(result)
      assert.include(sent[0]!.body, "<UniqueID>1</UniqueID><NewLeaseTime>600</NewLeaseTime>")
    }))

  it.effect("GetPinholePackets: the count (0 on this build, even after traffic)", () =>
    Effect.gen(function*() {
      const { result } = yield* against("GetPinholePackets.xml", Pinholes.getPinholePackets(endpoint, 1))
      assert.strictEqual(successOf(result), 0)
    }))
})

describe("pinhole faults captured from miniupnpd 2.3.1", () => {
  const cases: ReadonlyArray<
    readonly [string, string, (effect: typeof Pinholes) => Effect.Effect<unknown, unknown, SoapTransport>, number, RegExp, boolean]
  > = [
    ["AddPinhole-606-low-port.xml", "AddPinhole to port 80", (p) => p.addPinhole(endpoint, addRequest({ internalPort: 80 })), 606, /below 1024 over UPnP \(port 80\); use PCP/, false],
    ["AddPinhole-606-other-client.xml", "AddPinhole for another address", (p) => p.addPinhole(endpoint, addRequest({ internalClient: "2001:db8:2::50" })), 606, /InternalClient 2001:db8:2::50 must be this node's source address/, false],
    ["AddPinhole-over-ipv4.xml", "AddPinhole sent over IPv4", (p) => p.addPinhole(endpoint, addRequest({ internalPort: 8082 })), 606, /must travel over IPv6/, false],
    ["AddPinhole-708-empty-client.xml", "AddPinhole, wildcard client", (p) => p.addPinhole(endpoint, addRequest()), 708, /wildcard client/, false],
    ["AddPinhole-402-lease-0.xml", "AddPinhole refused argument", (p) => p.addPinhole(endpoint, addRequest()), 402, /leases must be 1-86400 seconds/, false],
    ["UpdatePinhole-402-unknown.xml", "UpdatePinhole of an unknown ID", (p) => p.updatePinhole(endpoint, 99, 600), 402, /no pinhole 99 .*add it again/, true],
    ["UpdatePinhole-606-other-client.xml", "UpdatePinhole of another address's pinhole", (p) => p.updatePinhole(endpoint, 1, 600), 606, /pinhole 1 was opened for another address/, false],
    ["CheckPinholeWorking-709.xml", "CheckPinholeWorking before (and after) traffic", (p) => p.checkPinholeWorking(endpoint, 1), 709, /no traffic has been seen through pinhole 1/, false],
    ["CheckPinholeWorking-402-unknown.xml", "CheckPinholeWorking of an unknown ID", (p) => p.checkPinholeWorking(endpoint, 99), 402, /no pinhole 99/, true],
    ["GetPinholePackets-402-unknown.xml", "GetPinholePackets of an unknown ID", (p) => p.getPinholePackets(endpoint, 99), 402, /no pinhole 99/, true]
  ]
  for (const [fixture, title, run, code, meaning, gone] of cases) {
    it.effect(`${title}: ${code}`, () =>
      Effect.gen(function*() {
        const { result } = yield* against(fixture, run(Pinholes))
        const error = failureOf(result)
        assert.instanceOf(error, PinholeError)
        const pinholeError = error as PinholeError
        assert.strictEqual(pinholeError.code, code)
        assert.strictEqual(pinholeError.router, CONTROL_URL)
        assert.match(pinholeError.meaning, meaning)
        assert.match(pinholeError.message, new RegExp(`UPnP error ${code} `))
        assert.strictEqual(pinholeError.pinholeGone, gone)
        assert.isFalse(pinholeError.retryable)
      }))
  }

  it.effect("DeletePinhole of an unknown ID: 402, the pinhole is gone", () =>
    Effect.gen(function*() {
      const { result } = yield* against("UpdatePinhole-402-unknown.xml", Pinholes.deletePinhole(endpoint, 99))
      const error = failureOf(result) as PinholeError
      assert.strictEqual(error.action, "DeletePinhole")
      assert.isTrue(error.pinholeGone)
    }))
})

describe("pinhole requests the client refuses to send", () => {
  const refusals: ReadonlyArray<readonly [string, Pinholes.PinholeRequest, string]> = [
    ["a lease of 0 (not 'forever' here)", addRequest({ leaseSeconds: 0 }), "LeaseTime"],
    ["a lease above a day", addRequest({ leaseSeconds: 86_401 }), "LeaseTime"],
    ["an IPv4 client", addRequest({ internalClient: "192.168.77.10" }), "InternalClient"],
    ["a scoped client", addRequest({ internalClient: "fe80::1%eth0" }), "InternalClient"],
    ["port 0", addRequest({ internalPort: 0 }), "InternalPort"],
    ["a bad remote host", addRequest({ remoteHost: "example.com" }), "RemoteHost"]
  ]
  for (const [title, request, field] of refusals) {
    it.effect(`AddPinhole with ${title}`, () =>
      Effect.gen(function*() {
        const { result, sent } = yield* against("AddPinhole.xml", Pinholes.addPinhole(endpoint, request))
        const error = failureOf(result) as { _tag: string; field: string }
        assert.strictEqual(error._tag, "InvalidMapping")
        assert.strictEqual(error.field, field)
        assert.strictEqual(sent.length, 0)
      }))
  }

  it.effect("UpdatePinhole with a lease of 0 or an ID out of range", () =>
    Effect.gen(function*() {
      for (const [id, lease] of [[1, 0], [70_000, 600], [-1, 600]] as const) {
        const { result, sent } = yield* against("UpdatePinhole.xml", Pinholes.updatePinhole(endpoint, id, lease))
        assert.strictEqual((failureOf(result) as { _tag: string })._tag, "InvalidMapping")
        assert.strictEqual(sent.length, 0)
      }
    }))
})

describe("repeats", () => {
  it.live("AddPinhole is never re-sent after the connection drops (a repeat spoils the expiry)", () =>
    Effect.gen(function*() {
      const { result, sent } = yield* against("reset", Pinholes.addPinhole(endpoint, addRequest()))
      assert.strictEqual((failureOf(result) as { _tag: string })._tag, "GatewayUnreachable")
      assert.strictEqual(sent.length, 1)
    }))

  it.live("UpdatePinhole is re-sent after the connection drops (renewing twice is harmless)", () =>
    Effect.gen(function*() {
      const { sent } = yield* against("reset", Pinholes.updatePinhole(endpoint, 1, 600))
      assert.strictEqual(sent.length, 3)
    }))
})

describe("the firewall endpoint", () => {
  const igd2 = fixtureText("descriptions/miniupnpd-2.3.1-igd2.xml")
  const describe6 = (text: string, location: string) =>
    parseDescription(new TextEncoder().encode(text), location, { isAllowedHost: () => true })

  it.effect("from the IGD:2 description read over IPv6: its control URL as it is", () =>
    Effect.gen(function*() {
      const root = yield* describe6(igd2, "http://[2001:db8:2::1]:49536/rootDesc.xml")
      const found = Pinholes.firewallEndpointFrom(root)
      assert.deepStrictEqual(successOf(found), {
        controlUrl: CONTROL_URL,
        serviceType: Pinholes.FIREWALL_SERVICE_TYPE,
        routerIp: "2001:db8:2::1",
        routerPort: 49536
      })
    }))

  it.effect("from the description read over IPv4: on the router's IPv6 address, written canonically", () =>
    Effect.gen(function*() {
      const root = yield* describe6(igd2, "http://192.168.77.1:49536/rootDesc.xml")
      const refused = failureOf(Pinholes.firewallEndpointFrom(root))
      assert.match(refused.message, /read over IPv4/)
      const found = successOf(Pinholes.firewallEndpointFrom(root, { routerIpv6: "2001:DB8:2:0:0:0:0:1" }))
      assert.strictEqual(found.controlUrl, CONTROL_URL)
    }))

  it.effect("a description that sends the control URL to another host is refused", () =>
    Effect.gen(function*() {
      const hostile = igd2.replace("<controlURL>/ctl/IP6FCtl</controlURL>", "<controlURL>http://[2001:db8:99::1]:80/x</controlURL>")
      assert.notStrictEqual(hostile, igd2)
      const root = yield* describe6(hostile, "http://[2001:db8:2::1]:49536/rootDesc.xml")
      assert.match(failureOf(Pinholes.firewallEndpointFrom(root)).message, /not on the description's host/)
    }))

  it.effect("a router without the firewall service (Huawei HG8245H): GatewayNotFound", () =>
    Effect.gen(function*() {
      const root = yield* describe6(fixtureText("descriptions/huawei-hg8245h-dslforum.xml"), "http://[2001:db8:2::1]:49536/rootDesc.xml")
      assert.strictEqual(failureOf(Pinholes.firewallEndpointFrom(root))._tag, "GatewayNotFound")
    }))

  it("a static URL must name the router by its IPv6 address", () => {
    assert.match(failureOf(Pinholes.firewallEndpoint("http://192.168.77.1:49536/ctl/IP6FCtl")).reason, /IPv4 host/)
    assert.match(failureOf(Pinholes.firewallEndpoint("http://router.lan:49536/ctl/IP6FCtl")).reason, /not an IPv6 address/)
    assert.strictEqual(successOf(Pinholes.firewallEndpoint("http://[2001:DB8:2::0:1]:5000/fw")).routerIp, "2001:db8:2::1")
  })
})
