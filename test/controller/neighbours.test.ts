import { assert, describe, it } from "@effect/vitest"
import { Duration, HashMap } from "effect"
import type { ClusterSnapshot } from "../../src/controller/ClusterState.ts"
import { defaultLeaseRange } from "../../src/controller/DurationString.ts"
import { quotaContenders } from "../../src/controller/neighbours.ts"
import { buildPortIndex } from "../../src/controller/PortIndex.ts"
import type { Service } from "../../src/kube/objects.ts"

const options = {
  loadBalancerClass: "midokura.com/edge",
  clusterName: "kubernetes",
  defaultLease: Duration.hours(1),
  leaseRange: defaultLeaseRange,
  maxMappingsPerNamespace: 2
}

const service = (name: string, ports: ReadonlyArray<number>, extra: Partial<Service["metadata"]> = {}): Service => ({
  metadata: { name, namespace: "default", annotations: { "midokura.com/load-balancer-type": "upnp-igd" }, ...extra },
  spec: {
    type: "LoadBalancer",
    ports: ports.map((port) => ({ name: `p${port}`, port, nodePort: 30000 + port % 1000, protocol: "TCP" }))
  }
})

/** The cluster as the watch left it after the change: these Services, indexed. */
const snapshotOf = (...services: ReadonlyArray<Service>): ClusterSnapshot => ({
  services: HashMap.fromIterable(services.map((s) => [`default/${s.metadata?.name}`, s] as const)),
  nodes: HashMap.empty(),
  slices: HashMap.empty(),
  index: buildPortIndex(services, options),
  ownWrites: HashMap.empty(),
  synced: { services: true, nodes: true, slices: true }
})

describe("quotaContenders", () => {
  const a = service("a", [8001, 8002])
  const b = service("b", [8003])

  it("a change that keeps a Service's count of entries moves nobody's share, even past the quota", () => {
    const relabelled = service("b", [8003], { labels: { team: "x" } })
    assert.deepStrictEqual(quotaContenders(snapshotOf(a, relabelled), options, b, relabelled), [])
    const moved = service("b", [9003])
    assert.deepStrictEqual(quotaContenders(snapshotOf(a, moved), options, b, moved), [])
  })

  it("a Service that asks for more or fewer entries, comes or goes, moves the others' shares past the quota", () => {
    const grown = service("b", [8003, 8004])
    assert.deepStrictEqual(quotaContenders(snapshotOf(a, grown), options, b, grown), ["default/a"])
    const going = service("b", [8003], { deletionTimestamp: new Date() })
    assert.deepStrictEqual(quotaContenders(snapshotOf(a, going), options, b, going), ["default/a"])
    assert.deepStrictEqual(quotaContenders(snapshotOf(a, b), options, undefined, b), ["default/a"])
  })

  it("within the quota, nobody's share moves", () => {
    const grown = service("b", [8003, 8004])
    assert.deepStrictEqual(quotaContenders(snapshotOf(a, grown), { ...options, maxMappingsPerNamespace: 10 }, b, grown), [])
  })
})
