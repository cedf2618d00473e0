/**
 * README's "Guarantees", one scenario each: the whole controller against the in-memory
 * apiserver and router, which append every call to one shared log (`kube patch default/web`,
 * `router map TCP/8080`), and each test asserts the exact order of the calls its guarantee is
 * about. The router's probes (`status`, `externalAddress`) run on their own clock and are left
 * out of the sequences.
 */
import { describe, expect, it } from "@effect/vitest"
import type { Service } from "../../src/kube/objects.ts"
import { Context, Duration, Effect } from "effect"
import { TestClock } from "effect/testing"
import { Controller } from "../../src/controller/Controller.ts"
import { recordAnnotations, type RecordedMapping } from "../../src/controller/MappingRecord.ts"
import { Routers } from "../../src/controller/Routers.ts"
import { FINALIZER, MAPPINGS_ANNOTATION, MAPPINGS_SIGNATURE_ANNOTATION } from "../../src/controller/ServiceSpec.ts"
import { journalReader } from "../support/journal.ts"
import { controllerOver, firstPassCalls, runUntilRecorded, SEED_KEY, seedService, settle, setup, until } from "../support/controllerHarness.ts"
import { testRecordKeyService, trustedRecord } from "../support/records.ts"
import { PROD_KEY, prodWeb, TENANT_KEY, tenantX, withAnnotations } from "../support/tenants.ts"

/** A controller over one router, whose calls and the apiserver's land in one log. */
const world = (...args: Parameters<typeof setup>) => {
  const journal: Array<string> = []
  const fakes = setup(args[0] ?? {}, { ...args[1], journal })
  const { calls, skip } = journalReader(journal)
  return {
    ...fakes,
    journal,
    /** Starts the controller and waits for its first full pass; the log starts after it. */
    started: Effect.gen(function*() {
      const controller = Context.get(yield* fakes.start, Controller)
      yield* settle
      expect((yield* controller.health).initialPassDone).toBe(true)
      yield* settle
      skip()
    }),
    /**
     * Creates the run's first Service and waits until its status is published and its Events
     * are out; the next look at the calls starts after.
     */
    publish: (service: Service) =>
      Effect.gen(function*() {
        const key = `${service.metadata?.namespace ?? "default"}/${service.metadata?.name}`
        fakes.kube.create(service)
        yield* until(`${key} published`, () => published(fakes.kube, key)() && sent(fakes.kube, "EnsuredLoadBalancer"))
        yield* settle
        skip()
      }),
    /** The calls since the last look, probes left out; the next look starts after them. */
    calls,
    /** Waits until the condition holds and the controller has settled; then the calls since the last look. */
    callsOnce: (description: string, condition: () => boolean) =>
      until(description, condition).pipe(Effect.andThen(settle), Effect.andThen(Effect.sync(calls)))
  }
}

/** Whether `count` Events of this reason have been sent. */
const sent = (kube: ReturnType<typeof setup>["kube"], reason: string, count = 1) =>
  kube.events.filter((event) => event.reason === reason).length >= count

/** The error the Service's status shows on its first port. */
const portError = (kube: ReturnType<typeof setup>["kube"], key: string) =>
  kube.get(key)?.status?.loadBalancer?.ingress?.[0]?.ports?.[0]?.error

const published = (kube: ReturnType<typeof setup>["kube"], key: string) => () =>
  kube.get(key)?.status?.loadBalancer?.ingress?.[0]?.ip !== undefined

describe("Guarantees", () => {
  it.effect("nothing is leaked: record and finalizer before the router; on delete the mapping, then the finalizer", () =>
    Effect.gen(function*() {
      const { callsOnce, gateway, kube, started } = world()
      yield* started
      kube.create(seedService())
      expect(yield* callsOnce("published", () => published(kube, SEED_KEY)() && sent(kube, "EnsuredLoadBalancer"))).toEqual(
        firstPassCalls(SEED_KEY)
      )
      kube.delete(SEED_KEY)
      expect(yield* callsOnce("gone", () => kube.get(SEED_KEY) === undefined && sent(kube, "DeletedLoadBalancer"))).toEqual([
        "router get TCP/8080",
        "router unmap TCP/8080",
        `kube patch ${SEED_KEY}`,
        "kube event DeletedLoadBalancer"
      ])
      expect(gateway.table.size).toBe(0)
    }))

  it.effect("nothing is leaked: a controller killed before its cleanup leaves what the next one undoes first", () =>
    Effect.gen(function*() {
      const first = world()
      yield* runUntilRecorded(first.started, first.kube, first.gateway, seedService())
      // Deleted while no controller runs: the finalizer holds the Service, and its record.
      first.kube.delete(SEED_KEY)
      expect(first.kube.get(SEED_KEY)?.metadata?.finalizers).toEqual([FINALIZER])
      first.calls()
      yield* controllerOver(first.kube, Routers.layerTest("upnp-igd", first.gateway.layer))
      expect(yield* first.callsOnce("gone", () => first.kube.get(SEED_KEY) === undefined && sent(first.kube, "DeletedLoadBalancer"))).toEqual([
        "router list",
        "router get TCP/8080",
        "router unmap TCP/8080",
        `kube patch ${SEED_KEY}`,
        "kube event DeletedLoadBalancer"
      ])
      expect(first.gateway.table.size).toBe(0)
    }))

  it.effect("nothing is stolen: a port another program on the node holds is read first, reported, never mapped", () =>
    Effect.gen(function*() {
      const { callsOnce, gateway, kube, started } = world()
      // miniupnpd would silently overwrite this one: same LAN host, another program.
      gateway.addForeign({ externalPort: 8080, protocol: "TCP", internalClient: "192.168.77.10", description: "syncthing" })
      yield* started
      kube.create(seedService())
      const port = () => portError(kube, SEED_KEY) === "midokura.com/PortConflict" && sent(kube, "PortConflict")
      expect(yield* callsOnce("a port error", port)).toEqual([
        "router get TCP/8080",
        `kube patch ${SEED_KEY}`,
        `kube status ${SEED_KEY}`,
        "kube event PortConflict"
      ])
      expect(gateway.table.get("TCP/8080")).toMatchObject({ internalClient: "192.168.77.10", description: "syncthing" })
    }))

  it.effect("tenants cannot reach each other's mappings: a record copied from another namespace's Service, then deleted", () =>
    Effect.gen(function*() {
      const { callsOnce, gateway, kube, started } = world({ workers: 1 })
      yield* started
      kube.create(prodWeb("upnp-igd"))
      kube.create(tenantX("upnp-igd"))
      yield* callsOnce("both published", () => published(kube, PROD_KEY)() && published(kube, TENANT_KEY)())
      const prod = kube.get(PROD_KEY)!
      // The tenant pastes prod/web's signed record into its own Service, and deletes it.
      kube.update(TENANT_KEY, withAnnotations({
        [MAPPINGS_ANNOTATION]: prod.metadata!.annotations![MAPPINGS_ANNOTATION]!,
        [MAPPINGS_SIGNATURE_ANNOTATION]: prod.metadata!.annotations![MAPPINGS_SIGNATURE_ANNOTATION]!
      }))
      kube.delete(TENANT_KEY)
      // Its own mapping is found by its own description; prod/web's is never asked about.
      expect(yield* callsOnce("tenant/x gone", () => kube.get(TENANT_KEY) === undefined && sent(kube, "DeletedLoadBalancer"))).toEqual([
        "router list",
        "router get TCP/8080",
        "router unmap TCP/8080",
        `kube patch ${TENANT_KEY}`,
        "kube event InvalidRecord",
        "kube event DeletedLoadBalancer"
      ])
      expect(gateway.table.get("TCP/443")?.description).toBe("kubernetes/prod/web/p")
    }))

  it.effect("tenants cannot reach each other's mappings: NAT-PMP never deletes by a nodePort another Service holds", () =>
    Effect.gen(function*() {
      const { callsOnce, gateway, kube, started } = world({ workers: 1 }, { protocol: "nat-pmp" })
      yield* started
      kube.create(prodWeb("nat-pmp"))
      kube.create(tenantX("nat-pmp"))
      yield* callsOnce("both published", () => published(kube, PROD_KEY)() && published(kube, TENANT_KEY)())
      // Once, tenant/x held TCP 9999 to nodePort 30443, prod/web's now; it replays the record
      // the controller signed for it then. A live pass lets the entry go from the record, unused.
      const tenant = kube.get(TENANT_KEY)!
      const old: RecordedMapping = { ...trustedRecord(tenant)[0]!, externalPort: 9999, internalPort: 30443 }
      const replayed = recordAnnotations(tenant, [...trustedRecord(tenant), old], testRecordKeyService)
      kube.update(TENANT_KEY, withAnnotations(replayed))
      expect(yield* callsOnce("the entry dropped", () => trustedRecord(kube.get(TENANT_KEY)).length === 1))
        .toEqual([`kube patch ${TENANT_KEY}`])
      // Replayed again, and the Service deleted at once: the cleanup leaves it alone too.
      kube.update(TENANT_KEY, withAnnotations(replayed))
      kube.delete(TENANT_KEY)
      expect(yield* callsOnce("tenant/x gone", () => kube.get(TENANT_KEY) === undefined && sent(kube, "DeletedLoadBalancer"))).toEqual([
        "router unmap TCP/8080",
        `kube patch ${TENANT_KEY}`,
        "kube event DeletedLoadBalancer"
      ])
      expect(gateway.table.get("TCP/443")).toMatchObject({ internalPort: 30443 })
    }))

  it.effect("a namespace cannot take the whole router: past its quota, QuotaExceeded until a Service goes", () =>
    Effect.gen(function*() {
      const { callsOnce, gateway, kube, publish, started } = world({ workers: 1, maxMappingsPerNamespace: 1 })
      yield* started
      yield* publish(seedService({ name: "first" }, { ports: [{ name: "p", port: 8001, nodePort: 30001, protocol: "TCP" }] }))
      kube.create(seedService(
        { name: "second", creationTimestamp: new Date("2026-01-02T00:00:00Z") },
        { ports: [{ name: "p", port: 8002, nodePort: 30002, protocol: "TCP" }] }
      ))
      const refused = () => portError(kube, "default/second") === "midokura.com/QuotaExceeded" && sent(kube, "QuotaExceeded")
      // A change in the namespace requeues its other Services: first's port is read, and left be.
      expect(yield* callsOnce("second refused", refused)).toEqual([
        "kube patch default/second",
        "kube status default/second",
        "router get TCP/8001",
        "kube event QuotaExceeded"
      ])
      kube.delete("default/first")
      const mapped = () => gateway.table.has("TCP/8002") && published(kube, "default/second")() && sent(kube, "EnsuredLoadBalancer", 2)
      expect(yield* callsOnce("second mapped", mapped)).toEqual([
        "router get TCP/8001",
        "router unmap TCP/8001",
        "kube patch default/first",
        "router get TCP/8002",
        "kube patch default/second",
        "router map TCP/8002",
        "kube status default/second",
        "kube event DeletedLoadBalancer",
        "kube event EnsuredLoadBalancer"
      ])
    }))

  it.effect("two Services, one port: the older one gets it, whichever came first; the other when it goes", () =>
    Effect.gen(function*() {
      const { callsOnce, gateway, kube, started } = world({ workers: 1 })
      yield* started
      // The newer Service is seen first.
      kube.create(seedService({ name: "newer", creationTimestamp: new Date("2026-02-01T00:00:00Z") }, {
        ports: [{ name: "http", port: 8080, nodePort: 30500, protocol: "TCP" }]
      }))
      kube.create(seedService({ name: "older", creationTimestamp: new Date("2026-01-01T00:00:00Z") }))
      const decided = () =>
        published(kube, "default/older")() && portError(kube, "default/newer") === "midokura.com/PortConflict" &&
        sent(kube, "EnsuredLoadBalancer") && sent(kube, "PortConflict")
      expect(yield* callsOnce("older published, newer refused", decided)).toEqual([
        "kube patch default/newer",
        "kube status default/newer",
        "router get TCP/8080",
        "kube patch default/older",
        "router map TCP/8080",
        "kube status default/older",
        "kube event PortConflict",
        // older's "ensuring", still unsent once it is ensured, says nothing more.
        "kube event EnsuredLoadBalancer"
      ])
      expect(gateway.table.get("TCP/8080")?.description).toBe("kubernetes/default/older/http")
      kube.delete("default/older")
      const handedOver = () =>
        gateway.table.get("TCP/8080")?.description === "kubernetes/default/newer/http" && sent(kube, "EnsuredLoadBalancer", 2)
      expect(yield* callsOnce("handed over", handedOver)).toEqual([
        "router get TCP/8080",
        "router unmap TCP/8080",
        "kube patch default/older",
        "router get TCP/8080",
        "kube patch default/newer",
        "router map TCP/8080",
        "kube status default/newer",
        "kube event DeletedLoadBalancer",
        "kube event EnsuredLoadBalancer"
      ])
    }))

  it.effect("drift is repaired: a reboot's announcement starts a full pass that maps everything again at once", () =>
    Effect.gen(function*() {
      const { callsOnce, gateway, kube, publish, started } = world({ resyncInterval: Duration.minutes(30) })
      yield* started
      yield* publish(seedService())
      gateway.reboot({ announce: true })
      expect(yield* callsOnce("mapped again", () => gateway.table.size === 1 && sent(kube, "MappingRepaired"))).toEqual([
        "router list",
        "router map TCP/8080",
        "kube event MappingRepaired"
      ])
    }))

  it.effect("drift is repaired: the resync maps what went missing and deletes this cluster's orphans", () =>
    Effect.gen(function*() {
      const { callsOnce, gateway, kube, publish, started } = world({ resyncInterval: Duration.seconds(30) })
      yield* started
      yield* publish(seedService())
      // Lost without a reboot, and a mapping of this cluster that no Service wants any more.
      gateway.table.delete("TCP/8080")
      gateway.addForeign({ externalPort: 7000, protocol: "TCP", internalClient: "192.168.77.10", description: "kubernetes/default/gone/http" })
      yield* TestClock.adjust(Duration.seconds(30))
      const repaired = () => gateway.table.has("TCP/8080") && !gateway.table.has("TCP/7000") && sent(kube, "MappingRepaired")
      expect(yield* callsOnce("repaired and swept", repaired)).toEqual([
        "router list",
        "router unmap TCP/7000",
        "router map TCP/8080",
        "kube event MappingRepaired"
      ])
    }))

  it.effect("leases: a Service's own lease, renewed at half-life; one out of range gets the default and a Warning", () =>
    Effect.gen(function*() {
      const { calls, callsOnce, gateway, kube, publish, started } = world({ resyncInterval: Duration.minutes(30) })
      yield* started
      yield* publish(seedService({ annotations: { "midokura.com/load-balancer-type": "upnp-igd", "midokura.com/mapping-lease": "2m" } }))
      expect(gateway.table.get("TCP/8080")?.leaseDuration).toBe(120)
      yield* TestClock.adjust(Duration.seconds(59))
      yield* settle
      expect(calls()).toEqual([])
      yield* TestClock.adjust(Duration.seconds(1))
      expect(yield* callsOnce("renewed", () => gateway.calls.filter((call) => call === "map TCP/8080").length === 2))
        .toEqual(["router get TCP/8080", "router map TCP/8080"])

      kube.create(seedService(
        { name: "brief", annotations: { "midokura.com/load-balancer-type": "upnp-igd", "midokura.com/mapping-lease": "1s" } },
        { ports: [{ name: "p", port: 9090, nodePort: 30090, protocol: "TCP" }] }
      ))
      const brief = () => published(kube, "default/brief")() && sent(kube, "InvalidAnnotation") && sent(kube, "EnsuredLoadBalancer", 2)
      expect(yield* callsOnce("brief published", brief)).toEqual([
        "router get TCP/9090",
        "kube patch default/brief",
        "router map TCP/9090",
        "kube status default/brief",
        "kube event InvalidAnnotation",
        "kube event EnsuredLoadBalancer"
      ])
      expect(gateway.table.get("TCP/9090")?.leaseDuration).toBe(3600)
      expect(kube.events.find((event) => event.reason === "InvalidAnnotation")?.note).toContain("1s")
    }))

  it.effect("loadBalancerSourceRanges cannot be enforced by a port mapping: a Warning says so", () =>
    Effect.gen(function*() {
      const { callsOnce, kube, started } = world()
      yield* started
      kube.create(seedService({}, { loadBalancerSourceRanges: ["203.0.113.0/24"] }))
      const warned = () => published(kube, SEED_KEY)() && sent(kube, "LoadBalancerSourceRangesIgnored") && sent(kube, "EnsuredLoadBalancer")
      expect(yield* callsOnce("published, and warned", warned)).toEqual([
        "router get TCP/8080",
        `kube patch ${SEED_KEY}`,
        "router map TCP/8080",
        `kube status ${SEED_KEY}`,
        "kube event LoadBalancerSourceRangesIgnored",
        "kube event EnsuredLoadBalancer"
      ])
      expect(kube.events.find((event) => event.reason === "LoadBalancerSourceRangesIgnored")?.type).toBe("Warning")
    }))
})

