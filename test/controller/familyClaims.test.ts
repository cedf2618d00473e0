/**
 * Claims and the quota over both families, as plain data: a pinhole's port is contended for
 * by the IPv4 rule (the older Service, then the incumbent) and counted by the one quota, but
 * never against an IPv4 mapping of the same number; what the claims withhold becomes a port
 * error without a call, and a pinhole on a port another Service asks for is never deleted.
 */
import { describe, expect, it } from "@effect/vitest"
import {
  claimantOf,
  type EntryPort,
  ipv4Claims,
  pinholeClaim,
  pinholeClaimKey,
  pinholeClaims
} from "../../src/controller/familyClaims.ts"
import { type PinholePort, planPinholeRemoval, planPinholes } from "../../src/controller/pinholePlan.ts"
import type { RecordedPinhole } from "../../src/controller/PinholeRecord.ts"
import { type Claimant, resolveClaims, resolveQuota, withQuota } from "../../src/controller/planner.ts"
import type { DesiredPort } from "../../src/controller/ServiceSpec.ts"
import type { FirewallView } from "../../src/gateway/Firewall.ts"
import { desiredWeb } from "../support/desired.ts"
import { CONTROL_URL, NODE_ADDRESS } from "../support/InMemoryFirewall.ts"

const mapping = (externalPort: number): DesiredPort => ({
  portName: "http",
  protocol: "TCP",
  externalPort,
  internalPort: 30000 + externalPort % 1000,
  description: `kubernetes/default/web/${externalPort}`
})
const pinhole = (port: number): PinholePort => ({ portName: "http", protocol: "TCP", port })
const claimant = (key: string, createdAt: number, ports: ReadonlyArray<EntryPort>): Claimant<EntryPort> => ({ key, createdAt, ports })

describe("claims across families", () => {
  it("two Services' pinholes on one port: the older holds it, the younger's is contested", () => {
    const older = claimant("prod/web", 1, [pinholeClaim(pinhole(8080))])
    const younger = claimant("tenant/x", 2, [pinholeClaim(pinhole(8080))])
    const claims = resolveClaims([younger, older])
    expect(claims.get("prod/web")!.granted).toEqual([pinholeClaim(pinhole(8080))])
    expect(claims.get("tenant/x")!.contested).toEqual([{ port: pinholeClaim(pinhole(8080)), holder: "prod/web" }])
  })

  it("a pinhole and an IPv4 mapping of the same number do not contend: the families are apart", () => {
    const v4 = claimant("prod/web", 1, [mapping(8080)])
    const v6 = claimant("tenant/x", 2, [pinholeClaim(pinhole(8080))])
    const claims = resolveClaims([v4, v6])
    expect(claims.get("prod/web")!.granted).toHaveLength(1)
    expect(claims.get("tenant/x")!.granted).toHaveLength(1)
    expect(pinholeClaimKey(pinhole(8080))).toBe("TCP/8080/IPv6")
  })

  it("among equally old Services, the one whose pinhole record holds the port keeps it", () => {
    const incumbent = claimant("tenant/z", 5, [pinholeClaim(pinhole(8080))])
    const newcomer = claimant("tenant/a", 5, [pinholeClaim(pinhole(8080))])
    const holding = (key: string) => new Set(key === "tenant/z" ? [pinholeClaimKey(pinhole(8080))] : [])
    expect(resolveClaims([newcomer, incumbent], holding).get("tenant/z")!.granted).toHaveLength(1)
    // An IPv4 record of the same number holds nothing over IPv6.
    expect(resolveClaims([newcomer, incumbent], (key) => new Set(key === "tenant/z" ? ["TCP/8080"] : [])).get("tenant/a")!.granted)
      .toHaveLength(1)
  })

  it("the quota counts a Service's mappings and then its pinholes, oldest Service first", () => {
    const first = claimant("shop/first", 1, [mapping(8080), pinholeClaim(pinhole(8080))])
    const second = claimant("shop/second", 2, [pinholeClaim(pinhole(9090))])
    expect(resolveQuota([second, first], 2)).toEqual(new Map([["shop/second", new Set(["TCP/9090/IPv6"])]]))
    expect(resolveQuota([second, first], 1)).toEqual(
      new Map([["shop/first", new Set(["TCP/8080/IPv6"])], ["shop/second", new Set(["TCP/9090/IPv6"])]])
    )
  })

  it("a dual-stack Service asks for both families of each port; IPv4 first", () => {
    const service = {
      metadata: { name: "web", namespace: "shop" },
      spec: { type: "LoadBalancer", ipFamilies: ["IPv4", "IPv6"], ports: [{ name: "http", port: 8080, nodePort: 30080, protocol: "TCP" }] }
    }
    expect(claimantOf(service, desiredWeb([mapping(8080)])).ports).toEqual([mapping(8080), pinholeClaim(pinhole(8080))])
  })
})

describe("what the claims leave each half", () => {
  const older = claimant("prod/web", 1, [pinholeClaim(pinhole(8080))])
  const younger = claimant("tenant/x", 2, [mapping(8080), pinholeClaim(pinhole(8080)), pinholeClaim(pinhole(9090))])
  const claims = withQuota(resolveClaims([older, younger]).get("tenant/x")!, new Set(["TCP/9090/IPv6"]))

  it("the IPv4 half gets only the mappings", () => {
    expect(ipv4Claims(claims)).toEqual({ granted: [mapping(8080)], contested: [], overQuota: [] })
  })

  it("the IPv6 half: contested and over quota withheld with a port error, worded as for IPv4, never retried by backoff", () => {
    const held = new Set(["TCP/8080"])
    const ipv6 = pinholeClaims(claims, { namespace: "tenant", quota: 2, heldElsewhere: held })
    expect(ipv6.granted).toEqual([])
    expect(ipv6.heldElsewhere).toBe(held)
    expect(ipv6.withheld).toEqual([
      {
        _tag: "Failed",
        port: pinhole(8080),
        reason: "PortConflict",
        message: "Service prod/web is older and already claims TCP 8080 (IPv6)",
        retryable: false
      },
      {
        _tag: "Failed",
        port: pinhole(9090),
        reason: "QuotaExceeded",
        message: expect.stringContaining("namespace tenant already holds its quota of 2 router entries"),
        retryable: false
      }
    ])
  })
})

describe("the pinhole plan under the claims", () => {
  const view: FirewallView = { nodeAddress: NODE_ADDRESS, routes: [{ router: CONTROL_URL, protocol: "upnp-igd", bootedAt: 1_000, opensLowPorts: false }] }
  const recorded: RecordedPinhole = { protocol: "TCP", port: 8080, internalClient: NODE_ADDRESS, router: CONTROL_URL, uniqueId: 3, bootedAt: 1_000 }
  const withheld = pinholeClaims(
    resolveClaims([claimant("prod/web", 1, [pinholeClaim(pinhole(8080))]), claimant("tenant/x", 2, [pinholeClaim(pinhole(8080))])])
      .get("tenant/x")!,
    { namespace: "tenant", quota: 0, heldElsewhere: new Set(["TCP/8080"]) }
  )
  const plan = (claims: typeof withheld, record: ReadonlyArray<RecordedPinhole>) =>
    planPinholes({ claims, record, view, now: 10_000, leaseSeconds: 600, renewedAt: new Map() })

  it("a contested port: no step at all, its error; its recorded pinhole left to the holder, neither renewed nor deleted", () => {
    const p = plan(withheld, [recorded])
    expect(p.steps).toEqual([])
    expect(p.refused).toEqual(withheld.withheld)
    expect(p.handedOver).toEqual([recorded])
    expect(p.recordBefore).toEqual([])
  })

  it("a port the Service gave up that nobody else asks for: its own pinhole deleted", () => {
    expect(plan({ granted: [], withheld: [], heldElsewhere: new Set() }, [recorded]).steps).toEqual([{ _tag: "Delete", entry: recorded }])
  })

  it("granted, and another Service asks for it too (it may hold the pinhole): added, then renewed at once to set its expiry", () => {
    expect(plan({ granted: [pinhole(8080)], withheld: [], heldElsewhere: new Set(["TCP/8080"]) }, []).steps).toEqual([
      { _tag: "Add", port: pinhole(8080), router: CONTROL_URL, settle: true }
    ])
  })

  it("cleanup: a pinhole on a port another Service asks for is forgotten, not deleted", () => {
    expect(planPinholeRemoval([recorded], view, new Set(["TCP/8080"]))).toEqual({ deletes: [], forgotten: [recorded] })
    expect(planPinholeRemoval([recorded], view, new Set()).deletes).toEqual([{ _tag: "Delete", entry: recorded }])
  })
})
