import { describe, expect, it } from "@effect/vitest"
import type { MappingEntry } from "../../src/gateway/Mapping.ts"
import type { RecordedMapping } from "../../src/controller/MappingRecord.ts"
import {
  type GatewayView,
  needsRenewal,
  type ObservedTable,
  type Ownership,
  planCleanup,
  planOrphans,
  planService,
  resolveClaims,
  toRecorded
} from "../../src/controller/planner.ts"
import { serviceStatus } from "../../src/controller/status.ts"
import type { DesiredPort, DesiredService } from "../../src/controller/ServiceSpec.ts"
import { desiredWeb, labGateway } from "../support/desired.ts"

const NODE = "192.168.77.10"
const OTHER_NODE = "192.168.77.11"
const gateway: GatewayView = labGateway
const ownership: Ownership = { clusterName: "kubernetes", nodeAddresses: new Set([NODE, OTHER_NODE]) }

const port = (externalPort: number, internalPort: number, name = "http", protocol: "TCP" | "UDP" = "TCP"): DesiredPort => ({
  portName: name,
  protocol,
  externalPort,
  internalPort,
  description: `kubernetes/default/web/${name}`
})

const service = desiredWeb

const entry = (p: DesiredPort, overrides: Partial<MappingEntry> = {}): MappingEntry => ({
  externalPort: p.externalPort,
  protocol: p.protocol,
  internalClient: NODE,
  internalPort: p.internalPort,
  description: p.description,
  leaseDuration: 3500,
  enabled: true,
  remoteHost: "",
  ...overrides
})

const table = (...entries: ReadonlyArray<[DesiredPort | RecordedMapping, MappingEntry | null]>): ObservedTable =>
  new Map(entries.map(([p, e]) => [`${p.protocol}/${p.externalPort}`, e]))

const plan = (
  desired: DesiredService,
  observed: ObservedTable,
  record: ReadonlyArray<RecordedMapping> = [],
  view: GatewayView = gateway
) =>
  planService({
    service: desired,
    claims: resolveClaims([desired]).get(desired.key)!,
    record,
    observed,
    gateway: view,
    ownership
  })

describe("planService", () => {
  const http = port(8080, 30000)

  it("adds a free port, and records it before any router call", () => {
    const result = plan(service([http]), table([http, null]))
    expect(result.steps).toEqual([{ _tag: "Add", port: http, repair: false }])
    expect(result.recordBefore).toEqual([toRecorded(http, gateway)])
  })

  it("marks an add as a repair when the record says the port was mapped before", () => {
    const result = plan(service([http]), table([http, null]), [toRecorded(http, gateway)])
    expect(result.steps).toEqual([{ _tag: "Add", port: http, repair: true }])
    expect(result.recordBefore).toBeUndefined()
  })

  it("leaves a correct mapping in place until half its lease has passed", () => {
    const fresh = plan(service([http]), table([http, entry(http, { leaseDuration: 1801 })]), [toRecorded(http, gateway)])
    expect(fresh.steps).toEqual([])
    expect(fresh.inPlace).toEqual([http])
    const old = plan(service([http]), table([http, entry(http, { leaseDuration: 1800 })]), [toRecorded(http, gateway)])
    expect(old.steps).toEqual([{ _tag: "Renew", port: http }])
  })

  it("never touches a port held by another host", () => {
    const foreign = entry(http, { internalClient: "192.168.77.50", description: "game console" })
    const result = plan(service([http]), table([http, foreign]))
    expect(result.steps).toHaveLength(1)
    expect(result.steps[0]).toMatchObject({ _tag: "Conflict", port: http })
    expect(result.steps[0]!._tag === "Conflict" && result.steps[0].reason).toContain("192.168.77.50")
  })

  it("treats our own node's mapping under another description as a conflict (miniupnpd would overwrite it)", () => {
    const otherApp = entry(http, { description: "some-app on the node" })
    expect(plan(service([http]), table([http, otherApp])).steps[0]).toMatchObject({ _tag: "Conflict" })
    const otherService = entry(http, { description: "kubernetes/default/other/http" })
    expect(plan(service([http]), table([http, otherService])).steps[0]).toMatchObject({ _tag: "Conflict" })
  })

  it("replaces our mapping that points at another node of the cluster (failover) or an old nodePort", () => {
    const onOtherNode = entry(http, { internalClient: OTHER_NODE })
    expect(plan(service([http]), table([http, onOtherNode])).steps).toEqual([
      { _tag: "Replace", port: http, previous: onOtherNode }
    ])
    const oldNodePort = entry(http, { internalPort: 31000 })
    expect(plan(service([http]), table([http, oldNodePort])).steps).toEqual([
      { _tag: "Replace", port: http, previous: oldNodePort }
    ])
  })

  it("deletes a recorded mapping the Service no longer wants, and forgets one already gone", () => {
    const old = port(9090, 30001, "metrics")
    const gone = port(9091, 30002, "debug")
    const result = plan(
      service([http]),
      table([http, entry(http)], [old, entry(old)], [gone, null]),
      [toRecorded(http, gateway), toRecorded(old, gateway), toRecorded(gone, gateway)]
    )
    expect(result.steps).toEqual([{ _tag: "Delete", mapping: toRecorded(old, gateway) }])
    expect(result.forgotten).toEqual([toRecorded(gone, gateway)])
  })

  it("never deletes a recorded port that someone else took over meanwhile", () => {
    const old = port(9090, 30001, "metrics")
    const takenOver = entry(old, { internalClient: "192.168.77.50", description: "other" })
    const result = plan(service([http]), table([http, entry(http)], [old, takenOver]), [
      toRecorded(http, gateway),
      toRecorded(old, gateway)
    ])
    expect(result.steps).toEqual([])
    expect(result.forgotten).toEqual([toRecorded(old, gateway)])
  })

  it("does not map behind a double NAT, and does not delete what is there", () => {
    const doubleNat: GatewayView = { ...gateway, externalAddress: { ip: "10.0.0.2", class: "private" } }
    const result = plan(service([http]), table([http, null]), [], doubleNat)
    expect(result.steps).toEqual([])
    expect(result.blocked).toEqual([http])
  })

  it("maps TCP and UDP on the same number independently", () => {
    const tcp = port(5000, 30010, "tcp", "TCP")
    const udp = port(5000, 30011, "udp", "UDP")
    const result = plan(service([tcp, udp]), table([tcp, null], [udp, entry(udp)]))
    expect(result.steps).toEqual([{ _tag: "Add", port: tcp, repair: false }])
    expect(result.inPlace).toEqual([udp])
  })
})

describe("resolveClaims", () => {
  it("gives a contested port to the oldest Service, then by namespace/name", () => {
    const older = service([port(8080, 30000)], { key: "default/a", name: "a", createdAt: 1 })
    const newer = service([port(8080, 30001)], { key: "default/b", name: "b", createdAt: 2 })
    const claims = resolveClaims([newer, older])
    expect(claims.get("default/a")!.granted).toHaveLength(1)
    expect(claims.get("default/b")!.contested).toEqual([{ port: newer.ports[0], holder: "default/a" }])
    const tieA = service([port(8080, 30000)], { key: "x/a", createdAt: 5 })
    const tieB = service([port(8080, 30000)], { key: "w/b", createdAt: 5 })
    expect(resolveClaims([tieA, tieB]).get("w/b")!.granted).toHaveLength(1)
  })

  it("among equally old Services (one-second timestamps), the one already holding the port keeps it", () => {
    const incumbent = service([port(8080, 30000)], { key: "default/z-incumbent", createdAt: 7 })
    const newcomer = service([port(8080, 30001)], { key: "default/a-newcomer", createdAt: 7 })
    const holding = (key: string) => new Set(key === "default/z-incumbent" ? ["TCP/8080"] : [])
    expect(resolveClaims([newcomer, incumbent], holding).get("default/z-incumbent")!.granted).toHaveLength(1)
    expect(resolveClaims([newcomer, incumbent]).get("default/a-newcomer")!.granted).toHaveLength(1)
  })

  it("hands the port over once the holder is gone", () => {
    const newer = service([port(8080, 30001)], { key: "default/b", createdAt: 2 })
    expect(resolveClaims([newer]).get("default/b")!.granted).toHaveLength(1)
  })
})

describe("planCleanup", () => {
  it("deletes exactly the recorded mappings the router still holds as ours", () => {
    const a = toRecorded(port(8080, 30000), gateway)
    const b = toRecorded(port(9090, 30001, "b"), gateway)
    const c = toRecorded(port(7070, 30002, "c"), gateway)
    const observed = table(
      [a, entry(port(8080, 30000))],
      [b, null],
      [c, entry(port(7070, 30002, "c"), { internalClient: "192.168.77.50" })]
    )
    const result = planCleanup([a, b, c], observed, ownership)
    expect(result.steps).toEqual([{ _tag: "Delete", mapping: a }])
    expect(result.alreadyGone).toEqual([b, c])
  })
})

describe("planOrphans", () => {
  it("finds owned entries that no live Service wants, and never foreign ones", () => {
    const live = entry(port(8080, 30000))
    const orphan = entry(port(9090, 30001, "gone"), { description: "kubernetes/default/gone/http" })
    const foreign = entry(port(7070, 30002), { internalClient: "192.168.77.50", description: "kubernetes/x/y/z" })
    const otherCluster = entry(port(6060, 30003), { description: "staging/default/web/http" })
    const result = planOrphans([live, orphan, foreign, otherCluster], new Set([live.description]), ownership)
    expect(result).toEqual([{ _tag: "Orphan", entry: orphan }])
  })
})

describe("needsRenewal", () => {
  it("renews unknown leases, never permanent ones, and finite ones past half", () => {
    const p = port(8080, 30000)
    expect(needsRenewal(entry(p, { leaseDuration: undefined }), 3600)).toBe(true)
    expect(needsRenewal(entry(p, { leaseDuration: 0 }), 3600)).toBe(false)
    expect(needsRenewal(entry(p, { leaseDuration: 100 }), 0)).toBe(false)
    expect(needsRenewal(entry(p, { leaseDuration: 100 }), 3600)).toBe(true)
  })
})

describe("serviceStatus", () => {
  const http = port(8080, 30000)
  const dns = port(53, 30053, "dns", "UDP")
  const publicIp = { ip: "122.112.219.229", class: "public" } as const

  it("publishes the router's address with every port, and an error on the failed ones", () => {
    const status = serviceStatus(
      [{ _tag: "Mapped", port: http }, { _tag: "Failed", port: dns, reason: "PortConflict", message: "held" }],
      [{ portName: "sctp", port: 9999, protocol: "SCTP", reason: "UnsupportedProtocol", message: "" }],
      publicIp,
      undefined
    )
    expect(status).toEqual({
      ingress: [{
        ip: "122.112.219.229",
        ports: [
          { port: 53, protocol: "UDP", error: "midokura.com/PortConflict" },
          { port: 8080, protocol: "TCP" },
          { port: 9999, protocol: "SCTP", error: "midokura.com/UnsupportedProtocol" }
        ]
      }]
    })
  })

  it("never publishes a private or missing address, nor one for a Service without ports", () => {
    const mapped = [{ _tag: "Mapped", port: http } as const]
    expect(serviceStatus(mapped, [], { ip: "10.0.0.2", class: "private" }, undefined)).toEqual({ ingress: [] })
    expect(serviceStatus(mapped, [], { ip: undefined, class: "missing" }, undefined)).toEqual({ ingress: [] })
    expect(serviceStatus([], [], publicIp, undefined)).toEqual({ ingress: [] })
  })

  it("shows a port that failed everywhere through its error", () => {
    const status = serviceStatus(
      [{ _tag: "Failed", port: http, reason: "PortConflict", message: "" }],
      [],
      publicIp,
      undefined
    )
    expect(status.ingress[0]!.ports).toEqual([{ port: 8080, protocol: "TCP", error: "midokura.com/PortConflict" }])
  })

  it("carries the configured ipMode", () => {
    const status = serviceStatus([{ _tag: "Mapped", port: http }], [], publicIp, "Proxy")
    expect(status.ingress[0]!.ipMode).toBe("Proxy")
  })
})
