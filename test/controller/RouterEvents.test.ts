/**
 * Hearing the router: the whole controller over the in-memory apiserver and a router that
 * offers GENA events. A NOTIFY is a cue to read the address (at once, and again 1.5 s later);
 * a router that refuses is probed as before, said once; the probe relaxes while subscribed and
 * comes back when the subscription is lost; a restart makes the subscription afresh at once.
 * Time is TestClock's.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Logger } from "effect"
import { TestClock } from "effect/testing"
import { seedService, settle, setup, until, untilEvents } from "../support/controllerHarness.ts"

const ip = (kube: ReturnType<typeof setup>["kube"], key: string) => kube.get(key)?.status?.loadBalancer?.ingress?.[0]?.ip

const KEYS = ["default/a", "default/b", "default/c"]

/** Three Services published at the router's first address, by a controller that hears its events. */
const threePublished = (
  options: { readonly refuses?: boolean; readonly upnpEvents?: boolean; readonly announcesRestarts?: boolean } = {}
) =>
  Effect.gen(function*() {
    const { gateway, kube, start } = setup(
      { resyncInterval: Duration.hours(1), ...(options.upnpEvents === undefined ? {} : { upnpEvents: options.upnpEvents }) },
      { eventing: true, ...(options.announcesRestarts === undefined ? {} : { announcesRestarts: options.announcesRestarts }) }
    )
    gateway.eventing.refuses = options.refuses === true
    yield* start
    KEYS.forEach((key, i) =>
      kube.create(seedService({ name: key.slice("default/".length) }, { ports: [{ name: "http", port: 8080 + i, nodePort: 30000 + i }] }))
    )
    yield* until("published", () => KEYS.every((key) => ip(kube, key) === "122.112.219.229"))
    yield* settle
    const since = gateway.calls.length
    return { gateway, kube, callsSince: () => gateway.calls.slice(since) }
  })

/** The router's WAN address goes, and its NOTIFY says so: waits for the read it cues. */
const addressGone = (gateway: ReturnType<typeof setup>["gateway"], callsSince: () => ReadonlyArray<string>) =>
  Effect.gen(function*() {
    gateway.state.externalIp = undefined
    gateway.state.externalClass = "missing"
    gateway.eventing.notify("Disconnected")
    yield* until("the address read", () => callsSince().includes("externalAddress"))
  })

/** Log lines at or above Info, captured. */
const captureLogs = () => {
  const lines: Array<string> = []
  const layer = Logger.layer([Logger.make(({ message }) => void lines.push(String(Array.isArray(message) ? message.join(" ") : message)))])
  return { lines, layer }
}

describe("hearing the router (UPnP events)", () => {
  it.effect("a NOTIFY updates every Service's status at once, with one address read and no probe", () =>
    Effect.gen(function*() {
      const { gateway, kube, callsSince } = yield* threePublished()
      expect(gateway.eventing.granted).toHaveLength(1)
      gateway.state.externalIp = "122.112.219.230"
      gateway.eventing.notify()
      // No TestClock step: no probe can have run; only the NOTIFY tells.
      yield* until("every Service follows", () => KEYS.every((key) => ip(kube, key) === "122.112.219.230"))
      yield* untilEvents(kube, "ExternalIPChanged", 3)
      yield* settle
      expect(callsSince()).toEqual(["externalAddress"])
    }))

  it.effect("reads the address again shortly after: a change made while the NOTIFY was in flight is not lost", () =>
    Effect.gen(function*() {
      const { gateway, kube, callsSince } = yield* threePublished()
      // The old address goes: its NOTIFY says so...
      yield* addressGone(gateway, callsSince)
      // ...and the new one comes while that NOTIFY is in flight: miniupnpd sends nothing for it.
      gateway.state.externalIp = "122.112.219.230"
      gateway.state.externalClass = "public"
      yield* settle
      yield* TestClock.adjust(Duration.millis(1500))
      yield* until("every Service follows", () => KEYS.every((key) => ip(kube, key) === "122.112.219.230"))
      yield* untilEvents(kube, "ExternalIPChanged", 3)
      expect(callsSince().filter((call) => call === "externalAddress")).toHaveLength(2)
      // The probe had no part in it: it is relaxed while the subscription lives.
      expect(callsSince()).not.toContain("status")
    }))

  it.effect("no address at the NOTIFY is a passing state: the status is withdrawn only if the second read finds none either", () =>
    Effect.gen(function*() {
      const { gateway, kube, callsSince } = yield* threePublished()
      yield* addressGone(gateway, callsSince)
      // Whatever the read set off has run by the time the clock moved on, short of the second read.
      yield* TestClock.adjust(Duration.millis(1000))
      yield* settle
      // Still published: a DNS record fed from it does not flap on a reconnect.
      expect(KEYS.map((key) => ip(kube, key))).toEqual(KEYS.map(() => "122.112.219.229"))
      yield* TestClock.adjust(Duration.millis(500))
      yield* until("withdrawn", () => KEYS.every((key) => ip(kube, key) === undefined))
    }))

  it.effect("a cued read that fails counts as a failed probe: the router's next answer brings a full pass", () =>
    Effect.gen(function*() {
      const { gateway, kube, callsSince } = yield* threePublished()
      // The router drops off the LAN and loses its table without rebooting (no uptime to tell),
      // and its NOTIFY's read fails.
      gateway.state.reachable = false
      gateway.table.clear()
      gateway.eventing.notify("Disconnected")
      yield* until("the failed read", () => callsSince().includes("externalAddress"))
      yield* settle
      // Back before the second read: that read finds the router returned, and every mapping is put back.
      gateway.state.reachable = true
      yield* TestClock.adjust(Duration.millis(1500))
      yield* until("restored", () => gateway.table.size === KEYS.length)
      expect(KEYS.every((key) => ip(kube, key) === "122.112.219.229")).toBe(true)
    }))

  it.effect("relaxes the probe while subscribed, and probes at the normal interval once the subscription is lost", () =>
    Effect.gen(function*() {
      const { gateway, callsSince } = yield* threePublished()
      const probes = () => callsSince().filter((call) => call === "status").length
      yield* TestClock.adjust(Duration.seconds(20))
      yield* settle
      expect(probes()).toBe(0)
      yield* TestClock.adjust(Duration.seconds(12))
      yield* settle
      // Every 30 s while subscribed.
      expect(probes()).toBe(1)
      // Lost, and the new SUBSCRIBE goes unanswered for now.
      gateway.eventing.unanswered = true
      gateway.eventing.lose("renewal failed: renewal answered HTTP 412")
      yield* settle
      const lost = probes()
      yield* TestClock.adjust(Duration.seconds(2))
      yield* settle
      yield* TestClock.adjust(Duration.seconds(2))
      yield* settle
      expect(probes()).toBe(lost + 2)
    }))

  it.effect("a router whose restarts are not announced (its URL given, no SSDP) is probed as before though subscribed", () =>
    Effect.gen(function*() {
      const { gateway, kube, callsSince } = yield* threePublished({ announcesRestarts: false })
      expect(gateway.eventing.granted).toHaveLength(1)
      const probes = () => callsSince().filter((call) => call === "status").length
      yield* TestClock.adjust(Duration.seconds(2))
      yield* settle
      yield* TestClock.adjust(Duration.seconds(2))
      yield* settle
      expect(probes()).toBe(2)
      // A restart, which no NOTIFY tells: the next probe sees it and every mapping comes back.
      gateway.reboot()
      yield* TestClock.adjust(Duration.seconds(2))
      yield* until("restored", () => gateway.table.size === KEYS.length)
      expect(KEYS.every((key) => ip(kube, key) === "122.112.219.229")).toBe(true)
    }))

  it.effect("a router that refuses to subscribe is probed as before, said in one log line, not one per pass", () =>
    Effect.gen(function*() {
      const logs = captureLogs()
      yield* Effect.gen(function*() {
        const { gateway, kube, callsSince } = yield* threePublished({ refuses: true })
        // The probe at the normal interval sees the change.
        gateway.state.externalIp = "122.112.219.230"
        yield* TestClock.adjust(Duration.seconds(2))
        yield* until("every Service follows", () => KEYS.every((key) => ip(kube, key) === "122.112.219.230"))
        // Tried again later, in silence, and many probes and a resync go by.
        for (let i = 0; i < 12; i++) {
          yield* TestClock.adjust(Duration.minutes(5))
          yield* settle
        }
        expect(callsSince().filter((call) => call === "subscribe refused").length).toBeGreaterThanOrEqual(2)
        expect(callsSince().filter((call) => call === "status").length).toBeGreaterThan(100)
      }).pipe(Effect.provide(logs.layer))
      expect(logs.lines.filter((line) => line.includes("UPnP events"))).toEqual([
        "UPnP events from the upnp-igd router unavailable (SUBSCRIBE answered HTTP 412): probing it every 2s instead"
      ])
    }))

  it.effect("--upnp-events=false: never subscribes, probes every interval, says so once", () =>
    Effect.gen(function*() {
      const logs = captureLogs()
      yield* Effect.gen(function*() {
        const { gateway, callsSince } = yield* threePublished({ upnpEvents: false })
        yield* TestClock.adjust(Duration.seconds(2))
        yield* settle
        yield* TestClock.adjust(Duration.seconds(2))
        yield* settle
        expect(gateway.eventing.granted).toEqual([])
        expect(callsSince().filter((call) => call === "status")).toHaveLength(2)
      }).pipe(Effect.provide(logs.layer))
      expect(logs.lines.filter((line) => line.includes("UPnP events"))).toEqual([
        "UPnP events are off (--upnp-events=false): probing the upnp-igd router every 2s"
      ])
    }))

  it.effect("a restart announced by SSDP makes the subscription afresh at once, not at the renewal's refusal", () =>
    Effect.gen(function*() {
      const { gateway } = yield* threePublished()
      gateway.reboot({ announce: true })
      yield* until("subscribed afresh", () => gateway.eventing.granted.length === 2)
      expect(gateway.eventing.unsubscribed).toEqual(["uuid:in-memory-1"])
    }))

  it.effect("a reboot seen by the probe makes the subscription afresh at once", () =>
    Effect.gen(function*() {
      const { gateway } = yield* threePublished()
      gateway.reboot()
      // The relaxed probe comes within 30 s.
      yield* TestClock.adjust(Duration.seconds(30))
      yield* until("subscribed afresh", () => gateway.eventing.granted.length === 2)
      expect(gateway.eventing.unsubscribed).toEqual(["uuid:in-memory-1"])
    }))

  it.effect("unsubscribes when the controller stops", () =>
    Effect.gen(function*() {
      const granted = yield* Effect.scoped(Effect.gen(function*() {
        const { gateway } = yield* threePublished()
        return gateway.eventing
      }))
      expect(granted.unsubscribed).toEqual(granted.granted)
    }))
})
