import { describe, expect, it } from "@effect/vitest"
import type { Service } from "../../src/kube/objects.ts"
import { readRecord, recordAnnotations, type RecordedMapping, writeRecord } from "../../src/controller/MappingRecord.ts"
import { RecordKey } from "../../src/controller/RecordKey.ts"
import { MAPPINGS_ANNOTATION, MAPPINGS_SIGNATURE_ANNOTATION } from "../../src/controller/ServiceSpec.ts"
import { recordOf, testRecordKeyService } from "../support/records.ts"

const service = (annotations: Record<string, string>, overrides: Partial<Service["metadata"]> = {}): Service => ({
  metadata: { name: "web", namespace: "shop", uid: "uid-1", annotations, ...overrides },
  spec: {
    type: "LoadBalancer",
    ports: [
      { name: "http", port: 80, nodePort: 30080, protocol: "TCP" },
      { port: 53, nodePort: 30053, protocol: "UDP" }
    ]
  }
})

const upnp = (overrides: Partial<RecordedMapping> = {}): RecordedMapping => ({
  backend: "upnp-igd",
  gateway: "http://192.168.77.1:49536/ctl/IPConn",
  protocol: "TCP",
  externalPort: 80,
  internalClient: "192.168.77.10",
  internalPort: 30080,
  description: "kubernetes/shop/web/http",
  ...overrides
})

const signed = (mappings: ReadonlyArray<RecordedMapping>, owner: Service = service({})) =>
  recordAnnotations(owner, mappings, testRecordKeyService)

describe("readRecord", () => {
  it("believes a record the controller signed for this very Service", () => {
    const mappings = [upnp(), upnp({ externalPort: 8080, description: "kubernetes/prod/web/http" })]
    expect(recordOf(service(signed(mappings)))).toEqual({ trusted: mappings, refused: [], stale: false })
  })

  it("refuses, entry by entry, a signed record moved to another Service, edited, or of another key", () => {
    const foreign = upnp({ externalPort: 443, description: "kubernetes/prod/web/p" })
    const mappings = [upnp(), foreign]
    const moved = recordOf(service(signed(mappings, service({}, { namespace: "prod" }))))
    const recreated = recordOf(service(signed(mappings), { uid: "uid-2" }))
    const annotations = signed(mappings)
    const edited = recordOf(service({
      ...annotations,
      [MAPPINGS_ANNOTATION]: annotations[MAPPINGS_ANNOTATION]!.replace('"externalPort":80,', '"externalPort":81,')
    }))
    const otherKey = recordOf(service(recordAnnotations(service({}), mappings, RecordKey.makeStatic(new Uint8Array(32).fill(9)))))
    for (const read of [moved, recreated, otherKey]) {
      // Its own entry is still provable by its description; the foreign one is not.
      expect(read.trusted).toEqual([upnp()])
      expect(read.refused).toHaveLength(1)
      expect(read.refused[0]).toContain('"kubernetes/prod/web/p"')
      expect(read.stale).toBe(true)
    }
    // An edited UPnP entry under its own description names only what this Service may touch anyway.
    expect(edited.trusted).toEqual([upnp({ externalPort: 81 })])
    expect(edited.refused).toHaveLength(1)
  })

  it("believes an unsigned record (an earlier version's) only where it is provably this Service's own", () => {
    const ownNatPmp: RecordedMapping = { ...upnp(), backend: "nat-pmp", protocol: "UDP", externalPort: 53, internalPort: 30053 }
    const otherNodePort: RecordedMapping = { ...ownNatPmp, internalPort: 30443 }
    const otherProtocol: RecordedMapping = { ...ownNatPmp, protocol: "TCP" }
    const otherDescription = upnp({ description: "kubernetes/shop/web-admin/http" })
    const read = recordOf(service({
      [MAPPINGS_ANNOTATION]: writeRecord([upnp(), ownNatPmp, otherNodePort, otherProtocol, otherDescription])
    }))
    expect(read.trusted).toEqual([upnp(), ownNatPmp])
    expect(read.refused).toHaveLength(3)
    expect(read.refused.join("\n")).toContain("not signed")
    expect(read.stale).toBe(true)
  })

  it("refuses garbage and oversized fields as a whole, and asks for a rewrite", () => {
    for (const text of ["{not json", JSON.stringify([{ ...upnp(), description: "x".repeat(129) }]), "[1]"]) {
      const read = recordOf(service({ [MAPPINGS_ANNOTATION]: text }))
      expect(read.trusted).toEqual([])
      expect(read.refused).toHaveLength(1)
      expect(read.stale).toBe(true)
    }
  })

  it("checks a Service object's record once, whichever loop asks with its own check", () => {
    let verified = 0
    const counting: RecordKey["Service"] = {
      ...testRecordKeyService,
      verify: (owner, text, signature) => {
        verified++
        return testRecordKeyService.verify(owner, text, signature)
      }
    }
    const object = service(signed([upnp()]))
    // The full pass, the reconciler and the orphan sweep each build their own check.
    for (let look = 0; look < 3; look++) readRecord(object, { key: counting, clusterName: "kubernetes" })
    expect(verified).toBe(1)
    // A new version of the Service (the watch replaces the object) is checked afresh.
    readRecord({ ...object }, { key: counting, clusterName: "kubernetes" })
    expect(verified).toBe(2)
  })

  it("has nothing to say of a Service without a record; a stray signature is stale", () => {
    expect(recordOf(service({}))).toEqual({ trusted: [], refused: [], stale: false })
    expect(recordOf(service({ [MAPPINGS_SIGNATURE_ANNOTATION]: "v1.AAAA" })).stale).toBe(true)
  })
})
