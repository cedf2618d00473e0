/**
 * A namespace user edits their own Service as an attacker would: a record copied from another
 * namespace's Service, a record pointing at another Service's nodePort, an old record of their
 * own replayed, garbage. The other Service's mapping is never touched, the attempt is named in
 * an `InvalidRecord` Warning, and nothing cluster-wide is switched off. Also: records of earlier
 * versions (unsigned) are migrated, and a namespace's quota of mappings.
 */
import { describe, expect, it } from "@effect/vitest"
import type { Service } from "../../src/kube/objects.ts"
import { Duration, Effect } from "effect"
import { TestClock } from "effect/testing"
import { ownerOf, recordAnnotations, type RecordedMapping, writeRecord } from "../../src/controller/MappingRecord.ts"
import { MAPPINGS_ANNOTATION, MAPPINGS_SIGNATURE_ANNOTATION } from "../../src/controller/ServiceSpec.ts"
import { reasons, seedService, settle, setup, until, untilEvents } from "../support/controllerHarness.ts"
import { recordOf, testRecordKeyService, trustedRecord } from "../support/records.ts"
import { PROD_KEY, prodWeb, TENANT_KEY, tenantX, withAnnotations } from "../support/tenants.ts"

const record = (service: Service | undefined) => service?.metadata?.annotations?.[MAPPINGS_ANNOTATION]

describe("A tenant's edits to its own Service never reach another Service's mapping", () => {
  const both = (backend: "upnp-igd" | "nat-pmp" = "upnp-igd") =>
    Effect.gen(function*() {
      const world = setup({}, { protocol: backend })
      yield* world.start
      world.kube.create(prodWeb(backend))
      world.kube.create(tenantX(backend))
      yield* until("both mapped", () =>
        world.gateway.table.has("TCP/443") && world.gateway.table.has("TCP/8080") &&
        trustedRecord(world.kube.get(TENANT_KEY)).length === 1)
      return world
    })

  it.effect("UPnP: prod/web's record and signature copied into tenant/x, then tenant/x deleted", () =>
    Effect.gen(function*() {
      const { gateway, kube } = yield* both()
      const prod = kube.get(PROD_KEY)!
      kube.update(
        TENANT_KEY,
        withAnnotations({
          [MAPPINGS_ANNOTATION]: record(prod)!,
          [MAPPINGS_SIGNATURE_ANNOTATION]: prod.metadata!.annotations![MAPPINGS_SIGNATURE_ANNOTATION]!
        })
      )
      yield* untilEvents(kube, "InvalidRecord")
      const warning = kube.events.find((event) => event.reason === "InvalidRecord")!
      expect(warning.type).toBe("Warning")
      expect(warning.regarding.name).toBe("x")
      expect(warning.note).toContain('"kubernetes/prod/web/p"')
      // The forged entry is dropped from the tenant's record, which is signed again.
      yield* until("record rewritten", () => recordOf(kube.get(TENANT_KEY)).refused.length === 0)
      expect(trustedRecord(kube.get(TENANT_KEY)).map((m) => m.externalPort)).toEqual([8080])

      kube.delete(TENANT_KEY)
      yield* until("tenant/x gone", () => kube.get(TENANT_KEY) === undefined)
      expect(gateway.calls).not.toContain("unmap TCP/443")
      expect(gateway.table.get("TCP/443")?.description).toBe("kubernetes/prod/web/p")
      expect(gateway.table.has("TCP/8080")).toBe(false)
    }))

  it.effect("UPnP: an unsigned entry naming prod/web's port and description, then tenant/x deleted", () =>
    Effect.gen(function*() {
      const { gateway, kube } = yield* both()
      const forged: RecordedMapping = { ...trustedRecord(kube.get(PROD_KEY))[0]! }
      kube.update(
        TENANT_KEY,
        withAnnotations({ [MAPPINGS_ANNOTATION]: writeRecord([...trustedRecord(kube.get(TENANT_KEY)), forged]) })
      )
      yield* untilEvents(kube, "InvalidRecord")
      kube.delete(TENANT_KEY)
      yield* until("tenant/x gone", () => kube.get(TENANT_KEY) === undefined)
      expect(gateway.calls).not.toContain("unmap TCP/443")
      expect(gateway.table.get("TCP/443")?.description).toBe("kubernetes/prod/web/p")
    }))

  it.effect("NAT-PMP: a record entry pointing at prod/web's nodePort deletes nothing (it deletes by internal port)", () =>
    Effect.gen(function*() {
      const { gateway, kube } = yield* both("nat-pmp")
      const own = trustedRecord(kube.get(TENANT_KEY))[0]!
      // Same external port as its own, but prod/web's nodePort: a delete would take prod/web's mapping.
      const pointed: RecordedMapping = { ...own, externalPort: 9999, internalPort: 30443 }
      kube.update(TENANT_KEY, withAnnotations({ [MAPPINGS_ANNOTATION]: writeRecord([own, pointed]) }))
      yield* untilEvents(kube, "InvalidRecord")
      expect(kube.events.find((event) => event.reason === "InvalidRecord")!.note).toContain(":30443")
      kube.delete(TENANT_KEY)
      yield* until("tenant/x gone", () => kube.get(TENANT_KEY) === undefined)
      expect(gateway.table.get("TCP/443")).toMatchObject({ internalPort: 30443 })
      expect(gateway.calls.filter((call) => call.startsWith("unmap"))).toEqual(["unmap TCP/8080"])
    }))

  it.effect("NAT-PMP: a genuinely signed old record whose nodePort is now prod/web's deletes nothing", () =>
    Effect.gen(function*() {
      const { gateway, kube } = yield* both("nat-pmp")
      // Once, tenant/x held TCP 9999 to nodePort 30443; since then prod/web got that nodePort.
      // The tenant replays the record the controller signed back then.
      const tenant = kube.get(TENANT_KEY)!
      const old: RecordedMapping = { ...trustedRecord(tenant)[0]!, externalPort: 9999, internalPort: 30443 }
      kube.update(TENANT_KEY, withAnnotations(recordAnnotations(tenant, [...trustedRecord(tenant), old], testRecordKeyService)))
      yield* settle
      kube.delete(TENANT_KEY)
      yield* until("tenant/x gone", () => kube.get(TENANT_KEY) === undefined)
      expect(gateway.table.get("TCP/443")).toMatchObject({ internalPort: 30443 })
      expect(gateway.calls.filter((call) => call.startsWith("unmap"))).toEqual(["unmap TCP/8080"])
    }))

  it.effect("a record signed for an earlier Service of the same name is not believed", () =>
    Effect.gen(function*() {
      const { gateway, kube } = yield* both()
      const prod = kube.get(PROD_KEY)!
      // What the controller signed for prod/web, re-signed as if for tenant/x under another uid.
      const annotations = recordAnnotations(
        { ...prod, metadata: { ...prod.metadata, namespace: "tenant", name: "x", uid: "uid-of-an-earlier-x" } },
        trustedRecord(prod),
        testRecordKeyService
      )
      expect(ownerOf(kube.get(TENANT_KEY)!).uid).toBe("uid-tenant-x")
      kube.update(TENANT_KEY, withAnnotations(annotations))
      yield* untilEvents(kube, "InvalidRecord")
      kube.delete(TENANT_KEY)
      yield* until("tenant/x gone", () => kube.get(TENANT_KEY) === undefined)
      expect(gateway.table.get("TCP/443")?.description).toBe("kubernetes/prod/web/p")
    }))

  it.effect("garbage in any Service's record, even a ClusterIP one, does not stop the orphan sweep", () =>
    Effect.gen(function*() {
      const { gateway, kube } = yield* both()
      kube.update(TENANT_KEY, withAnnotations({ [MAPPINGS_ANNOTATION]: "{not json" }))
      yield* untilEvents(kube, "InvalidRecord")
      // Not ours at all, so never rewritten: its garbage stays.
      kube.create(seedService(
        { name: "plain", namespace: "tenant", annotations: { [MAPPINGS_ANNOTATION]: "{not json" } },
        { type: "ClusterIP" }
      ))
      // An orphan: ours (cluster prefix, a node's address), no Service wants or records it.
      gateway.addForeign({
        externalPort: 7777,
        protocol: "TCP",
        internalClient: "192.168.77.10",
        internalPort: 30777,
        description: "kubernetes/gone/old/http"
      })
      yield* TestClock.adjust(Duration.seconds(31))
      yield* until("orphan swept at the resync", () => !gateway.table.has("TCP/7777"))
      expect(gateway.table.has("TCP/443")).toBe(true)
      expect(gateway.table.has("TCP/8080")).toBe(true)
    }))
})

/** What an earlier version left for the seed's Service: the mapping, a finalizer, an unsigned record. */
const leftByEarlierVersion = (
  backend: "upnp-igd" | "nat-pmp",
  gateway: ReturnType<typeof setup>["gateway"],
  kube: ReturnType<typeof setup>["kube"]
): RecordedMapping => {
  const legacy: RecordedMapping = {
    backend,
    gateway: backend === "upnp-igd" ? "http://192.168.77.1:49536/ctl/IPConn" : "192.168.77.1:5351",
    protocol: "TCP",
    externalPort: 8080,
    internalClient: "192.168.77.10",
    internalPort: 30000,
    description: "kubernetes/default/http-nginx-service/http"
  }
  gateway.addForeign({ ...legacy, leaseDuration: 3000 })
  kube.create(seedService({
    finalizers: ["midokura.com/load-balancer-cleanup"],
    annotations: { "midokura.com/load-balancer-type": backend, [MAPPINGS_ANNOTATION]: writeRecord([legacy]) }
  }))
  return legacy
}

describe("Records written by an earlier version (no signature) are migrated", () => {
  it.effect("the Service's own entries are kept, signed, and still cleaned up", () =>
    Effect.gen(function*() {
      const { gateway, kube, start } = setup()
      const legacy = leftByEarlierVersion("upnp-igd", gateway, kube)
      yield* start
      yield* until("signed", () => kube.get("default/http-nginx-service")?.metadata?.annotations?.[MAPPINGS_SIGNATURE_ANNOTATION] !== undefined)
      expect(recordOf(kube.get("default/http-nginx-service"))).toMatchObject({ refused: [], stale: false })
      expect(trustedRecord(kube.get("default/http-nginx-service"))).toEqual([legacy])
      // The status is written in the same pass, after any condition of the record is announced.
      yield* untilEvents(kube, "EnsuredLoadBalancer")
      expect(reasons(kube)).not.toContain("InvalidRecord")
      kube.delete("default/http-nginx-service")
      yield* until("gone", () => kube.get("default/http-nginx-service") === undefined)
      expect(gateway.table.size).toBe(0)
    }))

  it.effect("NAT-PMP: a Service deleted before the upgrade is cleaned up from its unsigned record", () =>
    Effect.gen(function*() {
      const { gateway, kube, start } = setup({}, { protocol: "nat-pmp" })
      leftByEarlierVersion("nat-pmp", gateway, kube)
      kube.delete("default/http-nginx-service")
      yield* start
      yield* until("gone", () => kube.get("default/http-nginx-service") === undefined)
      expect(gateway.calls).toContain("unmap TCP/8080")
      expect(gateway.table.size).toBe(0)
    }))
})

describe("A namespace's quota of router mappings", () => {
  it.effect("older Services first; the rest get QuotaExceeded, and their turn when a Service goes", () =>
    Effect.gen(function*() {
      const { gateway, kube, start } = setup({ maxMappingsPerNamespace: 2 })
      yield* start
      const service = (name: string, day: number, ports: ReadonlyArray<number>) =>
        seedService(
          { name, creationTimestamp: new Date(`2026-01-0${day}T00:00:00Z`) },
          { ports: ports.map((port) => ({ name: `p${port}`, port, nodePort: 30000 + port % 1000, protocol: "TCP" })) }
        )
      kube.create(service("first", 1, [8001, 8002]))
      kube.create(service("second", 2, [8003]))
      kube.create(seedService({ name: "elsewhere", namespace: "other" }, {
        ports: [{ name: "p", port: 8004, nodePort: 30004, protocol: "TCP" }]
      }))
      yield* until("first and elsewhere mapped", () =>
        gateway.table.has("TCP/8001") && gateway.table.has("TCP/8002") && gateway.table.has("TCP/8004"))
      yield* until("second refused in its status", () =>
        kube.get("default/second")?.status?.loadBalancer?.ingress?.[0]?.ports?.[0]?.error === "midokura.com/QuotaExceeded")
      expect(gateway.table.has("TCP/8003")).toBe(false)
      yield* untilEvents(kube, "QuotaExceeded")
      expect(kube.events.find((event) => event.reason === "QuotaExceeded")!.note).toContain("quota of 2")

      kube.delete("default/first")
      yield* until("second mapped once first is gone", () => gateway.table.has("TCP/8003"))
    }))
})
