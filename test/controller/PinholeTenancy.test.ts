/**
 * IPv6 pinholes under the tenancy rules, through the whole controller against the in-memory
 * apiserver, router and IPv6 firewall: two namespaces' Services asking for one IPv6 port (the
 * older keeps it, the younger gets a port error and one Event and never reaches the router, and
 * gets the port once the older goes), an older Service that comes to ask for a port a younger
 * one holds (the younger's pinhole is left to it, never deleted or renewed for it), and a
 * namespace's quota that pinholes count against.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration, Effect, Metric } from "effect"
import { TestClock } from "effect/testing"
import * as metrics from "../../src/controller/metrics.ts"
import { readPinholes } from "../../src/controller/PinholeRecord.ts"
import type { Service } from "../../src/kube/objects.ts"
import { seedService, untilEvents } from "../support/controllerHarness.ts"
import { dualStackWorld } from "../support/dualStackWorld.ts"
import { NODE_ADDRESS } from "../support/InMemoryFirewall.ts"
import { testRecordCheck } from "../support/records.ts"

/** An IPv6-only Service of `namespace/name` created on 2026-01-0`day`, with one TCP port. */
const ipv6Only = (namespace: string, name: string, day: number, port = 8080, families: ReadonlyArray<string> = ["IPv6"]): Service =>
  seedService(
    { name, namespace, uid: `uid-${namespace}-${name}`, creationTimestamp: new Date(`2026-01-0${day}T00:00:00Z`) },
    { ipFamilies: families, ports: [{ name: "http", port, nodePort: 30000 + day, protocol: "TCP" }] }
  )

type World = ReturnType<typeof dualStackWorld>
const ipv6Ports = (w: World, key: string) =>
  w.kube.get(key)?.status?.loadBalancer?.ingress?.find((ingress) => ingress.ip === NODE_ADDRESS)?.ports ?? []
const pinholeIds = (w: World, key: string) => {
  const service = w.kube.get(key)
  return service === undefined ? [] : readPinholes(service, testRecordCheck).trusted.map((entry) => entry.uniqueId)
}
const firewallCalls = (calls: ReadonlyArray<string>) => calls.filter((call) => call.startsWith("firewall"))
const notes = (w: World, reason: string) => w.kube.events.filter((event) => event.reason === reason)

const PROD = "prod/web"
const TENANT = "tenant/x"

describe("two namespaces' Services asking for one IPv6 port", () => {
  it.effect("the older keeps its pinhole; the younger: a port error, one Event, no router call; the older gone, the younger opens it", () =>
    Effect.gen(function*() {
      const w = dualStackWorld()
      yield* w.start
      w.kube.create(ipv6Only("prod", "web", 1))
      yield* w.callsOnce("prod/web's pinhole", () => pinholeIds(w, PROD).length === 1 && pinholeIds(w, PROD)[0] !== undefined)
      const conflicts = Metric.value(Metric.withAttributes(metrics.portConflicts, { family: "ipv6" }))
      const conflictsBefore = (yield* conflicts).count
      w.kube.create(ipv6Only("tenant", "x", 2))
      const calls = yield* w.callsOnce("tenant/x refused", () =>
        ipv6Ports(w, TENANT)[0]?.error === "midokura.com/PortConflict" && notes(w, "PortConflict").length === 1)
      expect(firewallCalls(calls)).toEqual([])
      expect(pinholeIds(w, TENANT)).toEqual([])
      expect(notes(w, "PortConflict").map((event) => [event.regarding.name, event.type, event.note])).toEqual([
        ["x", "Warning", "TCP 8080 (IPv6): Service prod/web is older and already claims TCP 8080 (IPv6)"]
      ])
      expect(ipv6Ports(w, PROD)).toEqual([{ port: 8080, protocol: "TCP" }])

      // Resyncs: the younger is passed over again and again, still without a call or a second Event.
      yield* TestClock.adjust(Duration.seconds(31))
      yield* TestClock.adjust(Duration.seconds(31))
      const later = yield* w.callsOnce("two resyncs", () => true)
      expect(firewallCalls(later).filter((call) => !call.startsWith("firewall update"))).toEqual([])
      expect(notes(w, "PortConflict")).toHaveLength(1)
      expect((yield* conflicts).count).toBe(conflictsBefore + 1)

      // The holder goes: its pinhole is the younger's now, left open (no DeletePinhole) and adopted.
      w.kube.delete(PROD)
      const handover = yield* w.callsOnce("tenant/x opened", () =>
        w.kube.get(PROD) === undefined && ipv6Ports(w, TENANT)[0] !== undefined && ipv6Ports(w, TENANT)[0]?.error === undefined)
      expect(firewallCalls(handover)).toEqual(["firewall add TCP/8080 -> 1", "firewall update 1"])
      expect(pinholeIds(w, TENANT)).toEqual([1])
      expect(w.firewall.pinholes.size).toBe(1)
    }))

  it.effect("an older Service that comes to ask for a port the younger holds: the younger's pinhole is left to it, never deleted or renewed for it", () =>
    Effect.gen(function*() {
      const w = dualStackWorld()
      yield* w.start
      w.kube.create(ipv6Only("tenant", "x", 2))
      yield* w.callsOnce("tenant/x's pinhole", () => pinholeIds(w, TENANT)[0] === 1)
      // prod/web, older, only now asks for IPv6 (its family added): it holds the port.
      w.kube.create(ipv6Only("prod", "web", 1, 8080, ["IPv4"]))
      yield* w.callsOnce("prod/web mapped", () => w.gateway.table.has("TCP/8080"))
      w.kube.update(PROD, (service) => ({ ...service, spec: { ...service.spec, ipFamilies: ["IPv4", "IPv6"] } }))
      const calls = yield* w.callsOnce("the port changed hands", () =>
        pinholeIds(w, PROD)[0] === 1 && pinholeIds(w, TENANT).length === 0 &&
        ipv6Ports(w, TENANT)[0]?.error === "midokura.com/PortConflict")
      // prod/web opens it (the router answers with the same pinhole) and sets its expiry; tenant/x calls nothing.
      expect(firewallCalls(calls)).toEqual(["firewall add TCP/8080 -> 1", "firewall update 1"])

      // Renewals from now on are prod/web's alone: one UpdatePinhole per half lease, not two.
      yield* TestClock.adjust(Duration.seconds(301))
      const renewals = yield* w.callsOnce("renewed", () => w.firewall.journal.filter((call) => call === "firewall update 1").length >= 2)
      expect(firewallCalls(renewals)).toEqual(["firewall update 1"])

      w.kube.delete(TENANT)
      const gone = yield* w.callsOnce("tenant/x gone", () => w.kube.get(TENANT) === undefined)
      expect(firewallCalls(gone)).toEqual([])
      expect(w.firewall.pinholes.size).toBe(1)
    }))
})

describe("a namespace's quota counts pinholes", () => {
  it.effect("a dual-stack Service's mapping and pinhole fill a quota of 2; the next Service's pinhole waits without a call", () =>
    Effect.gen(function*() {
      const w = dualStackWorld({ controller: { maxMappingsPerNamespace: 2 } })
      yield* w.start
      w.kube.create(ipv6Only("shop", "first", 1, 8080, ["IPv4", "IPv6"]))
      yield* w.callsOnce("first published", () => w.gateway.table.has("TCP/8080") && pinholeIds(w, "shop/first")[0] === 1)
      w.kube.create(ipv6Only("shop", "second", 2, 9090))
      const calls = yield* w.callsOnce("second refused", () => ipv6Ports(w, "shop/second")[0]?.error === "midokura.com/QuotaExceeded")
      expect(firewallCalls(calls)).toEqual([])
      yield* untilEvents(w.kube, "QuotaExceeded")
      expect(notes(w, "QuotaExceeded").map((event) => event.note)).toEqual([
        expect.stringMatching(/^TCP 9090 \(IPv6\): namespace shop already holds its quota of 2 router entries/)
      ])
      // Another namespace is not counted.
      w.kube.create(ipv6Only("other", "web", 3, 9191))
      yield* w.callsOnce("other opened", () => pinholeIds(w, "other/web")[0] !== undefined)

      w.kube.delete("shop/first")
      yield* w.callsOnce("second opened once first is gone", () =>
        pinholeIds(w, "shop/second")[0] !== undefined && ipv6Ports(w, "shop/second")[0]?.error === undefined)
      expect(w.firewall.journal).toContain("firewall add TCP/9090 -> 3")
    }))
})
