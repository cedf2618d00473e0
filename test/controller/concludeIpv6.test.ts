/**
 * How a pass's conclusion takes in its IPv6 half (passPlan.ts `conclude`): the node's IPv6
 * address after the router's IPv4 one, each family's port errors on its own ingress entry, one
 * EnsuredLoadBalancer naming both, an IPv6 failure retried without touching the IPv4 status,
 * and an IPv6-only Service published by its IPv6 address alone.
 */
import { describe, expect, it } from "@effect/vitest"
import { Duration } from "effect"
import { conclude, planEnsure } from "../../src/controller/passPlan.ts"
import type { PinholeResult } from "../../src/controller/pinholes.ts"
import type { DesiredPort } from "../../src/controller/ServiceSpec.ts"
import { desiredWeb, labGateway } from "../support/desired.ts"

const NODE = "192.168.77.10"
const NODE6 = "2001:db8:2::10"
const gateway = labGateway
const http: DesiredPort = { portName: "http", protocol: "TCP", externalPort: 8080, internalPort: 31000, description: "kubernetes/default/web/http" }
const planFor = (ports: ReadonlyArray<DesiredPort>) =>
  planEnsure({
    desired: desiredWeb(ports),
    gateway,
    backend: "upnp-igd",
    record: { trusted: [], refused: [], stale: false },
    finalized: true,
    claims: { granted: ports, contested: [], overQuota: [] },
    observed: new Map(ports.map((p) => [`${p.protocol}/${p.externalPort}`, null])),
    ownership: { clusterName: "kubernetes", nodeAddresses: new Set([NODE]) },
    quota: 256,
    internalPortHolder: undefined
  })
const mapped = (ports: ReadonlyArray<DesiredPort>) => ({
  outcomes: ports.map((port) => ({ _tag: "Mapped" as const, port })),
  removed: [],
  repaired: []
})
const options = { ipMode: undefined, resyncInterval: Duration.minutes(10) }
const current = { status: undefined, localTrafficWarning: undefined }
const ipv6 = (overrides: Partial<PinholeResult> = {}): PinholeResult => ({
  ingress: { ip: NODE6, ports: [{ port: 8080, protocol: "TCP" }] },
  conditions: [],
  events: [],
  failure: undefined,
  renewAfter: Duration.seconds(300),
  ...overrides
})

describe("conclude with an IPv6 half", () => {
  it("both addresses, IPv4 first; one EnsuredLoadBalancer naming both; renewal at the pinholes' half-life", () => {
    const c = conclude(planFor([http]), mapped([http]), current, options, [], ipv6())
    expect(c.status?.ingress).toEqual([
      { ip: "122.112.219.229", ports: [{ port: 8080, protocol: "TCP" }] },
      { ip: NODE6, ports: [{ port: 8080, protocol: "TCP" }] }
    ])
    expect(c.events.map((e) => e.note)).toEqual([
      `122.112.219.229: TCP 8080 mapped on ${gateway.router}; ${NODE6}: TCP 8080 (IPv6) opened in its firewall`
    ])
    expect(c.failure).toBeUndefined()
    expect(c.renewAfter).toEqual(Duration.seconds(300))
  })

  it("an IPv6 port error stays on the IPv6 entry; no EnsuredLoadBalancer; a retryable IPv6 failure retries the pass", () => {
    const failing = ipv6({
      ingress: { ip: NODE6, ports: [{ port: 8080, protocol: "TCP", error: "midokura.com/PinholeFailed" }] },
      conditions: [{ type: "Warning", reason: "SyncLoadBalancerFailed", action: "Ensure", note: "TCP 8080 (IPv6): 501" }],
      failure: "AddPinhole failed: 501"
    })
    const c = conclude(planFor([http]), mapped([http]), current, options, [], failing)
    expect(c.status?.ingress[0]?.ports).toEqual([{ port: 8080, protocol: "TCP" }])
    expect(c.status?.ingress[1]?.ports).toEqual([{ port: 8080, protocol: "TCP", error: "midokura.com/PinholeFailed" }])
    expect(c.events).toEqual([])
    expect(c.conditions.map((a) => a.reason)).toEqual(["SyncLoadBalancerFailed"])
    expect(c.failure?.reason).toBe("AddPinhole failed: 501")
  })

  it("a firewall that opens nothing: the IPv4 status alone, the IPv6NotPublished condition, no failure", () => {
    const none = ipv6({
      ingress: undefined,
      conditions: [{ type: "Warning", reason: "IPv6NotPublished", action: "Ensure", note: "TCP 8080 (IPv6) not opened: no service" }],
      renewAfter: undefined
    })
    const c = conclude(planFor([http]), mapped([http]), current, options, [], none)
    expect(c.status?.ingress.map((i) => i.ip)).toEqual(["122.112.219.229"])
    expect(c.conditions.map((a) => a.reason)).toEqual(["IPv6NotPublished"])
    expect(c.failure).toBeUndefined()
    expect(c.events.map((e) => e.reason)).toEqual(["EnsuredLoadBalancer"])
  })

  it("an IPv6-only Service (no IPv4 ports): published by the node's IPv6 address", () => {
    const c = conclude(planFor([]), mapped([]), current, options, [], ipv6())
    expect(c.status?.ingress).toEqual([{ ip: NODE6, ports: [{ port: 8080, protocol: "TCP" }] }])
    expect(c.events.map((e) => e.note)).toEqual([`${NODE6}: TCP 8080 (IPv6) opened in its firewall`])
  })

  it("the IPv4 address changing is told against the previous IPv4 entry, not the IPv6 one", () => {
    const before = { ...current, status: { ingress: [{ ip: "122.112.219.1" }, { ip: NODE6 }] } }
    const c = conclude(planFor([http]), mapped([http]), before, options, [], ipv6())
    expect(c.events.find((e) => e.reason === "ExternalIPChanged")?.note).toBe(
      "the router's external address changed from 122.112.219.1 to 122.112.219.229"
    )
    // Only the IPv6 address was published (the IPv4 one was held back): no change to tell.
    const ipv6Only = conclude(planFor([http]), mapped([http]), { ...current, status: { ingress: [{ ip: NODE6 }] } }, options, [], ipv6())
    expect(ipv6Only.events.map((e) => e.reason)).toEqual(["EnsuredLoadBalancer"])
  })
})
