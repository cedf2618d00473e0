/**
 * A dual-stack Service through the whole controller (watch → queue → pass) against the
 * in-memory apiserver, router and IPv6 firewall, all three in one journal: the exact order of
 * the calls for a new Service and for its deletion, the status with both addresses, a router
 * reboot that loses the pinhole, and a controller built without a firewall.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { TestClock } from "effect/testing"
import { FINALIZER } from "../../src/controller/ServiceSpec.ts"
import { SEED_KEY, seedService } from "../support/controllerHarness.ts"
import { dualStackWorld } from "../support/dualStackWorld.ts"
import { NODE_ADDRESS } from "../support/InMemoryFirewall.ts"

const dualStack = () => seedService({}, { ipFamilies: ["IPv4", "IPv6"] })

const world = dualStackWorld

const ingress = (w: ReturnType<typeof world>) => w.kube.get(SEED_KEY)?.status?.loadBalancer?.ingress ?? []
const sent = (w: ReturnType<typeof world>, reason: string) => w.kube.events.some((e) => e.reason === reason)

describe("a dual-stack Service through the controller", () => {
  it.effect("new: record and finalizer, the mapping, the pinhole's entry, AddPinhole, its ID, one status with both addresses", () =>
    Effect.gen(function*() {
      const w = world()
      yield* w.start
      w.kube.create(dualStack())
      const calls = yield* w.callsOnce("both published", () => ingress(w).length === 2 && sent(w, "EnsuredLoadBalancer"))
      expect(calls).toEqual([
        "router get TCP/8080",
        `kube patch ${SEED_KEY}`,
        "router map TCP/8080",
        `kube patch ${SEED_KEY}`,
        "firewall add TCP/8080 -> 1",
        `kube patch ${SEED_KEY}`,
        `kube status ${SEED_KEY}`,
        "kube event EnsuredLoadBalancer"
      ])
      expect(ingress(w).map((i) => i.ip)).toEqual(["122.112.219.229", NODE_ADDRESS])
      expect(w.kube.get(SEED_KEY)?.metadata?.annotations?.["midokura.com/pinholes"]).toContain('"uniqueId":1')

      w.kube.delete(SEED_KEY)
      expect(yield* w.callsOnce("gone", () => w.kube.get(SEED_KEY) === undefined && sent(w, "DeletedLoadBalancer"))).toEqual([
        "router get TCP/8080",
        "router unmap TCP/8080",
        "firewall delete 1",
        `kube patch ${SEED_KEY}`,
        "kube event DeletedLoadBalancer"
      ])
      expect(w.firewall.pinholes.size).toBe(0)
      expect(w.kube.events.find((e) => e.reason === "DeletedLoadBalancer")?.note).toContain("TCP 8080 (IPv6)")
    }))

  it.effect("renewal: the resync's passes send UpdatePinhole at half the lease, never AddPinhole again", () =>
    Effect.gen(function*() {
      const w = world()
      yield* w.start
      w.kube.create(dualStack())
      yield* w.callsOnce("both published", () => ingress(w).length === 2 && sent(w, "EnsuredLoadBalancer"))
      yield* TestClock.adjust("270 seconds")
      expect((yield* w.callsOnce("resyncs before half-life", () => true)).filter((call) => call.startsWith("firewall"))).toEqual([])
      yield* TestClock.adjust("30 seconds")
      expect((yield* w.callsOnce("renewed", () => w.firewall.journal.includes("firewall update 1"))).filter((call) => call.startsWith("firewall")))
        .toEqual(["firewall update 1"])
    }))

  it.effect("a router reboot: the pinhole added again (and settled), the stale ID never updated", () =>
    Effect.gen(function*() {
      const w = world()
      yield* w.start
      w.kube.create(dualStack())
      yield* w.callsOnce("both published", () => ingress(w).length === 2 && sent(w, "EnsuredLoadBalancer"))
      yield* TestClock.adjust("100 seconds")
      yield* w.firewall.reboot
      w.gateway.reboot({ announce: true })
      const calls = yield* w.callsOnce("the pinhole back", () => w.firewall.pinholes.size === 1)
      // The resyncs of the 100 seconds come first; from the reboot on, exactly this.
      expect(calls.slice(calls.indexOf("firewall reboot"))).toEqual([
        "firewall reboot",
        "router list",
        "router map TCP/8080",
        `kube patch ${SEED_KEY}`,
        "firewall add TCP/8080 -> 1",
        "firewall update 1",
        `kube patch ${SEED_KEY}`,
        "kube event MappingRepaired"
      ])
    }))

  it.effect("IPv6-only: no IPv4 mapping, the pinhole opened, published by the node's IPv6 address alone, no UnsupportedIPFamily", () =>
    Effect.gen(function*() {
      const w = world()
      yield* w.start
      w.kube.create(seedService({}, { ipFamilies: ["IPv6"] }))
      const calls = yield* w.callsOnce("published", () => ingress(w).length === 1 && sent(w, "EnsuredLoadBalancer"))
      expect(calls).toEqual([
        `kube patch ${SEED_KEY}`,
        `kube patch ${SEED_KEY}`,
        "firewall add TCP/8080 -> 1",
        `kube patch ${SEED_KEY}`,
        `kube status ${SEED_KEY}`,
        "kube event EnsuredLoadBalancer"
      ])
      expect(ingress(w)).toEqual([{ ip: NODE_ADDRESS, ipMode: "VIP", ports: [{ port: 8080, protocol: "TCP" }] }])
      expect(w.kube.events.map((e) => e.reason)).not.toContain("UnsupportedIPFamily")
    }))

  it.effect("a controller built without a firewall: the IPv4 part as ever, one IPv6NotPublished", () =>
    Effect.gen(function*() {
      const w = world({ firewall: false })
      yield* w.start
      w.kube.create(dualStack())
      yield* w.callsOnce("published", () => ingress(w).length === 1 && sent(w, "IPv6NotPublished"))
      expect(ingress(w).map((i) => i.ip)).toEqual(["122.112.219.229"])
      expect(w.kube.get(SEED_KEY)?.metadata?.finalizers).toEqual([FINALIZER])
      expect(w.kube.events.filter((e) => e.reason === "IPv6NotPublished").map((e) => e.note)).toEqual([
        "TCP 8080 (IPv6) not opened: IPv6 pinholes are not configured in this controller"
      ])
    }))
})
