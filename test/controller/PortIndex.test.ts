import { assert, describe, it } from "@effect/vitest"
import type { Service } from "../../src/kube/objects.ts"
import { Duration } from "effect"
import { defaultLeaseRange } from "../../src/controller/DurationString.ts"
import { makePortIndex } from "../../src/controller/PortIndex.ts"

const options = {
  loadBalancerClass: "midokura.com/edge",
  clusterName: "kubernetes",
  defaultLease: Duration.hours(1),
  leaseRange: defaultLeaseRange
}

const service = (name: string, ports: ReadonlyArray<number>, extra: Partial<Service["metadata"]> = {}): Service => ({
  metadata: { name, namespace: "default", annotations: { "midokura.com/load-balancer-type": "upnp-igd" }, ...extra },
  spec: {
    type: "LoadBalancer",
    ports: ports.map((port) => ({ name: `p${port}`, port, nodePort: 30000 + port % 1000, protocol: "TCP" }))
  }
})

describe("PortIndex", () => {
  it("knows which live Services ask for a port as they change, go, or start deleting", () => {
    const index = makePortIndex(options)
    const a = service("a", [8080, 8443])
    const b = service("b", [8080])
    index.rebuild([a, b])
    assert.deepStrictEqual([...index.claimants("TCP/8080")].sort(), ["default/a", "default/b"])
    assert.deepStrictEqual([...index.claimants("TCP/8443")], ["default/a"])

    const a2 = service("a", [9090])
    index.update(a, a2)
    assert.deepStrictEqual([...index.claimants("TCP/8080")], ["default/b"])
    assert.deepStrictEqual([...index.claimants("TCP/8443")], [])
    assert.deepStrictEqual([...index.claimants("TCP/9090")], ["default/a"])

    const deleting = service("b", [8080], { deletionTimestamp: new Date() })
    index.update(b, deleting)
    assert.deepStrictEqual([...index.claimants("TCP/8080")], [])
    index.update(a2, undefined)
    assert.deepStrictEqual([...index.claimants("TCP/9090")], [])
  })

  it("knows which live Services forward to a nodePort, and which are in a namespace", () => {
    const index = makePortIndex(options)
    const a = service("a", [8080, 8443])
    const b = service("b", [9090], { namespace: "other" })
    index.rebuild([a, b])
    // nodePort = 30000 + port % 1000
    assert.deepStrictEqual([...index.internalClaimants("TCP/30080")], ["default/a"])
    assert.deepStrictEqual([...index.internalClaimants("UDP/30080")], [])
    assert.deepStrictEqual([...index.namespaceMembers("default")], ["default/a"])
    assert.deepStrictEqual([...index.namespaceMembers("other")], ["other/b"])

    index.update(a, service("a", [8080], { deletionTimestamp: new Date() }))
    assert.deepStrictEqual([...index.internalClaimants("TCP/30080")], [])
    assert.deepStrictEqual([...index.namespaceMembers("default")], [])
  })
})
