import { assert, describe, it } from "@effect/vitest"
import type { Service } from "../../src/kube/objects.ts"
import { Duration } from "effect"
import { defaultLeaseRange } from "../../src/controller/DurationString.ts"
import {
  buildPortIndex,
  claimants,
  internalClaimants,
  namespaceEntries,
  namespaceMembers,
  updatePortIndex
} from "../../src/controller/PortIndex.ts"

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
    const a = service("a", [8080, 8443])
    const b = service("b", [8080])
    const index = buildPortIndex([a, b], options)
    assert.deepStrictEqual([...claimants(index, "TCP/8080")].sort(), ["default/a", "default/b"])
    assert.deepStrictEqual([...claimants(index, "TCP/8443")], ["default/a"])

    const a2 = service("a", [9090])
    const changed = updatePortIndex(index, a, a2, options)
    assert.deepStrictEqual([...claimants(changed, "TCP/8080")], ["default/b"])
    assert.deepStrictEqual([...claimants(changed, "TCP/8443")], [])
    assert.deepStrictEqual([...claimants(changed, "TCP/9090")], ["default/a"])
    // An immutable value: the index it was made from is as it was.
    assert.deepStrictEqual([...claimants(index, "TCP/8443")], ["default/a"])

    const deleting = service("b", [8080], { deletionTimestamp: new Date() })
    const withDeleting = updatePortIndex(changed, b, deleting, options)
    assert.deepStrictEqual([...claimants(withDeleting, "TCP/8080")], [])
    assert.deepStrictEqual([...claimants(updatePortIndex(withDeleting, a2, undefined, options), "TCP/9090")], [])
  })

  it("knows which live Services forward to a nodePort, and which are in a namespace", () => {
    const a = service("a", [8080, 8443])
    const b = service("b", [9090], { namespace: "other" })
    const index = buildPortIndex([a, b], options)
    // nodePort = 30000 + port % 1000
    assert.deepStrictEqual([...internalClaimants(index, "TCP/30080")], ["default/a"])
    assert.deepStrictEqual([...internalClaimants(index, "UDP/30080")], [])
    assert.deepStrictEqual([...namespaceMembers(index, "default")], ["default/a"])
    assert.deepStrictEqual([...namespaceMembers(index, "other")], ["other/b"])

    const deleting = updatePortIndex(index, a, service("a", [8080], { deletionTimestamp: new Date() }), options)
    assert.deepStrictEqual([...internalClaimants(deleting, "TCP/30080")], [])
    assert.deepStrictEqual([...namespaceMembers(deleting, "default")], [])
  })

  it("counts the router entries each namespace's live Services ask for, as they change, go, or start deleting", () => {
    const a = service("a", [8080, 8443])
    const b = service("b", [9090])
    const c = service("c", [7070], { namespace: "other" })
    const index = buildPortIndex([a, b, c], options)
    assert.strictEqual(namespaceEntries(index, "default"), 3)
    assert.strictEqual(namespaceEntries(index, "other"), 1)
    assert.strictEqual(namespaceEntries(index, "empty"), 0)

    const a2 = service("a", [8080, 8443, 8444, 8445])
    const grown = updatePortIndex(index, a, a2, options)
    assert.strictEqual(namespaceEntries(grown, "default"), 5)
    const deleting = updatePortIndex(grown, b, service("b", [9090], { deletionTimestamp: new Date() }), options)
    assert.strictEqual(namespaceEntries(deleting, "default"), 4)
    const gone = updatePortIndex(updatePortIndex(deleting, a2, undefined, options), c, undefined, options)
    assert.strictEqual(namespaceEntries(gone, "default"), 0)
    assert.strictEqual(namespaceEntries(gone, "other"), 0)
    // The index it was made from is as it was.
    assert.strictEqual(namespaceEntries(index, "default"), 3)
  })
})
