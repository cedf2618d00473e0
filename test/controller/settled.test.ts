import { describe, expect, it } from "@effect/vitest"
import { Duration } from "effect"
import type { MappingEntry } from "../../src/gateway/Mapping.ts"
import type { Service } from "../../src/kube/objects.ts"
import { portKey, recordAnnotations, type RecordedMapping } from "../../src/controller/MappingRecord.ts"
import { type FreshTable, settledByListing } from "../../src/controller/settled.ts"
import { defaultLeaseRange } from "../../src/controller/DurationString.ts"
import { FINALIZER } from "../../src/controller/ServiceSpec.ts"
import { SEED_DESCRIPTION, seedService } from "../support/controllerHarness.ts"
import { testRecordCheck, testRecordKeyService } from "../support/records.ts"

const options = { loadBalancerClass: "midokura.com/edge", clusterName: "kubernetes", defaultLease: Duration.hours(1), leaseRange: defaultLeaseRange }
const NODE = "192.168.77.10"
const WAN = "122.112.219.229"

const recorded: RecordedMapping = {
  backend: "upnp-igd",
  gateway: "http://192.168.77.1:49536/ctl/IPConn",
  protocol: "TCP",
  externalPort: 8080,
  internalClient: NODE,
  internalPort: 30000,
  description: SEED_DESCRIPTION
}

const entry: MappingEntry = {
  externalPort: 8080,
  protocol: "TCP",
  internalClient: NODE,
  internalPort: 30000,
  description: SEED_DESCRIPTION,
  leaseDuration: 3000,
  enabled: true,
  remoteHost: ""
}

/** The seed Service as a pass leaves it: finalizer, signed record, the router's address in its status. */
const settledSeed = (change: (service: Service) => Service = (s) => s): Service => {
  const base = seedService({ uid: "uid-1", namespace: "default", finalizers: [FINALIZER] })
  const service: Service = {
    ...base,
    metadata: { ...base.metadata, annotations: { ...base.metadata.annotations, ...recordAnnotations(base, [recorded], testRecordKeyService) } },
    status: { loadBalancer: { ingress: [{ ip: WAN, ipMode: "VIP", ports: [{ port: 8080, protocol: "TCP" }] }] } }
  }
  return change(service)
}

const table = (entries: ReadonlyArray<MappingEntry> = [entry], overrides: Partial<FreshTable["view"]> = {}): FreshTable => ({
  backend: "upnp-igd",
  view: { router: recorded.gateway, backend: "upnp-igd", localAddress: NODE, externalAddress: { ip: WAN, class: "public" }, ...overrides },
  entries: new Map(entries.map((e) => [portKey(e), e]))
})

const settled = (service: Service, fresh: FreshTable = table()) => settledByListing(service, options, testRecordCheck, fresh)

describe("settledByListing", () => {
  it("a Service whose mapping the listing shows as recorded, with the router's address in its status, is settled", () => {
    expect(settled(settledSeed())).toBe(true)
  })

  it("anything the listing or the Service shows otherwise asks for a pass", () => {
    expect(settled(settledSeed(), table([])), "mapping gone").toBe(false)
    expect(settled(settledSeed(), table([{ ...entry, internalClient: "192.168.77.11" }])), "now points at another node").toBe(false)
    expect(settled(settledSeed(), table([entry], { localAddress: "192.168.77.20" })), "this node's address changed").toBe(false)
    expect(settled(settledSeed(), table([{ ...entry, description: "someone else" }])), "another description").toBe(false)
    expect(settled(settledSeed(), table([entry], { externalAddress: { ip: "122.112.219.230", class: "public" } })), "new WAN address").toBe(false)
    expect(settled(settledSeed(), table([entry], { externalAddress: { ip: "10.0.0.2", class: "private" } })), "double NAT").toBe(false)
    expect(settled(settledSeed((s) => ({ ...s, status: {} }))), "no status").toBe(false)
    expect(
      settled(settledSeed((s) => ({ ...s, status: { loadBalancer: { ingress: [{ ip: WAN, ports: [{ port: 8080, protocol: "TCP", error: "midokura.com/PortConflict" }] }] } } }))),
      "a port error to retry"
    ).toBe(false)
    expect(
      settled(settledSeed((s) => ({ ...s, spec: { ...s.spec, ports: [...(s.spec?.ports ?? []), { name: "x", port: 9090, nodePort: 30090, protocol: "TCP" }] } }))),
      "a port not mapped yet"
    ).toBe(false)
    expect(
      settled(settledSeed((s) => ({ ...s, spec: { ...s.spec, ports: [{ name: "http", port: 8080, nodePort: 30001, protocol: "TCP" }] } }))),
      "a new nodePort"
    ).toBe(false)
    expect(settled(settledSeed((s) => ({ ...s, spec: { ...s.spec, ipFamilies: ["IPv4", "IPv6"] } }))), "dual-stack: pinholes to renew").toBe(false)
    expect(
      settled(settledSeed((s) => ({ ...s, metadata: { ...s.metadata, annotations: { ...s.metadata?.annotations, "midokura.com/pinholes": "[]" } } }))),
      "pinholes recorded"
    ).toBe(false)
    expect(settled(settledSeed((s) => ({ ...s, metadata: { ...s.metadata, finalizers: [] } }))), "no finalizer yet").toBe(false)
    expect(settled(settledSeed((s) => ({ ...s, metadata: { ...s.metadata, deletionTimestamp: new Date() } }))), "going").toBe(false)
    expect(
      settled(settledSeed((s) => ({ ...s, metadata: { ...s.metadata, annotations: { ...s.metadata?.annotations, "midokura.com/mappings-signature": "v1.AAAA" } } }))),
      "a record to re-sign"
    ).toBe(false)
    expect(settled(settledSeed(), { ...table(), backend: "pcp" }), "another router's table").toBe(false)
    expect(settled(settledSeed(), table([{ ...entry, leaseDuration: 1800 }])), "half the hour's lease gone: renew").toBe(false)
    expect(settled(settledSeed(), table([{ ...entry, leaseDuration: undefined }])), "a lease the router does not tell").toBe(false)
  })
})
