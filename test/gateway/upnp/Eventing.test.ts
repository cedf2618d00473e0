import { connect, type Socket } from "node:net"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Exit, Fiber, Result, Stream } from "effect"
import { type EventingOptions, type WanEvent, watchWanEvents } from "../../../src/gateway/upnp/Eventing.ts"
import { nextSeq, readGrant, readPropertySet, readSeq } from "../../../src/gateway/upnp/GenaMessages.ts"
import { type FakeGenaRouter, propertySet, sendNotify, startFakeGenaRouter } from "./FakeGenaRouter.ts"

/** Waits for a condition on what the fakes saw, checking every 10 ms, for at most 5 s. */
const eventually = (description: string, condition: () => boolean) =>
  Effect.gen(function*() {
    const deadline = Date.now() + 5_000
    while (!condition()) {
      if (Date.now() > deadline) return yield* Effect.die(new Error(`never happened: ${description}`))
      yield* Effect.sleep("10 millis")
    }
  })

const withFake = <A, E>(body: (fake: FakeGenaRouter) => Effect.Effect<A, E>) =>
  Effect.acquireUseRelease(Effect.promise(startFakeGenaRouter), body, (fake) => Effect.promise(fake.close))

const encoder = new TextEncoder()

/** Runs a watch in the background, recording its events and the NOTIFYs its server refused. */
const watch = (fake: FakeGenaRouter, options?: Partial<EventingOptions>) =>
  Effect.gen(function*() {
    const events: Array<WanEvent> = []
    const refused: Array<string> = []
    const fiber = yield* watchWanEvents({
      eventUrl: fake.eventUrl,
      localAddress: "127.0.0.1",
      retryBase: "20 millis",
      requestTimeout: "500 millis",
      onRefused: (reason, status) => refused.push(`${status} ${reason}`),
      ...options
    }).pipe(Stream.runForEach((event) => Effect.sync(() => events.push(event))), Effect.forkChild)
    const tags = () => events.map((event) => event._tag)
    const subscribed = () => events.filter((event) => event._tag === "Subscribed")
    const callback = (index = -1) => {
      const sid = subscribed().at(index)?.sid ?? ""
      return { sid, url: fake.subscriptions.get(sid) ?? "" }
    }
    return { events, refused, fiber, tags, subscribed, callback }
  })

const ipChanges = (events: ReadonlyArray<WanEvent>) =>
  events.flatMap((event) => event._tag === "ExternalIPAddressChanged" ? [[event.previous ?? null, event.externalIp]] : [])

/** A watch whose subscription's initial NOTIFY (122.112.219.229) has been reported. */
const watchPastInitial = (fake: FakeGenaRouter) =>
  Effect.gen(function*() {
    const w = yield* watch(fake)
    yield* eventually("subscribed", () => w.subscribed().length === 1)
    const { sid, url } = w.callback()
    yield* Effect.promise(() => sendNotify(url, { sid, seq: "0", body: propertySet("122.112.219.229") }))
    yield* eventually("the initial address", () => ipChanges(w.events).length === 1)
    return { w, sid, url }
  })

/** Sends the router's next genuine change and checks that it, and nothing forged, was reported. */
const genuineChangeArrives = (
  w: Effect.Success<ReturnType<typeof watch>>,
  notify: { readonly sid: string; readonly url: string; readonly seq: string },
  ip: string
) =>
  Effect.gen(function*() {
    yield* Effect.promise(() => sendNotify(notify.url, { sid: notify.sid, seq: notify.seq, body: propertySet(ip) }))
    yield* eventually("the genuine change", () => ipChanges(w.events).length === 2)
    assert.deepStrictEqual(ipChanges(w.events), [[null, "122.112.219.229"], ["122.112.219.229", ip]])
    assert.deepStrictEqual(w.tags().filter((tag) => tag === "SubscriptionLost"), [])
    yield* Fiber.interrupt(w.fiber)
  })

describe("GenaMessages", () => {
  it("readGrant takes miniupnpd's SID and timeout, and never more time than asked for", () => {
    assert.deepStrictEqual(
      readGrant({ sid: "uuid:00000000-0000-0000-0000-000000009f90", timeout: "Second-60" }, 1800),
      Result.succeed({ sid: "uuid:00000000-0000-0000-0000-000000009f90", timeoutSeconds: 60 })
    )
    assert.deepStrictEqual(readGrant({ sid: "uuid:a", timeout: "Second-infinite" }, 300), Result.succeed({ sid: "uuid:a", timeoutSeconds: 300 }))
    assert.deepStrictEqual(readGrant({ sid: "uuid:a", timeout: "Second-100000" }, 300), Result.succeed({ sid: "uuid:a", timeoutSeconds: 300 }))
    assert.isTrue(Result.isFailure(readGrant({ sid: "not-a-uuid", timeout: "Second-60" }, 300)))
    assert.isTrue(Result.isFailure(readGrant({ sid: undefined, timeout: "Second-60" }, 300)))
    assert.isTrue(Result.isFailure(readGrant({ sid: "uuid:a", timeout: "Second-0" }, 300)))
  })

  it("readSeq accepts 0 to 2^32-1 in decimal only; nextSeq wraps to 1", () => {
    assert.deepStrictEqual(["0", "7", "4294967295", "4294967296", "-1", "1e3", "", undefined].map(readSeq), [
      0, 7, 4294967295, undefined, undefined, undefined, undefined, undefined
    ])
    assert.deepStrictEqual([nextSeq(0), nextSeq(41), nextSeq(4294967295)], [1, 42, 1])
  })

  it.effect("readPropertySet decodes miniupnpd's property set", () =>
    Effect.gen(function*() {
      const variables = yield* readPropertySet(encoder.encode(propertySet("122.112.219.229", "Connected", 3)))
      assert.deepStrictEqual(variables, {
        ExternalIPAddress: "122.112.219.229",
        ConnectionStatus: "Connected",
        PortMappingNumberOfEntries: 3
      })
    }))

  it.effect("readPropertySet refuses entities, DOCTYPEs, other documents and values that are not what they claim", () =>
    Effect.gen(function*() {
      const bodies = [
        `<!DOCTYPE e [<!ENTITY a "1.2.3.4">]><e:propertyset xmlns:e="urn:schemas-upnp-org:event-1-0"><e:property><ExternalIPAddress>&a;</ExternalIPAddress></e:property></e:propertyset>`,
        `<e:propertyset xmlns:e="urn:schemas-upnp-org:event-1-0"><e:property><ExternalIPAddress>&amp;lol;</ExternalIPAddress></e:property></e:propertyset>`,
        `<e:propertyset xmlns:e="x"><e:property><ExternalIPAddress>999.1.1.1</ExternalIPAddress></e:property></e:propertyset>`,
        `<e:propertyset xmlns:e="x"><e:property><PortMappingNumberOfEntries>-1</PortMappingNumberOfEntries></e:property></e:propertyset>`,
        `<s:Envelope><ExternalIPAddress>1.2.3.4</ExternalIPAddress></s:Envelope>`,
        `<e:propertyset><e:property><ExternalIPAddress>1.2.3.4</ExternalIPAddress>`
      ]
      for (const body of bodies) {
        const exit = yield* Effect.exit(readPropertySet(encoder.encode(body)))
        assert.isTrue(Exit.isFailure(exit), body)
      }
    }))
})

describe("watchWanEvents against a fake router on 127.0.0.1", () => {
  it.live("subscribes with one callback on our address, reports the initial values and each change, unsubscribes at the end", () =>
    withFake((fake) =>
      Effect.gen(function*() {
        const w = yield* watch(fake)
        yield* eventually("subscribed", () => w.subscribed().length === 1)
        const subscribe = fake.calls[0]!
        assert.strictEqual(subscribe.method, "SUBSCRIBE")
        assert.strictEqual(subscribe.headers["nt"], "upnp:event")
        assert.strictEqual(subscribe.headers["timeout"], "Second-1800")
        assert.match(String(subscribe.headers["callback"]), /^<http:\/\/127\.0\.0\.1:\d+\/gena\/[0-9a-f]{32}>$/)
        assert.isUndefined(subscribe.headers["sid"])
        const { sid, url } = w.callback()
        assert.deepStrictEqual(yield* Effect.promise(() => sendNotify(url, { sid, seq: "0", body: propertySet("122.112.219.229") })), { status: 200 })
        assert.deepStrictEqual(yield* Effect.promise(() => sendNotify(url, { sid, seq: "1", body: propertySet("0.0.0.0", "Disconnected") })), { status: 200 })
        assert.deepStrictEqual(yield* Effect.promise(() => sendNotify(url, { sid, seq: "2", body: propertySet("122.112.219.230") })), { status: 200 })
        yield* eventually("three addresses", () => ipChanges(w.events).length === 3)
        assert.deepStrictEqual(ipChanges(w.events), [
          [null, "122.112.219.229"],
          ["122.112.219.229", "0.0.0.0"],
          ["0.0.0.0", "122.112.219.230"]
        ])
        assert.deepStrictEqual(
          w.events.flatMap((event) => event._tag === "ConnectionStatusChanged" ? [event.status] : []),
          ["Connected", "Disconnected", "Connected"]
        )
        yield* Fiber.interrupt(w.fiber)
        const last = fake.calls.at(-1)!
        assert.deepStrictEqual([last.method, last.headers["sid"]], ["UNSUBSCRIBE", sid])
        assert.strictEqual(fake.subscriptions.size, 0)
      })
    ))

  it.live("refuses forged NOTIFYs before reading them: wrong source, wrong SID, wrong path, other methods, oversize or unsized bodies", () =>
    withFake((fake) =>
      Effect.gen(function*() {
        const { w, sid, url } = yield* watchPastInitial(fake)
        const forged = propertySet("6.6.6.6")
        const outcomes = yield* Effect.promise(() =>
          Promise.all([
            sendNotify(url, { sid, seq: "1", body: forged, source: "127.0.0.2" }),
            sendNotify(url, { sid: "uuid:00000000-0000-0000-0000-00000000dead", seq: "1", body: forged }),
            sendNotify(url.replace(/[0-9a-f]{32}$/, "0".repeat(32)), { sid, seq: "1", body: forged }),
            sendNotify(url, { sid, seq: "1", body: forged, method: "POST" }),
            sendNotify(url, { sid, seq: "1", body: new Uint8Array(1024 * 1024) }),
            sendNotify(url, { sid, seq: "1", body: new Uint8Array(64 * 1024), chunked: true })
          ])
        )
        // The big bodies may be cut off mid-write: what counts is that they were never taken in.
        assert.deepStrictEqual(outcomes.slice(1, 4), [{ status: 412 }, { status: 412 }, { status: 405 }])
        // Another host's connection is closed unanswered.
        assert.match(outcomes[0] !== undefined && "error" in outcomes[0] ? outcomes[0].error : "answered", /ECONNRESET|socket hang up/)
        yield* eventually("six refusals", () => w.refused.length === 6)
        assert.sameMembers(w.refused, [
          "0 connection from 127.0.0.2, not the router 127.0.0.1",
          "412 unknown SID",
          "412 not the current subscription's callback path",
          "405 method POST is not NOTIFY",
          "413 body of 1048576 bytes is over 16384",
          "411 no Content-Length"
        ])
        // SEQ 1 was never consumed by a forgery: the router's own next NOTIFY is in sequence.
        yield* genuineChangeArrives(w, { sid, url, seq: "1" }, "122.112.219.230")
      })
    ))

  it.live("idle connections from another LAN host hold no place: the router's NOTIFY is still taken", () =>
    withFake((fake) =>
      Effect.gen(function*() {
        const { w, sid, url } = yield* watchPastInitial(fake)
        const port = Number(new URL(url).port)
        // More than the server's connection limit, opened and left silent.
        const idle = yield* Effect.promise(() =>
          Promise.all(Array.from({ length: 24 }, () =>
            new Promise<Socket>((resolve) => {
              const socket = connect({ host: "127.0.0.1", port, localAddress: "127.0.0.2" }, () => resolve(socket))
              socket.on("error", () => resolve(socket))
            })))
        )
        try {
          yield* genuineChangeArrives(w, { sid, url, seq: "1" }, "122.112.219.230")
        } finally {
          for (const socket of idle) socket.destroy()
        }
      })
    ))

  it.live("a NOTIFY with an entity trick or a broken body is answered but changes nothing", () =>
    withFake((fake) =>
      Effect.gen(function*() {
        const { w, sid, url } = yield* watchPastInitial(fake)
        const bomb = `<!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>` +
          `<e:propertyset xmlns:e="urn:schemas-upnp-org:event-1-0"><e:property><ExternalIPAddress>&lol2;</ExternalIPAddress></e:property></e:propertyset>`
        yield* Effect.promise(() => sendNotify(url, { sid, seq: "1", body: bomb }))
        yield* Effect.promise(() => sendNotify(url, { sid, seq: "2", body: "<e:propertyset><e:property>" }))
        yield* genuineChangeArrives(w, { sid, url, seq: "3" }, "122.112.219.231")
      })
    ))

  it.live("a SEQ gap means NOTIFYs were missed: the subscription is made afresh on a new path, the old path refused", () =>
    withFake((fake) =>
      Effect.gen(function*() {
        const { w, ...first } = yield* watchPastInitial(fake)
        yield* Effect.promise(() => sendNotify(first.url, { sid: first.sid, seq: "5", body: propertySet("122.112.219.230") }))
        yield* eventually("subscribed again", () => w.subscribed().length === 2)
        assert.deepStrictEqual(w.tags(), [
          "Subscribed",
          "ExternalIPAddressChanged",
          "ConnectionStatusChanged",
          "SubscriptionLost",
          "Subscribed"
        ])
        const lost = w.events[3]!
        assert.strictEqual(lost._tag === "SubscriptionLost" ? lost.reason : "", "missed NOTIFY (gap: expected SEQ 1, got 5)")
        const second = w.callback()
        assert.notStrictEqual(second.url, first.url)
        assert.deepStrictEqual(
          yield* Effect.promise(() => sendNotify(first.url, { sid: first.sid, seq: "1", body: propertySet("6.6.6.6") })),
          { status: 412 }
        )
        yield* Effect.promise(() => sendNotify(second.url, { sid: second.sid, seq: "0", body: propertySet("122.112.219.230") }))
        yield* eventually("the new address", () => ipChanges(w.events).length === 2)
        assert.deepStrictEqual(ipChanges(w.events).at(-1), ["122.112.219.229", "122.112.219.230"])
        yield* Fiber.interrupt(w.fiber)
      })
    ))

  it.live("renews with the SID before the granted timeout; a 412 (the router restarted) leads to a new subscription", () =>
    withFake((fake) =>
      Effect.gen(function*() {
        fake.behaviour.maxTimeout = 2
        const w = yield* watch(fake)
        yield* eventually("renewed", () => w.tags().includes("Renewed"))
        const renewal = fake.calls[1]!
        assert.deepStrictEqual([renewal.method, renewal.headers["sid"], renewal.headers["callback"]], [
          "SUBSCRIBE",
          w.subscribed()[0]!.sid,
          undefined
        ])
        fake.restart()
        yield* eventually("subscribed again", () => w.subscribed().length === 2)
        const lost = w.events.find((event) => event._tag === "SubscriptionLost")
        assert.strictEqual(lost?._tag === "SubscriptionLost" ? lost.reason : "", "renewal failed: renewal answered HTTP 412")
        assert.strictEqual(fake.subscriptions.size, 1)
        yield* Fiber.interrupt(w.fiber)
      })
    ))

  it.live("a router that refuses SUBSCRIBE fails the stream after the attempts allowed, no more", () =>
    withFake((fake) =>
      Effect.gen(function*() {
        fake.behaviour.subscribeStatus = 501
        const exit = yield* watchWanEvents({
          eventUrl: fake.eventUrl,
          localAddress: "127.0.0.1",
          retryBase: "10 millis",
          attempts: 3
        }).pipe(Stream.runDrain, Effect.exit)
        assert.isTrue(Exit.isFailure(exit))
        const error = Exit.isFailure(exit) ? exit.cause.reasons[0] : undefined
        assert.strictEqual(error?._tag === "Fail" ? error.error.message : "", `UPnP eventing on ${fake.eventUrl} is not available: SUBSCRIBE answered HTTP 501`)
        assert.strictEqual(fake.calls.length, 3)
      })
    ))

  it.live("a router that never answers SUBSCRIBE fails the stream within its timeouts", () =>
    withFake((fake) =>
      Effect.gen(function*() {
        fake.behaviour.silent = true
        const started = Date.now()
        const exit = yield* watchWanEvents({
          eventUrl: fake.eventUrl,
          localAddress: "127.0.0.1",
          retryBase: "10 millis",
          requestTimeout: "200 millis",
          attempts: 2
        }).pipe(Stream.runDrain, Effect.exit)
        assert.isTrue(Exit.isFailure(exit))
        assert.strictEqual(fake.calls.length, 2)
        assert.isBelow(Date.now() - started, 2_000)
      })
    ))
})
