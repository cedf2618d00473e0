/**
 * Scenario tests: the whole controller (watch → queue → planner → executor) against an
 * in-memory apiserver and an in-memory router with miniupnpd's semantics. Time is TestClock's.
 */
import { describe, expect, it } from "@effect/vitest"
import type { Service } from "../../src/kube/objects.ts"
import { Context, Duration, Effect, Layer, Metric } from "effect"
import { TestClock } from "effect/testing"
import { Controller } from "../../src/controller/Controller.ts"
import * as metrics from "../../src/controller/metrics.ts"
import { RESTART_PASS_WINDOW } from "../../src/controller/restartWindow.ts"
import { Routers } from "../../src/controller/Routers.ts"
import { FINALIZER, MAPPINGS_ANNOTATION } from "../../src/controller/ServiceSpec.ts"
import { Gateways } from "../../src/gateway/Gateways.ts"
import { PortMapper } from "../../src/gateway/PortMapper.ts"
import { makeInMemoryGateway } from "../support/InMemoryGateway.ts"
import { makeInMemoryKube } from "../support/InMemoryKube.ts"
import {
  controllerOver,
  firstPassCalls,
  node,
  reasons,
  runUntilRecorded,
  SEED_DESCRIPTION,
  SEED_KEY,
  seedService,
  settle,
  setup,
  until,
  untilEvents
} from "../support/controllerHarness.ts"
import { trustedRecord } from "../support/records.ts"

const RESTART_PASS_WINDOW_MS = Duration.toMillis(RESTART_PASS_WINDOW)

/** Successful passes so far (the counter is the process's: compare before and after). */
const passes = Effect.map(
  Metric.value(Metric.withAttributes(metrics.reconcileTotal, { result: "success" })),
  (state) => state.count
)

describe("Controller", () => {
  it.effect("maps the seed's Service, records it first, and publishes the router's address", () =>
    Effect.gen(function*() {
      const journal: Array<string> = []
      const { gateway, kube, start } = setup({}, { journal })
      const controller = Context.get(yield* start, Controller)
      yield* settle
      expect((yield* controller.health).initialPassDone).toBe(true)
      const created = journal.length
      kube.create(seedService())
      yield* until("status published", () => kube.get(SEED_KEY)?.status?.loadBalancer?.ingress?.[0]?.ip !== undefined)

      expect(gateway.table.get("TCP/8080")).toMatchObject({
        internalClient: "192.168.77.10",
        internalPort: 30000,
        description: SEED_DESCRIPTION,
        leaseDuration: 3600
      })
      const service = kube.get(SEED_KEY)!
      expect(service.status?.loadBalancer?.ingress).toEqual([
        { ip: "122.112.219.229", ipMode: "VIP", ports: [{ port: 8080, protocol: "TCP" }] }
      ])
      expect(service.metadata?.finalizers).toEqual([FINALIZER])
      expect(trustedRecord(service).map((m) => m.description)).toEqual([SEED_DESCRIPTION])
      yield* untilEvents(kube, "EnsuredLoadBalancer")
      expect(reasons(kube)).toEqual(["EnsuredLoadBalancer"])
      expect(journal.slice(created).filter((call) => call !== "router status")).toEqual(firstPassCalls(SEED_KEY))
      // Our own writes come back through the watch; they are not a reason to ask the router again.
      yield* settle
      expect(gateway.calls.filter((call) => call === "get TCP/8080")).toHaveLength(1)
      expect(gateway.calls.filter((call) => call === "map TCP/8080")).toHaveLength(1)
    }))

  it.effect("leaves Services without opt-in or of another class alone: no calls, no events", () =>
    Effect.gen(function*() {
      const { gateway, kube, start } = setup()
      yield* start
      kube.create(seedService({ name: "plain", annotations: {} }))
      kube.create(seedService({ name: "metallb" }, { loadBalancerClass: "metallb.io/metallb" }))
      kube.create(seedService({ name: "nodeport" }, { type: "NodePort" }))
      yield* settle
      expect(kube.events).toEqual([])
      expect(kube.calls).toEqual([])
      expect(gateway.calls.filter((c) => c.startsWith("map") || c.startsWith("get"))).toEqual([])
    }))

  it.effect("maps every port of a TCP+UDP Service", () =>
    Effect.gen(function*() {
      const { gateway, kube, start } = setup()
      yield* start
      kube.create(seedService({ name: "dns" }, {
        ports: [
          { name: "dns-tcp", port: 53, nodePort: 30053, protocol: "TCP" },
          { name: "dns-udp", port: 53, nodePort: 30054, protocol: "UDP" }
        ]
      }))
      yield* until("both mapped", () => gateway.table.has("TCP/53") && gateway.table.has("UDP/53"))
      expect(gateway.table.get("UDP/53")).toMatchObject({ internalPort: 30054, description: "kubernetes/default/dns/dns-udp" })
    }))

  it.effect("on delete removes the mapping, then the finalizer, and the Service goes", () =>
    Effect.gen(function*() {
      const { gateway, kube, start } = setup()
      yield* start
      kube.create(seedService())
      yield* until("mapped", () => gateway.table.has("TCP/8080") && kube.get(SEED_KEY)?.status?.loadBalancer?.ingress !== undefined)
      kube.delete(SEED_KEY)
      yield* until("service gone", () => kube.get(SEED_KEY) === undefined)
      expect(gateway.table.size).toBe(0)
      yield* untilEvents(kube, "DeletedLoadBalancer")
    }))

  it.effect("re-asserts every mapping as soon as a probe sees the router rebooted", () =>
    Effect.gen(function*() {
      const { gateway, kube, start } = setup({ resyncInterval: Duration.minutes(30) })
      yield* start
      kube.create(seedService())
      kube.create(seedService({ name: "other" }, { ports: [{ name: "x", port: 9090, nodePort: 30090 }] }))
      yield* until("mapped", () => gateway.table.size === 2)
      gateway.reboot()
      yield* TestClock.adjust(Duration.seconds(2))
      yield* until("restored", () => gateway.table.size === 2)
      // One per Service.
      yield* untilEvents(kube, "MappingRepaired", 2)
      yield* settle
      expect(reasons(kube).filter((r) => r === "MappingRepaired")).toHaveLength(2)
    }))

  /** The seed's Service mapped by a controller that resyncs rarely, and a count of its listings. */
  const seedMapped = Effect.gen(function*() {
    const { gateway, kube, start } = setup({ resyncInterval: Duration.minutes(30) })
    yield* start
    kube.create(seedService())
    yield* until("mapped", () => gateway.table.size === 1)
    yield* settle
    const listings = () => gateway.calls.filter((call) => call === "list").length
    return { gateway, listings, before: listings() }
  })

  const onePassPerReboot = (uptimeAtProbe: number) =>
    Effect.gen(function*() {
      const { gateway, listings, before } = yield* seedMapped
      gateway.reboot({ announce: true })
      yield* until("restored after the announcement", () => gateway.table.size === 1)
      yield* settle
      expect(listings()).toBe(before + 1)
      const probes = gateway.calls.filter((call) => call === "status").length
      gateway.state.uptime = uptimeAtProbe
      yield* TestClock.adjust(Duration.seconds(2))
      yield* until("probed", () => gateway.calls.filter((call) => call === "status").length > probes)
      yield* settle
      expect(listings()).toBe(before + 1)
    })

  it.effect("one full pass per reboot: the announcement's, not again at the probe that sees the uptime drop", () =>
    // Up for 3 s when the next probe comes, 2 s from now: it booted before that listing.
    onePassPerReboot(3))

  it.effect("one full pass per reboot, though the uptime's whole seconds date the boot after the announcement's listing", () =>
    // Up for "1 s" 2 s after the listing: the announcement, newer than the last probe, dates it.
    onePassPerReboot(1))

  it.effect("reboot announcements start at most one full pass per window: 50 alternating BOOTIDs in 1 s make 2", () =>
    Effect.gen(function*() {
      const { gateway, listings, before } = yield* seedMapped
      const announce = (bootId: number) =>
        gateway.announce(`http://192.168.77.1:49536/rootDesc.xml announced BOOTID.UPNP.ORG ${bootId}`)
      announce(0)
      yield* until("the first announcement's pass", () => listings() === before + 1)
      for (let i = 1; i < 50; i++) {
        yield* TestClock.adjust(Duration.millis(20))
        announce(i % 2)
        yield* settle
      }
      expect(listings()).toBe(before + 1)
      // The rest wait for the window's end (10 s after the first), and share one pass then.
      // 49 × 20 ms have passed since the first.
      yield* TestClock.adjust(Duration.millis(RESTART_PASS_WINDOW_MS - 49 * 20 - 1))
      yield* settle
      expect(listings()).toBe(before + 1)
      yield* TestClock.adjust(Duration.millis(1))
      yield* until("one coalesced pass at the window's end", () => listings() === before + 2)
      yield* TestClock.adjust(Duration.minutes(1))
      yield* settle
      expect(listings()).toBe(before + 2)
      // The next announcement, a window later, starts its pass at once.
      announce(7)
      yield* until("a later announcement's pass", () => listings() === before + 3)
    }))

  it.effect("says which router a Service uses, and why, once; again when it changes", () =>
    Effect.gen(function*() {
      const { gateway, kube, start } = setup()
      gateway.state.selection = "192.168.77.1, the node's default gateway"
      yield* start
      kube.create(seedService())
      yield* untilEvents(kube, "EnsuredLoadBalancer")
      // The first choice rides on the EnsuredLoadBalancer of the pass that made it: one Event.
      expect(kube.events.find((e) => e.reason === "EnsuredLoadBalancer")?.note).toMatch(
        /mapped on .* \(upnp-igd router 192\.168\.77\.1, the node's default gateway\)$/
      )
      // Later passes say nothing new.
      yield* TestClock.adjust(Duration.seconds(30))
      yield* settle
      expect(reasons(kube).filter((r) => r === "GatewaySelected")).toHaveLength(0)
      expect(reasons(kube).filter((r) => r === "EnsuredLoadBalancer")).toHaveLength(1)
      // Another router (one that holds none of our mappings): the pass that maps there leaves
      // the status as it was, so the choice has an Event of its own.
      gateway.state.selection = "192.168.77.50, set by --gateway-address"
      gateway.table.clear()
      yield* TestClock.adjust(Duration.seconds(30))
      yield* untilEvents(kube, "GatewaySelected", 1)
      expect(kube.events.filter((e) => e.reason === "GatewaySelected").map((e) => e.note)).toEqual([
        "upnp-igd router 192.168.77.50, set by --gateway-address"
      ])
    }))

  it.effect("repairs a mapping lost without a reboot at the next resync", () =>
    Effect.gen(function*() {
      const { gateway, kube, start } = setup({ resyncInterval: Duration.seconds(30) })
      yield* start
      kube.create(seedService())
      yield* until("mapped", () => gateway.table.size === 1)
      gateway.table.clear()
      yield* TestClock.adjust(Duration.seconds(30))
      yield* until("restored", () => gateway.table.size === 1)
      yield* untilEvents(kube, "MappingRepaired")
    }))

  it.effect("a resync lists the table and passes over a Service it shows settled; one it does not gets a pass", () =>
    Effect.gen(function*() {
      const { gateway, kube, start } = setup({ resyncInterval: Duration.seconds(30) })
      yield* start
      kube.create(seedService())
      kube.create(seedService({ name: "second" }, { ports: [{ name: "x", port: 9090, nodePort: 30090 }] }))
      yield* until("both published", () =>
        [SEED_KEY, "default/second"].every((key) => kube.get(key)?.status?.loadBalancer?.ingress?.[0]?.ip !== undefined))
      yield* settle
      // Lost behind our back (no watch event says so): only the next listing shows it.
      gateway.table.delete("TCP/9090")
      const routerBefore = gateway.calls.length
      const kubeBefore = kube.calls.length
      const passesBefore = yield* passes
      yield* TestClock.adjust(Duration.seconds(30))
      yield* until("the second's mapping restored", () => gateway.table.has("TCP/9090"))
      yield* untilEvents(kube, "MappingRepaired")
      yield* settle
      const routerCalls = gateway.calls.slice(routerBefore).filter((call) => call !== "status" && call !== "externalAddress")
      expect(routerCalls[0]).toBe("list")
      expect(routerCalls.some((call) => call.includes("9090"))).toBe(true)
      // The seed's mapping is where its record says: no read, no map, no write for it.
      expect(routerCalls.filter((call) => call.includes("8080"))).toEqual([])
      expect(kube.calls.slice(kubeBefore).filter((call) => call.includes("http-nginx-service"))).toEqual([])
      expect((yield* passes) - passesBefore, "one pass: the second's").toBe(1)
    }))

  it.effect("a lease longer than two resyncs is renewed by the first resync past its half-life", () =>
    Effect.gen(function*() {
      const { gateway, kube, start } = setup({ resyncInterval: Duration.seconds(30) })
      yield* start
      kube.create(seedService())
      yield* until("mapped", () => gateway.table.size === 1)
      const maps = () => gateway.calls.filter((call) => call === "map TCP/8080").length
      yield* TestClock.adjust(Duration.minutes(29))
      yield* settle
      expect(maps(), "settled until half the hour is gone").toBe(1)
      yield* TestClock.adjust(Duration.minutes(1))
      yield* until("renewed", () => maps() === 2)
    }))

  it.effect("reads back no first add; a router that reports success and creates nothing is caught by the next listing", () =>
    Effect.gen(function*() {
      const { gateway, kube, start } = setup({ resyncInterval: Duration.seconds(30) })
      yield* start
      gateway.state.dropsAdds = true
      kube.create(seedService())
      yield* until("published", () => kube.get(SEED_KEY)?.status?.loadBalancer?.ingress?.[0]?.ip !== undefined)
      expect(gateway.readBacks).toEqual([])

      yield* TestClock.adjust(Duration.seconds(30))
      yield* until("the port reported failed", () =>
        kube.events.some((e) => /reported success but holds no such mapping/.test(e.note ?? "")))
      expect(gateway.readBacks).toEqual(["TCP/8080"])
      expect(gateway.table.size).toBe(0)
    }))

  it.effect("a mapping lost to a reboot is re-added without a read-back", () =>
    Effect.gen(function*() {
      const { gateway, kube, start } = setup({ resyncInterval: Duration.seconds(30) })
      yield* start
      kube.create(seedService())
      yield* until("mapped", () => gateway.table.size === 1)
      gateway.reboot()
      yield* TestClock.adjust(Duration.seconds(2))
      yield* until("restored", () => gateway.table.size === 1)
      expect(gateway.readBacks).toEqual([])
    }))

  it.effect("after a restart, cleans up a Service deleted while it was down, from the record alone", () =>
    Effect.gen(function*() {
      const first = setup()
      yield* runUntilRecorded(first.start, first.kube, first.gateway, seedService())
      const kube = first.kube
      kube.delete(SEED_KEY)
      yield* settle
      expect(kube.get(SEED_KEY)?.metadata?.deletionTimestamp).toBeDefined()
      expect(first.gateway.table.size).toBe(1)
      // A new process over the same apiserver and router knows what to undo from the record.
      yield* controllerOver(kube, Routers.layerTest("upnp-igd", first.gateway.layer))
      yield* until("service gone", () => kube.get(SEED_KEY) === undefined)
      expect(first.gateway.table.size).toBe(0)
    }))

  it.effect("reports a port held by another host as a conflict and never touches it", () =>
    Effect.gen(function*() {
      const { gateway, kube, start } = setup()
      gateway.addForeign({ externalPort: 8080, protocol: "TCP" })
      yield* start
      kube.create(seedService())
      yield* until("conflict event", () => reasons(kube).includes("PortConflict"))
      yield* until("port error", () =>
        kube.get(SEED_KEY)?.status?.loadBalancer?.ingress?.[0]?.ports?.[0]?.error === "midokura.com/PortConflict")
      expect(gateway.table.get("TCP/8080")).toMatchObject({ internalClient: "192.168.77.50", description: "someone else's game" })
      expect(gateway.calls.filter((c) => c.startsWith("map ") || c.startsWith("unmap "))).toEqual([])
      // Settled: no write feeds the watch back into another pass.
      yield* settle
      const writes = kube.calls.length
      yield* settle
      expect(kube.calls.length).toBe(writes)
      // Announced once, not on every retry.
      yield* TestClock.adjust(Duration.seconds(10))
      yield* settle
      expect(reasons(kube).filter((r) => r === "PortConflict")).toHaveLength(1)
    }))

  it.effect("publishes nothing behind a double NAT, and says why", () =>
    Effect.gen(function*() {
      const { gateway, kube, start } = setup()
      gateway.state.externalIp = "10.0.0.2"
      gateway.state.externalClass = "private"
      gateway.state.selection = "192.168.77.1, the node's default gateway"
      yield* start
      kube.create(seedService())
      yield* until("DoubleNAT event", () => reasons(kube).includes("DoubleNAT"))
      expect(kube.get(SEED_KEY)?.status?.loadBalancer?.ingress ?? []).toEqual([])
      expect(gateway.table.size).toBe(0)
      // Nothing was ensured for the router choice to ride on: it has its own Event.
      yield* untilEvents(kube, "GatewaySelected")
      expect(reasons(kube)).not.toContain("EnsuredLoadBalancer")
    }))

  it.effect("withholds the address when the router refuses as double NAT before a probe noticed", () =>
    Effect.gen(function*() {
      const { gateway, kube, start } = setup()
      yield* start
      kube.create(seedService({ name: "first" }, { ports: [{ name: "x", port: 9999, nodePort: 30999 }] }))
      yield* until("first mapped", () => gateway.table.has("TCP/9999"))
      // The WAN address turns private between two probes: the cached view still says public.
      gateway.state.externalClass = "private"
      kube.create(seedService())
      yield* until("DoubleNAT event", () => reasons(kube).includes("DoubleNAT"))
      yield* settle
      expect(kube.get(SEED_KEY)?.status?.loadBalancer?.ingress ?? []).toEqual([])
    }))

  it.effect("follows a new external address", () =>
    Effect.gen(function*() {
      const { gateway, kube, start } = setup()
      yield* start
      kube.create(seedService())
      yield* until("published", () => kube.get(SEED_KEY)?.status?.loadBalancer?.ingress?.[0]?.ip === "122.112.219.229")
      gateway.state.externalIp = "122.112.219.230"
      yield* TestClock.adjust(Duration.seconds(2))
      yield* until("followed", () => kube.get(SEED_KEY)?.status?.loadBalancer?.ingress?.[0]?.ip === "122.112.219.230")
      yield* untilEvents(kube, "ExternalIPChanged")
    }))

  it.effect("gives a contested port to the older Service, and hands it over when that one goes", () =>
    Effect.gen(function*() {
      const { gateway, kube, start } = setup()
      yield* start
      kube.create(seedService({ name: "older", creationTimestamp: new Date("2026-01-01T00:00:00Z") }))
      kube.create(
        seedService({ name: "newer", creationTimestamp: new Date("2026-02-01T00:00:00Z") }, {
          ports: [{ name: "http", port: 8080, nodePort: 30500 }]
        })
      )
      yield* until("newer gets a conflict", () =>
        kube.get("default/newer")?.status?.loadBalancer?.ingress?.[0]?.ports?.[0]?.error === "midokura.com/PortConflict")
      expect(gateway.table.get("TCP/8080")?.description).toBe("kubernetes/default/older/http")
      kube.delete("default/older")
      yield* until("handed over", () => gateway.table.get("TCP/8080")?.description === "kubernetes/default/newer/http")
      yield* until("newer published cleanly", () =>
        kube.get("default/newer")?.status?.loadBalancer?.ingress?.[0]?.ports?.[0]?.error === undefined)
    }))

  it.effect("moves a mapping when the Service's port changes, deleting the old one", () =>
    Effect.gen(function*() {
      const { gateway, kube, start } = setup()
      yield* start
      kube.create(seedService())
      yield* until("mapped", () => gateway.table.has("TCP/8080"))
      kube.update(SEED_KEY, (s) => ({ ...s, spec: { ...s.spec, ports: [{ name: "http", port: 9090, nodePort: 30000 }] } }))
      yield* until("moved", () => gateway.table.has("TCP/9090") && !gateway.table.has("TCP/8080"))
      yield* until("record follows", () => {
        const record = trustedRecord(kube.get(SEED_KEY))
        return record.length === 1 && record[0]!.externalPort === 9090
      })
    }))

  it.effect("deletes orphaned mappings of this cluster, and only those", () =>
    Effect.gen(function*() {
      const { gateway, start } = setup()
      gateway.addForeign({ externalPort: 7000, protocol: "TCP", internalClient: "192.168.77.10", description: "kubernetes/default/gone/http" })
      gateway.addForeign({ externalPort: 7001, protocol: "TCP", internalClient: "192.168.77.11", description: "kubernetes/default/gone/b" })
      gateway.addForeign({ externalPort: 7002, protocol: "TCP", description: "kubernetes/x/y/z" })
      gateway.addForeign({ externalPort: 7003, protocol: "TCP", internalClient: "192.168.77.10", description: "staging/default/a/b" })
      yield* start
      yield* until("orphans deleted", () => !gateway.table.has("TCP/7000") && !gateway.table.has("TCP/7001"))
      expect([...gateway.table.keys()].sort()).toEqual(["TCP/7002", "TCP/7003"])
    }))

  it.effect("warns once about an unknown load balancer type and changes nothing", () =>
    Effect.gen(function*() {
      const { gateway, kube, start } = setup()
      yield* start
      kube.create(seedService({ annotations: { "midokura.com/load-balancer-type": "upnp" } }))
      yield* until("warned", () => reasons(kube).includes("InvalidAnnotation"))
      kube.update(SEED_KEY, (s) => ({ ...s, metadata: { ...s.metadata, labels: { touched: "yes" } } }))
      yield* settle
      expect(reasons(kube)).toEqual(["InvalidAnnotation"])
      expect(kube.events[0]!.note).toContain("accepted: upnp-igd")
      expect(gateway.calls.filter((c) => c.startsWith("map"))).toEqual([])
    }))

  it.effect("keeps retrying cleanup while the router is down, and releases on abandon-mappings", () =>
    Effect.gen(function*() {
      const { gateway, kube, start } = setup()
      yield* start
      kube.create(seedService())
      yield* until("mapped", () => gateway.table.size === 1 && kube.get(SEED_KEY)?.metadata?.finalizers?.length === 1)
      gateway.state.reachable = false
      kube.delete(SEED_KEY)
      yield* until("warned", () => reasons(kube).includes("SyncLoadBalancerFailed"))
      expect(kube.get(SEED_KEY)?.metadata?.finalizers).toEqual([FINALIZER])
      kube.update(SEED_KEY, (s) => ({
        ...s,
        metadata: { ...s.metadata, annotations: { ...s.metadata?.annotations, "midokura.com/abandon-mappings": "true" } }
      }))
      yield* until("released", () => kube.get(SEED_KEY) === undefined)
      yield* untilEvents(kube, "MappingsAbandoned")
      expect(kube.events.find((e) => e.reason === "MappingsAbandoned")?.note).toContain("TCP 8080")
    }))

  it.effect("replaces the old leader node's mapping with one to this node", () =>
    Effect.gen(function*() {
      const { gateway, kube, start } = setup()
      gateway.addForeign({ externalPort: 8080, protocol: "TCP", internalClient: "192.168.77.11", internalPort: 30000, description: SEED_DESCRIPTION })
      yield* start
      kube.create(seedService())
      yield* until("re-pointed", () => gateway.table.get("TCP/8080")?.internalClient === "192.168.77.10")
      expect(gateway.calls).toContain("unmap TCP/8080")
    }))

  it.effect("on a secure-mode router, waits for the old leader's mapping to expire, and says so", () =>
    Effect.gen(function*() {
      const { gateway, kube, start } = setup()
      gateway.state.secureMode = true
      gateway.addForeign({
        externalPort: 8080,
        protocol: "TCP",
        internalClient: "192.168.77.11",
        internalPort: 30000,
        description: SEED_DESCRIPTION,
        leaseDuration: 20
      })
      yield* start
      kube.create(seedService())
      const waiting = yield* Effect.gen(function*() {
        yield* until("a PortConflict event", () => reasons(kube).includes("PortConflict"))
        return kube.events.find((e) => e.reason === "PortConflict")!
      })
      expect(waiting.note).toContain("waiting for its lease to expire (in 20 s)")
      yield* settle
      const writes = kube.calls.length
      yield* settle
      expect(kube.calls.length).toBe(writes)
      expect(gateway.table.get("TCP/8080")?.internalClient).toBe("192.168.77.11")
      // The old mapping's lease runs out on the router; the retry, timed for then, maps to this node.
      gateway.table.delete("TCP/8080")
      yield* TestClock.adjust(Duration.seconds(20))
      yield* settle
      expect(gateway.table.get("TCP/8080")).toBeUndefined()
      yield* TestClock.adjust(Duration.seconds(1))
      yield* until("re-pointed", () => gateway.table.get("TCP/8080")?.internalClient === "192.168.77.10")
    }))

  it.effect("writes nothing when nothing changed", () =>
    Effect.gen(function*() {
      const { kube, start } = setup()
      yield* start
      kube.create(seedService())
      yield* until("published", () => kube.get(SEED_KEY)?.status?.loadBalancer?.ingress !== undefined)
      yield* settle
      const writes = kube.calls.length
      yield* TestClock.adjust(Duration.seconds(30))
      yield* settle
      expect(kube.calls.slice(writes)).toEqual([])
      expect(kube.get(SEED_KEY)?.metadata?.annotations?.[MAPPINGS_ANNOTATION]).toContain("8080")
    }))
})

describe("Controller over NAT-PMP/PCP-like routers (no table to read)", () => {
  /** A UPnP router and a PCP one, as `Gateways` offers them; `auto` prefers UPnP unless told. */
  const setupTwo = (autoPreference: ReadonlyArray<"upnp-igd" | "pcp" | "nat-pmp"> = ["upnp-igd", "pcp"]) => {
    const kube = makeInMemoryKube([node("node-1", "192.168.77.10")])
    const upnp = makeInMemoryGateway()
    const pcp = makeInMemoryGateway("192.168.77.10", "pcp")
    const unavailable = Layer.effect(PortMapper, Effect.die(new Error("NAT-PMP is not part of this test")))
    const gateways = Gateways.layerFrom(
      { "upnp-igd": upnp.layer, "pcp": pcp.layer, "nat-pmp": unavailable },
      { preference: autoPreference }
    )
    const start = controllerOver(kube, Routers.layer.pipe(Layer.provide(gateways)))
    return { kube, upnp, pcp, start }
  }
  const pcpService = (overrides: Partial<Service["metadata"]> = {}) =>
    seedService({ annotations: { "midokura.com/load-balancer-type": "pcp" }, ...overrides })

  it.effect("records the PCP nonce before mapping, and deletes with it", () =>
    Effect.gen(function*() {
      const { kube, pcp, start } = setupTwo()
      yield* start
      kube.create(pcpService())
      yield* until("mapped", () => pcp.table.has("TCP/8080") && kube.get(SEED_KEY)?.status?.loadBalancer?.ingress !== undefined)
      const recorded = trustedRecord(kube.get(SEED_KEY))[0]
      expect(recorded).toMatchObject({ backend: "pcp", externalPort: 8080 })
      expect(recorded?.nonce).toMatch(/^[0-9a-f]{24}$/)
      // The router holds the mapping under the nonce we drew, not one of its own.
      expect(pcp.nonces.get("TCP/8080")).toBe(recorded?.nonce)
      kube.delete(SEED_KEY)
      yield* until("deleted", () => kube.get(SEED_KEY) === undefined)
      expect(pcp.table.size).toBe(0)
    }))

  it.effect("after a restart, a new process deletes the PCP mapping with the recorded nonce", () =>
    Effect.gen(function*() {
      const first = setupTwo()
      yield* runUntilRecorded(first.start, first.kube, first.pcp, pcpService())
      expect(first.pcp.table.has("TCP/8080")).toBe(true)
      first.kube.delete(SEED_KEY)
      const gateways = Gateways.layerFrom({
        "upnp-igd": first.upnp.layer,
        "pcp": first.pcp.layer,
        "nat-pmp": Layer.effect(PortMapper, Effect.die(new Error("unused")))
      })
      yield* controllerOver(first.kube, Routers.layer.pipe(Layer.provide(gateways)))
      yield* until("Service gone", () => first.kube.get(SEED_KEY) === undefined)
      expect(first.pcp.table.size).toBe(0)
    }))

  it.effect("re-maps everything when the PCP epoch says the router lost its state", () =>
    Effect.gen(function*() {
      const { kube, pcp, start } = setupTwo()
      yield* start
      kube.create(pcpService())
      kube.create(pcpService({ name: "second" }))
      kube.update("default/second", (s) => ({ ...s, spec: { ...s.spec, ports: [{ name: "x", port: 9090, nodePort: 30090 }] } }))
      yield* until("mapped", () => pcp.table.size === 2)
      pcp.reboot()
      yield* TestClock.adjust(Duration.seconds(2))
      yield* until("re-mapped", () => pcp.table.size === 2)
    }))

  it.effect("auto says which protocol it chose, once", () =>
    Effect.gen(function*() {
      const { kube, pcp, start } = setupTwo(["pcp", "upnp-igd"])
      yield* start
      kube.create(seedService({ annotations: { "midokura.com/load-balancer-type": "auto" } }))
      yield* until("mapped through PCP", () => pcp.table.has("TCP/8080"))
      yield* until("announced", () => reasons(kube).includes("EnsuredLoadBalancer"))
      yield* TestClock.adjust(Duration.seconds(30))
      yield* settle
      expect(reasons(kube).filter((r) => r === "EnsuredLoadBalancer")).toHaveLength(1)
      expect(reasons(kube).filter((r) => r === "GatewaySelected")).toHaveLength(0)
      expect(kube.events.find((e) => e.reason === "EnsuredLoadBalancer")?.note).toContain("auto uses pcp")
    }))

  it.effect("moves a Service from UPnP to PCP: the UPnP mapping is removed through UPnP", () =>
    Effect.gen(function*() {
      const { kube, pcp, start, upnp } = setupTwo()
      yield* start
      kube.create(seedService())
      yield* until("mapped over UPnP", () => upnp.table.has("TCP/8080"))
      kube.update(SEED_KEY, (s) => ({
        ...s,
        metadata: { ...s.metadata, annotations: { ...s.metadata?.annotations, "midokura.com/load-balancer-type": "pcp" } }
      }))
      yield* until("moved", () => pcp.table.has("TCP/8080") && !upnp.table.has("TCP/8080"))
      yield* until("record follows", () => {
        const record = trustedRecord(kube.get(SEED_KEY))
        return record.length === 1 && record[0]!.backend === "pcp"
      })
    }))
})
