import { NodeHttpClient } from "@effect/platform-node"
import { assert, describe, it } from "@effect/vitest"
import { Clock, Deferred, Effect, Fiber, Layer, Ref } from "effect"
import { HttpClient, HttpClientError, HttpClientResponse } from "effect/http"
import { TestClock } from "effect/testing"
import { buildEnvelope, readReply, SoapTransport, type SoapTransportOptions } from "../../../src/gateway/upnp/SoapTransport.ts"
import * as FakeIgd from "../../support/FakeIgd.ts"
import { fixtureBytes } from "./fixtures.ts"

const transport = (options?: Partial<SoapTransportOptions>) =>
  SoapTransport.layer({ timeout: "2 seconds", retry: { times: 2, base: "10 millis", cap: "50 millis" }, ...options }).pipe(
    Layer.provide(NodeHttpClient.layerNodeHttp)
  )

const callOn = Effect.fnUntraced(function*(
  fake: FakeIgd.FakeIgd,
  action: string,
  args: ReadonlyArray<readonly [string, string]> = [],
  idempotent = true
) {
  const soap = yield* SoapTransport
  return yield* soap.call({ controlUrl: fake.controlUrl, serviceType: fake.serviceType, action, args, idempotent })
})

const ADD_ARGS = (description: string): ReadonlyArray<readonly [string, string]> => [
  ["NewRemoteHost", ""],
  ["NewExternalPort", "8080"],
  ["NewProtocol", "TCP"],
  ["NewInternalPort", "30000"],
  ["NewInternalClient", "127.0.0.1"],
  ["NewEnabled", "1"],
  ["NewPortMappingDescription", description],
  ["NewLeaseDuration", "3600"]
]

describe("buildEnvelope", () => {
  it("writes the field guide's body: one line, s:/u: prefixes, empty NewRemoteHost, only & < > escaped", () => {
    const body = buildEnvelope({
      serviceType: "urn:schemas-upnp-org:service:WANIPConnection:1",
      action: "AddPortMapping",
      args: ADD_ARGS(`a&b <c> "d" 'e'`)
    })
    assert.strictEqual(
      body,
      `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>` +
        `<u:AddPortMapping xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1">` +
        `<NewRemoteHost></NewRemoteHost><NewExternalPort>8080</NewExternalPort><NewProtocol>TCP</NewProtocol>` +
        `<NewInternalPort>30000</NewInternalPort><NewInternalClient>127.0.0.1</NewInternalClient><NewEnabled>1</NewEnabled>` +
        `<NewPortMappingDescription>a&amp;b &lt;c&gt; "d" 'e'</NewPortMappingDescription><NewLeaseDuration>3600</NewLeaseDuration>` +
        `</u:AddPortMapping></s:Body></s:Envelope>`
    )
  })
})

describe("readReply", () => {
  it.effect.each([
    ["miniupnpd-2.3.1/GetExternalIPAddress.xml", "GetExternalIPAddress", { NewExternalIPAddress: "122.112.219.229" }],
    ["miniupnpd-2.3.1/AddPortMapping.xml", "AddPortMapping", {}],
    ["miniupnpd-2.3.1/GetStatusInfo.xml", "GetStatusInfo", {
      NewConnectionStatus: "Connected",
      NewLastConnectionError: "ERROR_NONE",
      NewUptime: "15"
    }],
    ["other/soap-env-GetExternalIPAddress.xml", "GetExternalIPAddress", { NewExternalIPAddress: "203.0.113.77" }]
  ] as const)("%s is a response", ([fixture, action, values]) =>
    Effect.gen(function*() {
      const reply = yield* readReply(fixtureBytes(`soap/${fixture}`), action)
      assert.deepStrictEqual(reply, { _tag: "Response", values })
    }))

  it.effect.each([
    ["miniupnpd-2.3.1/GetSpecificPortMappingEntry-714.xml", 714, "NoSuchEntryInArray"],
    ["miniupnpd-2.3.1/GetGenericPortMappingEntry-713.xml", 713, "SpecifiedArrayIndexInvalid"],
    ["miniupnpd-2.3.1/AddPortMapping-718.xml", 718, "ConflictInMappingEntry"],
    ["miniupnpd-2.3.1/secure-mode-DeletePortMapping-606.xml", 606, "Action not authorized"],
    ["miniupnpd-2.3.1/private-wan-AddPortMapping-501.xml", 501, "ActionFailed"],
    ["miniupnpd-2.3.1/invalid-action-401.xml", 401, "Invalid Action"],
    ["other/soap-env-fault-718.xml", 718, "ConflictInMappingEntry"]
  ] as const)("%s is fault %d", ([fixture, code, description]) =>
    Effect.gen(function*() {
      const reply = yield* readReply(fixtureBytes(`soap/${fixture}`), "AddPortMapping")
      assert.deepStrictEqual(reply, { _tag: "Fault", code, description })
    }))

  it.effect("a SOAP fault without a UPnP error code, and an HTML page, are unusable", () =>
    Effect.gen(function*() {
      const fault = yield* readReply(fixtureBytes("soap/other/fault-without-upnperror.xml"), "AddPortMapping")
      assert.deepStrictEqual(fault, {
        _tag: "Unusable",
        field: "errorCode",
        reason: "SOAP fault without a UPnP error code (Internal error)"
      })
      const html = yield* readReply(fixtureBytes("soap/other/html-error-page.xml"), "AddPortMapping")
      assert.strictEqual(html._tag, "Unusable")
    }))

  it.effect("a response for another action is unusable and names the element", () =>
    Effect.gen(function*() {
      const reply = yield* readReply(fixtureBytes("soap/miniupnpd-2.3.1/GetExternalIPAddress.xml"), "GetStatusInfo")
      assert.deepStrictEqual(reply._tag === "Unusable" ? reply.field : undefined, "GetStatusInfoResponse")
    }))
})

describe("SoapTransport against the fake IGD", () => {
  it.live("sends exactly the request format picky routers accept", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make()
      // A multi-byte description: Content-Length must count bytes, not characters.
      yield* callOn(fake, "AddPortMapping", ADD_ARGS("café ☕ & <tea>"))
      yield* callOn(fake, "GetExternalIPAddress")
      assert.deepStrictEqual(fake.violations, [])
      const [add] = fake.requests
      assert.strictEqual(add!.method, "POST")
      assert.strictEqual(add!.path, "/ctl/IPConn")
      const headers = Object.fromEntries(add!.rawHeaders.map(([name, value]) => [name.toLowerCase(), value]))
      assert.strictEqual(headers["soapaction"], `"urn:schemas-upnp-org:service:WANIPConnection:2#AddPortMapping"`)
      assert.strictEqual(headers["content-type"], `text/xml; charset="utf-8"`)
      assert.strictEqual(headers["content-length"], String(Buffer.byteLength(add!.body, "utf8")))
      assert.notStrictEqual(headers["content-length"], String(add!.body.length))
      assert.strictEqual(headers["connection"], "close")
      assert.match(headers["host"] ?? "", /^127\.0\.0\.1:\d+$/)
      // No trace context leaves for a LAN device, tracer or not.
      assert.deepStrictEqual(Object.keys(headers).filter((name) => name === "traceparent" || name === "b3"), [])
      assert.deepStrictEqual(fake.mappings.map((mapping) => mapping.description), ["café ☕ & <tea>"])
    }).pipe(Effect.scoped, Effect.provide(transport())))

  it.live("a UPnP fault is a typed UpnpError and is never retried", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make()
      fake.inject({ kind: "upnp", code: 718 }, { times: 5 })
      const error = yield* Effect.flip(callOn(fake, "AddPortMapping", ADD_ARGS("x")))
      assert.strictEqual(error._tag, "UpnpError")
      if (error._tag !== "UpnpError") return
      assert.strictEqual(error.code, 718)
      assert.strictEqual(error.action, "AddPortMapping")
      assert.strictEqual(error.router, fake.controlUrl)
      assert.strictEqual(error.description, "ConflictInMappingEntry")
      assert.strictEqual(fake.requests.length, 1)
    }).pipe(Effect.scoped, Effect.provide(transport())))

  it.live.each<readonly [string, FakeIgd.Fault]>([
    ["a bare HTTP 500", { kind: "bare500" }],
    ["a reset connection", { kind: "reset" }]
  ])("%s is transient: retried, then answered", ([, fault]) =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make()
      fake.inject(fault, { times: 2 })
      const values = yield* callOn(fake, "GetExternalIPAddress")
      assert.deepStrictEqual(values, { NewExternalIPAddress: "122.112.219.229" })
      assert.strictEqual(fake.requests.length, 3)
    }).pipe(Effect.scoped, Effect.provide(transport())))

  it.live("retries stop after the configured number and report the last failure", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make()
      fake.inject({ kind: "bare500" }, { times: 10 })
      const error = yield* Effect.flip(callOn(fake, "GetExternalIPAddress"))
      assert.strictEqual(error._tag, "GatewayUnreachable")
      assert.match(error.message, /HTTP 500 without a UPnP fault/)
      assert.strictEqual(fake.requests.length, 3)
    }).pipe(Effect.scoped, Effect.provide(transport())))

  it.live("a stalled router times out per call", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make()
      fake.inject({ kind: "stall" }, { times: 10 })
      const error = yield* Effect.flip(callOn(fake, "GetStatusInfo"))
      assert.strictEqual(error._tag, "GatewayUnreachable")
      assert.match(error.message, /no answer within 150 ms/)
      assert.strictEqual(fake.requests.length, 2)
    }).pipe(Effect.scoped, Effect.provide(transport({ timeout: "150 millis", retry: { times: 1, base: "1 millis", cap: "1 millis" } }))))

  it.live("a reply over the size cap is refused", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make()
      fake.inject({ kind: "huge", bytes: 200_000 })
      const error = yield* Effect.flip(callOn(fake, "GetExternalIPAddress"))
      assert.strictEqual(error._tag, "GatewayProtocolError")
      assert.match(error.message, /larger than 65536 bytes/)
    }).pipe(Effect.scoped, Effect.provide(transport())))

  it.live("a chunked reply over the cap is refused too (no Content-Length to check up front)", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make({ chunked: true })
      fake.inject({ kind: "huge", bytes: 20_000 })
      const error = yield* Effect.flip(callOn(fake, "GetExternalIPAddress"))
      assert.strictEqual(error._tag, "GatewayProtocolError")
      assert.match(error.message, /larger than 4096 bytes/)
    }).pipe(Effect.scoped, Effect.provide(transport({ maxResponseBytes: 4096 }))))

  it.live("an entity bomb is refused, not expanded, and not retried", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make()
      fake.inject({ kind: "entityBomb" }, { times: 5 })
      const error = yield* Effect.flip(callOn(fake, "GetExternalIPAddress"))
      assert.strictEqual(error._tag, "GatewayProtocolError")
      assert.match(error.message, /DOCTYPE/)
      assert.strictEqual(fake.requests.length, 1)
    }).pipe(Effect.scoped, Effect.provide(transport())))

  it.live("chunked replies are read whole", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make({ chunked: true })
      const values = yield* callOn(fake, "GetStatusInfo")
      assert.deepStrictEqual(values, {
        NewConnectionStatus: "Connected",
        NewLastConnectionError: "ERROR_NONE",
        NewUptime: "4242"
      })
    }).pipe(Effect.scoped, Effect.provide(transport())))

  it.live("a reset is not retried for a call that must not be repeated", () =>
    Effect.gen(function*() {
      const fake = yield* FakeIgd.make()
      fake.inject({ kind: "reset" }, { times: 5 })
      const error = yield* Effect.flip(callOn(fake, "AddAnyPortMapping", ADD_ARGS("x"), false))
      assert.strictEqual(error._tag, "GatewayUnreachable")
      assert.strictEqual(fake.requests.length, 1)
    }).pipe(Effect.scoped, Effect.provide(transport())))

  it.live("a closed port is unreachable, with the system's reason", () =>
    Effect.gen(function*() {
      const soap = yield* SoapTransport
      const error = yield* Effect.flip(soap.call({
        controlUrl: "http://127.0.0.1:9/ctl/IPConn",
        serviceType: "urn:schemas-upnp-org:service:WANIPConnection:1",
        action: "GetExternalIPAddress",
        args: []
      }))
      assert.strictEqual(error._tag, "GatewayUnreachable")
      assert.match(error.message, /ECONNREFUSED/)
    }).pipe(Effect.provide(transport())))
})

/** An HttpClient that answers from a script, counting attempts and requests in flight. */
const scriptedClient = (answer: (attempt: number) => Effect.Effect<Response | "refused">) =>
  Effect.gen(function*() {
    const attempts = yield* Ref.make(0)
    const inFlight = yield* Ref.make(0)
    const maxInFlight = yield* Ref.make(0)
    const client = HttpClient.make((request) =>
      Effect.gen(function*() {
        const attempt = yield* Ref.updateAndGet(attempts, (n) => n + 1)
        const now = yield* Ref.updateAndGet(inFlight, (n) => n + 1)
        yield* Ref.update(maxInFlight, (max) => Math.max(max, now))
        const result = yield* answer(attempt).pipe(Effect.ensuring(Ref.update(inFlight, (n) => n - 1)))
        if (result === "refused") {
          return yield* new HttpClientError.HttpClientError({
            reason: new HttpClientError.TransportError({
              request,
              cause: Object.assign(new Error("connect ECONNREFUSED 192.168.77.1:49536"), { code: "ECONNREFUSED" })
            })
          })
        }
        return HttpClientResponse.fromWeb(request, result)
      })
    )
    return { client, attempts, maxInFlight }
  })

const ok = () =>
  new Response(fixtureBytes("soap/miniupnpd-2.3.1/GetExternalIPAddress.xml"), { status: 200 })

const call = {
  controlUrl: "http://192.168.77.1:49536/ctl/IPConn",
  serviceType: "urn:schemas-upnp-org:service:WANIPConnection:2",
  action: "GetExternalIPAddress",
  args: []
} as const

describe("SoapTransport retries and limits (TestClock)", () => {
  it.effect("backs off exponentially, with jitter, between attempts on a refused connection", () =>
    Effect.gen(function*() {
      const { client, attempts } = yield* scriptedClient((attempt) => Effect.succeed(attempt <= 3 ? "refused" : ok()))
      const soap = yield* SoapTransport.make({ retry: { times: 5, base: "1 second", cap: "10 seconds" } }).pipe(
        Effect.provideService(HttpClient.HttpClient, client)
      )
      const fiber = yield* Effect.forkChild(soap.call(call))
      // Delays of 1 s, 2 s and 4 s, each jittered to 80-120 %: the windows in which each retry
      // can happen do not overlap, so these checks hold whatever the jitter draws.
      const at = (millis: number) => Effect.gen(function*() {
        const now = yield* Clock.currentTimeMillis
        yield* TestClock.adjust(millis - now)
        return yield* Ref.get(attempts)
      })
      assert.strictEqual(yield* at(1), 1)
      assert.strictEqual(yield* at(799), 1)
      assert.strictEqual(yield* at(1201), 2)
      assert.strictEqual(yield* at(2399), 2)
      assert.strictEqual(yield* at(3601), 3)
      assert.strictEqual(yield* at(5599), 3)
      assert.strictEqual(yield* at(8401), 4)
      const values = yield* Fiber.join(fiber)
      assert.deepStrictEqual(values, { NewExternalIPAddress: "122.112.219.229" })
    }))

  it.effect("a UPnP fault ends the call at once, whatever the retry budget", () =>
    Effect.gen(function*() {
      const { client, attempts } = yield* scriptedClient(() =>
        Effect.succeed(new Response(fixtureBytes("soap/miniupnpd-2.3.1/AddPortMapping-718.xml"), { status: 500 }))
      )
      const soap = yield* SoapTransport.make({ retry: { times: 5, base: "1 second", cap: "10 seconds" } }).pipe(
        Effect.provideService(HttpClient.HttpClient, client)
      )
      const fiber = yield* Effect.forkChild(Effect.flip(soap.call({ ...call, action: "AddPortMapping" })))
      yield* TestClock.adjust("1 minute")
      const error = yield* Fiber.join(fiber)
      assert.strictEqual(error._tag, "UpnpError")
      assert.strictEqual(yield* Ref.get(attempts), 1)
    }))

  it.effect("at most `concurrency` calls are in flight per router", () =>
    Effect.gen(function*() {
      const release = yield* Deferred.make<void>()
      const { client, attempts, maxInFlight } = yield* scriptedClient(() =>
        Effect.as(Deferred.await(release), ok())
      )
      const soap = yield* SoapTransport.make({ concurrency: 2 }).pipe(Effect.provideService(HttpClient.HttpClient, client))
      const fiber = yield* Effect.forkChild(Effect.all(Array.from({ length: 6 }, () => soap.call(call)), { concurrency: "unbounded" }))
      yield* TestClock.adjust("1 millis")
      assert.strictEqual(yield* Ref.get(attempts), 2)
      yield* Deferred.succeed(release, undefined)
      const results = yield* Fiber.join(fiber)
      assert.strictEqual(results.length, 6)
      assert.strictEqual(yield* Ref.get(maxInFlight), 2)
    }))
})
