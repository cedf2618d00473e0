/**
 * The IPv6 half of a pass: the plan as plain data, and the exact calls the pass makes against
 * the in-memory firewall (one journal with the record writes), for each guarantee of
 * docs/architecture.md's "IPv6 pinholes": the record before AddPinhole, renewal by
 * UpdatePinhole only, deletion, and no Update or Delete of a UniqueID after a reboot.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect, Metric } from "effect"
import { TestClock } from "effect/testing"
import type { FirewallRoute, FirewallView } from "../../src/gateway/Firewall.ts"
import type { Service } from "../../src/kube/objects.ts"
import {
  type PinholeClaims,
  type PinholeOutcome,
  pinholePorts,
  type PinholePort,
  planPinholes
} from "../../src/controller/pinholePlan.ts"
import {
  pinholeAnnotations,
  PINHOLES_ANNOTATION,
  PINHOLES_SIGNATURE_ANNOTATION,
  readPinholes,
  type RecordedPinhole
} from "../../src/controller/PinholeRecord.ts"
import { ensurePinholes, removePinholes } from "../../src/controller/pinholes.ts"
import * as metrics from "../../src/controller/metrics.ts"
import { recordAnnotations } from "../../src/controller/MappingRecord.ts"
import { CONTROL_URL, makeInMemoryFirewall, NODE_ADDRESS, PCP_ROUTER } from "../support/InMemoryFirewall.ts"
import { testRecordCheck, testRecordKeyService } from "../support/records.ts"

const LEASE = 600
const http: PinholePort = { portName: "http", protocol: "TCP", port: 8080 }
const dns: PinholePort = { portName: "dns", protocol: "UDP", port: 5353 }
const upnpRoute = (bootedAt: number | undefined): FirewallRoute => ({ router: CONTROL_URL, protocol: "upnp-igd", bootedAt, opensLowPorts: false })
const pcpRoute: FirewallRoute = { router: PCP_ROUTER, protocol: "pcp", bootedAt: 1_000, opensLowPorts: true }
const booted = (bootedAt: number | undefined): FirewallView => ({ nodeAddress: NODE_ADDRESS, routes: [upnpRoute(bootedAt)] })
const view: FirewallView = booted(1_000)
const entry = (overrides: Partial<RecordedPinhole> = {}): RecordedPinhole => ({
  protocol: "TCP",
  port: 8080,
  internalClient: NODE_ADDRESS,
  router: CONTROL_URL,
  uniqueId: 3,
  bootedAt: 1_000,
  ...overrides
})
/** Claims that grant `ports` (withhold `withheld`; `heldElsewhere`: asked for by another Service too). */
const claims = (
  ports: ReadonlyArray<PinholePort>,
  options: { readonly withheld?: ReadonlyArray<PinholeOutcome>; readonly heldElsewhere?: ReadonlyArray<string> } = {}
): PinholeClaims => ({ granted: ports, withheld: options.withheld ?? [], heldElsewhere: new Set(options.heldElsewhere ?? []) })
const plan = (
  record: ReadonlyArray<RecordedPinhole>,
  { ports = [http], ...overrides }: Partial<Parameters<typeof planPinholes>[0]> & { readonly ports?: ReadonlyArray<PinholePort> } = {}
) =>
  planPinholes({
    claims: claims(ports),
    record,
    view,
    now: 10_000,
    leaseSeconds: LEASE,
    renewedAt: new Map([["TCP/8080", 9_000]]),
    ...overrides
  })
const tags = (steps: ReadonlyArray<{ readonly _tag: string }>) => steps.map((step) => step._tag)

describe("which ports a Service opens over IPv6", () => {
  const service = (ipFamilies: ReadonlyArray<string> | undefined): Service => ({
    metadata: { name: "web", namespace: "shop" },
    spec: {
      type: "LoadBalancer",
      ...(ipFamilies === undefined ? {} : { ipFamilies }),
      ports: [{ name: "http", port: 8080, protocol: "TCP" }, { port: 53, protocol: "UDP" }, { name: "sc", port: 9, protocol: "SCTP" }]
    }
  })
  it("dual-stack and IPv6-only: every TCP and UDP port, at the Service port", () => {
    const expected = [{ portName: "http", protocol: "TCP", port: 8080 }, { portName: "53", protocol: "UDP", port: 53 }]
    expect(pinholePorts(service(["IPv4", "IPv6"]))).toEqual(expected)
    expect(pinholePorts(service(["IPv6"]))).toEqual(expected)
  })
  it("IPv4 only, or no families: none", () => {
    expect(pinholePorts(service(["IPv4"]))).toEqual([])
    expect(pinholePorts(service(undefined))).toEqual([])
  })
})

describe("planPinholes", () => {
  it("a new port: recorded without an ID, then added (no settling update)", () => {
    const p = plan([])
    expect(p.steps).toEqual([{ _tag: "Add", port: http, router: CONTROL_URL, settle: false }])
    expect(p.recordBefore).toEqual([{ protocol: "TCP", port: 8080, internalClient: NODE_ADDRESS, router: CONTROL_URL }])
  })
  it("a pinhole renewed less than half a lease ago: no call", () => {
    const p = plan([entry()])
    expect(p.steps).toEqual([])
    expect(p.open).toEqual([http])
    expect(p.recordBefore).toEqual([entry()])
  })
  it("past half the lease, or never renewed by this process: UpdatePinhole of the recorded ID", () => {
    expect(tags(plan([entry()], { now: 9_000 + (LEASE / 2) * 1000 }).steps)).toEqual(["Renew"])
    expect(plan([entry()], { renewedAt: new Map() }).steps).toEqual([{ _tag: "Renew", port: http, entry: entry() }])
  })
  it("the router rebooted since the ID was recorded: forgotten without a call, added again and settled", () => {
    for (const bootedAt of [1_000 + 3_001, 1_000 - 3_001]) {
      const p = plan([entry()], { view: booted(bootedAt) })
      expect(p.steps).toEqual([{ _tag: "Add", port: http, router: CONTROL_URL, settle: true }])
      expect(p.forgotten).toEqual([entry()])
      expect(p.recordBefore.every((e) => e.uniqueId === undefined)).toBe(true)
    }
    // Within the tolerance (whole-second uptime), the same boot.
    expect(tags(plan([entry()], { view: booted(1_000 + 3_000) }).steps)).toEqual([])
  })
  it("another router or another node address: the ID is not ours to touch", () => {
    expect(plan([entry({ router: "http://[2001:db8:9::1]:5000/ctl" })]).steps).toEqual([
      { _tag: "Add", port: http, router: CONTROL_URL, settle: true }
    ])
    expect(plan([entry({ internalClient: "2001:db8:2::11" })]).forgotten).toHaveLength(1)
  })
  it("a router without uptime: a recorded ID is never updated or deleted, and re-added (then settled) at half-life", () => {
    const blind = booted(undefined)
    expect(plan([entry()], { view: blind }).steps).toEqual([])
    expect(plan([entry()], { view: blind, now: 9_000 + 300_000 }).steps).toEqual([
      { _tag: "Add", port: http, router: CONTROL_URL, settle: true }
    ])
    expect(plan([entry()], { view: blind, ports: [] }).steps).toEqual([])
  })
  it("a port below 1024 is refused without a call, and says why", () => {
    const p = plan([], { ports: [{ portName: "web", protocol: "TCP", port: 80 }] })
    expect(p.steps).toEqual([])
    expect(p.refused).toMatchObject([{ _tag: "Failed", reason: "LowPort", retryable: false }])
    expect(p.refused[0]?._tag === "Failed" && p.refused[0].message).toMatch(/below 1024 over UPnP.*does not answer PCP/)
  })
  it("a port below 1024 goes through PCP when the router answers it; the others stay on UPnP", () => {
    const web: PinholePort = { portName: "web", protocol: "TCP", port: 80 }
    const p = plan([], { ports: [web, http], view: { nodeAddress: NODE_ADDRESS, routes: [upnpRoute(1_000), pcpRoute] } })
    expect(p.refused).toEqual([])
    expect(p.steps).toEqual([
      { _tag: "Add", port: web, router: PCP_ROUTER, settle: false },
      { _tag: "Add", port: http, router: CONTROL_URL, settle: false }
    ])
  })
  it("PCP alone: every port through it; a PCP entry is renewed by its nonce, not an ID", () => {
    const pcpOnly: FirewallView = { nodeAddress: NODE_ADDRESS, routes: [pcpRoute] }
    expect(plan([], { view: pcpOnly }).steps).toEqual([{ _tag: "Add", port: http, router: PCP_ROUTER, settle: false }])
    const held = entry({ router: PCP_ROUTER, nonce: "0123456789abcdef01234567" })
    delete (held as { uniqueId?: number }).uniqueId
    expect(plan([held], { view: pcpOnly, renewedAt: new Map() }).steps).toEqual([{ _tag: "Renew", port: http, entry: held }])
    // Without a handle the add never completed: added again, nothing to renew.
    const pending = { protocol: "TCP" as const, port: 8080, internalClient: NODE_ADDRESS, router: PCP_ROUTER, bootedAt: 1_000 }
    expect(tags(plan([pending], { view: pcpOnly }).steps)).toEqual(["Add"])
  })
  it("a port no longer wanted: deleted when provably ours, else forgotten", () => {
    expect(plan([entry()], { ports: [] }).steps).toEqual([{ _tag: "Delete", entry: entry() }])
    const rebooted = plan([entry()], { ports: [], view: booted(60_000) })
    expect(rebooted.steps).toEqual([])
    expect(rebooted.forgotten).toEqual([entry()])
  })
})

describe("the pinhole record", () => {
  const owner = (annotations: Record<string, string>, uid = "uid-1"): Service => ({
    metadata: { name: "web", namespace: "shop", uid, annotations },
    spec: { type: "LoadBalancer" }
  })
  const signed = (record: ReadonlyArray<RecordedPinhole>, uid = "uid-1") =>
    pinholeAnnotations(owner({}, uid), record, testRecordKeyService) as Record<string, string>
  it("signed for this Service: believed", () => {
    expect(readPinholes(owner(signed([entry()])), testRecordCheck)).toEqual({ trusted: [entry()], refused: undefined })
  })
  it("edited, unsigned, signed for a namesake, or the mappings record's signature: refused whole", () => {
    const good = signed([entry()])
    const edited = { ...good, [PINHOLES_ANNOTATION]: good[PINHOLES_ANNOTATION]!.replace('"uniqueId":3', '"uniqueId":4') }
    const unsigned = { [PINHOLES_ANNOTATION]: good[PINHOLES_ANNOTATION]! }
    const namesake = signed([entry()], "uid-0")
    // The same text signed as a mappings record must not pass for a pinhole record.
    const asMappings = recordAnnotations(owner({}), [], testRecordKeyService)
    const crossed = {
      [PINHOLES_ANNOTATION]: good[PINHOLES_ANNOTATION]!,
      [PINHOLES_SIGNATURE_ANNOTATION]: testRecordKeyService.sign(
        { namespace: "shop", name: "web", uid: "uid-1" },
        good[PINHOLES_ANNOTATION]!
      )
    }
    for (const annotations of [edited, unsigned, namesake, crossed]) {
      const read = readPinholes(owner(annotations), testRecordCheck)
      expect(read.trusted).toEqual([])
      expect(read.refused).toBeDefined()
    }
    expect(Object.keys(asMappings)).not.toContain(PINHOLES_ANNOTATION)
  })
})

/** A Service's IPv6 half over the in-memory firewall, its record writes in the same journal. */
const world = (options: { readonly ports?: ReadonlyArray<PinholePort>; readonly upnp?: boolean; readonly pcp?: boolean } = {}) => {
  const firewall = makeInMemoryFirewall({ leaseSeconds: LEASE })
  firewall.upnp = options.upnp ?? true
  firewall.pcp = options.pcp ?? false
  let record: ReadonlyArray<RecordedPinhole> = []
  let mark = 0
  const writeRecord = (next: ReadonlyArray<RecordedPinhole>) =>
    Effect.sync(() => {
      record = next
      firewall.journal.push(
        `kube write pinholes ${next.map((e) => `${e.protocol}/${e.port}#${e.uniqueId ?? e.nonce?.replace(/^0+/, "n") ?? "?"}`).join(",")}`
      )
    })
  return {
    firewall,
    record: () => record,
    pass: (granted: PinholeClaims | ReadonlyArray<PinholePort> = options.ports ?? [http]) =>
      ensurePinholes(
        { firewall: firewall.service, writeRecord },
        "granted" in granted ? granted : claims(granted),
        { trusted: record, refused: undefined }
      ),
    cleanup: (heldElsewhere: ReadonlyArray<string> = []) => Effect.suspend(() => removePinholes(firewall.service, record, new Set(heldElsewhere))),
    /** The calls since the last look. */
    calls: () => {
      const since = firewall.journal.slice(mark)
      mark = firewall.journal.length
      return since
    }
  }
}

describe("the IPv6 half's calls, in order", () => {
  it.effect("add: the record without an ID, then AddPinhole, then the ID recorded; the node's address published", () =>
    Effect.gen(function*() {
      const w = world({ ports: [http, dns] })
      const result = yield* w.pass()
      expect(w.calls()).toEqual([
        "kube write pinholes TCP/8080#?,UDP/5353#?",
        "firewall add TCP/8080 -> 1",
        "firewall add UDP/5353 -> 2",
        "kube write pinholes TCP/8080#1,UDP/5353#2"
      ])
      expect(result.ingress).toEqual({ ip: NODE_ADDRESS, ports: [{ port: 5353, protocol: "UDP" }, { port: 8080, protocol: "TCP" }] })
      expect(result.failure).toBeUndefined()
      expect(result.renewAfter).toBeDefined()
      // The next pass, before half the lease: nothing at all.
      yield* w.pass()
      expect(w.calls()).toEqual([])
    }))

  it.effect("renewal: UpdatePinhole of the same ID at half-life, never a second AddPinhole, no record write", () =>
    Effect.gen(function*() {
      const w = world()
      yield* w.pass()
      w.calls()
      yield* TestClock.adjust("299 seconds")
      yield* w.pass()
      expect(w.calls()).toEqual([])
      yield* TestClock.adjust("1 second")
      yield* w.pass()
      expect(w.calls()).toEqual(["firewall update 1"])
      yield* TestClock.adjust("300 seconds")
      yield* w.pass()
      expect(w.calls()).toEqual(["firewall update 1"])
      expect(w.firewall.journal.filter((call) => call.startsWith("firewall add"))).toEqual(["firewall add TCP/8080 -> 1"])
    }))

  it.effect("delete: DeletePinhole of the recorded ID, the record emptied", () =>
    Effect.gen(function*() {
      const w = world()
      yield* w.pass()
      w.calls()
      const removal = yield* w.cleanup()
      expect(w.calls()).toEqual(["firewall delete 1"])
      expect(removal.failures).toEqual([])
      expect(w.firewall.pinholes.size).toBe(0)
      // A port dropped from a live Service goes the same way.
      const live = world()
      yield* live.pass([http, dns])
      live.calls()
      yield* live.pass([http])
      expect(live.calls()).toEqual(["firewall delete 2", "kube write pinholes TCP/8080#1"])
    }))

  it.effect("reboot: the stale ID is neither updated nor deleted; the port is added again and settled", () =>
    Effect.gen(function*() {
      const w = world({ ports: [http, dns] })
      yield* w.pass()
      yield* TestClock.adjust("400 seconds")
      yield* w.firewall.reboot
      w.calls()
      const result = yield* w.pass()
      expect(w.calls()).toEqual([
        "kube write pinholes TCP/8080#?,UDP/5353#?",
        "firewall add TCP/8080 -> 1",
        "firewall update 1",
        "firewall add UDP/5353 -> 2",
        "firewall update 2",
        "kube write pinholes TCP/8080#1,UDP/5353#2"
      ])
      expect(result.failure).toBeUndefined()
      // Cleanup after another reboot: no call at all on IDs of an earlier boot.
      yield* TestClock.adjust("10 seconds")
      yield* w.firewall.reboot
      w.calls()
      const removal = yield* w.cleanup()
      expect(w.calls()).toEqual([])
      expect(removal.failures).toEqual([])
    }))

  it.effect("a pinhole gone from the router (402 on renewal): opened again, and said so", () =>
    Effect.gen(function*() {
      const w = world()
      yield* w.pass()
      w.firewall.pinholes.clear()
      yield* TestClock.adjust("300 seconds")
      const repairs = Metric.value(Metric.withAttributes(metrics.driftRepairs, { family: "ipv6" }))
      const before = (yield* repairs).count
      w.calls()
      const result = yield* w.pass()
      expect(w.calls()).toEqual(["firewall update 1 -> 402", "firewall add TCP/8080 -> 2", "firewall update 2", "kube write pinholes TCP/8080#2"])
      expect(result.events.map((e) => e.reason)).toEqual(["MappingRepaired"])
      // Counted as a repair of the IPv6 family.
      expect((yield* repairs).count).toBe(before + 1)
    }))

  it.effect("PCP alone: opened under a nonce, renewed by replacing it (recorded), deleted with the latest one", () =>
    Effect.gen(function*() {
      const w = world({ upnp: false, pcp: true, ports: [{ portName: "web", protocol: "TCP", port: 80 }] })
      const result = yield* w.pass()
      expect(w.calls()).toEqual(["kube write pinholes TCP/80#?", "firewall pcp add TCP/80 -> n1", "kube write pinholes TCP/80#n1"])
      expect(result.ingress).toEqual({ ip: NODE_ADDRESS, ports: [{ port: 80, protocol: "TCP" }] })
      yield* TestClock.adjust("300 seconds")
      yield* w.pass()
      expect(w.calls()).toEqual(["firewall pcp replace TCP/80 -> n2", "kube write pinholes TCP/80#n2"])
      const removal = yield* w.cleanup()
      expect(w.calls()).toEqual(["firewall pcp delete TCP/80"])
      expect(removal.failures).toEqual([])
      expect(w.firewall.pcpPinholes.size).toBe(0)
    }))

  it.effect("auto: a port below 1024 through PCP, the others through UPnP, each deleted through its own route", () =>
    Effect.gen(function*() {
      const w = world({ pcp: true, ports: [{ portName: "web", protocol: "TCP", port: 80 }, http] })
      const result = yield* w.pass()
      expect(w.calls()).toEqual([
        "kube write pinholes TCP/80#?,TCP/8080#?",
        "firewall pcp add TCP/80 -> n1",
        "firewall add TCP/8080 -> 1",
        "kube write pinholes TCP/80#n1,TCP/8080#1"
      ])
      expect(result.ingress?.ports.every((port) => port.error === undefined)).toBe(true)
      yield* w.cleanup()
      expect(w.calls()).toEqual(["firewall pcp delete TCP/80", "firewall delete 1"])
    }))

  it.effect("a router without the firewall service: one IPv6NotPublished condition, no call, no failure", () =>
    Effect.gen(function*() {
      const w = world()
      w.firewall.unavailable = "the router's description lists no WANIPv6FirewallControl:1"
      const result = yield* w.pass()
      expect(w.calls()).toEqual([])
      expect(result.failure).toBeUndefined()
      expect(result.ingress).toBeUndefined()
      expect(result.conditions).toMatchObject([{ type: "Warning", reason: "IPv6NotPublished" }])
      expect(result.conditions[0]?.note).toContain("TCP 8080 (IPv6)")
    }))

  it.effect("a port below 1024: its error in the status, the others opened, no retry", () =>
    Effect.gen(function*() {
      const w = world()
      const result = yield* w.pass([{ portName: "web", protocol: "TCP", port: 80 }, http])
      expect(w.calls()).toEqual(["kube write pinholes TCP/8080#?", "firewall add TCP/8080 -> 1", "kube write pinholes TCP/8080#1"])
      expect(result.ingress?.ports).toEqual([{ port: 80, protocol: "TCP", error: "midokura.com/LowPort" }, { port: 8080, protocol: "TCP" }])
      expect(result.failure).toBeUndefined()
      expect(result.conditions).toMatchObject([{ reason: "IPv6PortRefused" }])
    }))
})
