// e2e lab: --real-node --nodes 2
/**
 * High availability as the manifests deploy it, on two real nodes: the DaemonSet runs a pod on
 * each, one leads; `kubectl delete pod` of the leader hands the Lease to the other, which
 * re-points the router's mapping to its own node, and curl from the Internet is answered again;
 * then the DaemonSet's replacement on the old leader's node stands by.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { upnpcList, waitFor } from "../support/lab.ts"
import * as node from "../support/real-node.ts"

/** Keeps the DaemonSet's replacement pod off the old leader's node while the other one takes over. */
const HOLD_TAINT = "edge-ccm-e2e/failover=hold"

const mappingTarget = async () => (await upnpcList()).find((m) => m.externalPort === 8080)?.internalClient

beforeAll(async () => {
  node.realNode(2)
  await node.kubectlOk(["apply", "-k", node.MANIFESTS])
  await node.rollout(`daemonset/${node.CONTROLLER}`, node.NAMESPACE)
  await node.kubectlOk(["create", "-f", node.EXAMPLE])
  await node.exampleExternalIp()
  await node.rollout("deployment/http-nginx-deployment")
})

afterAll(async () => {
  await node.deleteExample()
  await node.deleteManifests()
})

describe("failover between two real nodes", () => {
  it("runs the DaemonSet on both nodes, one pod leading", async () => {
    const pods = await node.controllerPods()
    expect(pods.map((p) => p.spec.nodeName).sort()).toEqual(["node-1", "node-2"])
    for (const pod of pods) expect(node.isReady(pod), pod.metadata.name).toBe(true)
    expect(pods.map((p) => p.status.podIP).sort()).toEqual(["192.168.77.10", "192.168.77.11"])
    const leader = await waitFor(async () => {
      const holder = await node.leaderPod()
      return pods.some((p) => p.metadata.name === holder) ? holder : undefined
    }, { description: "one of the pods to hold the Lease", timeoutMs: 30_000 })
    const leaderNode = pods.find((p) => p.metadata.name === leader)!.spec.nodeName
    await waitFor(async () => (await mappingTarget()) === node.nodeIp(leaderNode), { description: "the mapping to point at the leader's node" })
    expect(await waitFor(() => node.nginxAnswer(), { description: "curl from the WAN answered", timeoutMs: 20_000 })).toBeDefined()
  })

  it("kubectl delete pod of the leader: the other pod takes over, the mapping points at its node, curl works again", async () => {
    const pods = await node.controllerPods()
    const leader = await node.leaderPod()
    const leaderNode = pods.find((p) => p.metadata.name === leader)?.spec.nodeName
    const other = pods.find((p) => p.metadata.name !== leader)!
    expect(await mappingTarget()).toBe(node.nodeIp(leaderNode))

    // The DaemonSet's replacement on the old leader's node starts within the standby's retry
    // period (2 s) and may take the released Lease first, leaving the mapping where it was. A
    // taint the DaemonSet does not tolerate holds the replacement back until the other node leads.
    await node.kubectlOk(["taint", "node", leaderNode!, `${HOLD_TAINT}:NoSchedule`])
    try {
      const started = performance.now()
      await node.kubectlOk(["delete", "pod", leader, "-n", node.NAMESPACE, "--wait=false"])
      await waitFor(async () => (await mappingTarget()) === node.nodeIp(other.spec.nodeName), {
        description: `the mapping to point at ${other.spec.nodeName}`,
        timeoutMs: 60_000,
        intervalMs: 50
      })
      const remapped = performance.now()
      const answer = await waitFor(() => node.nginxAnswer(), { description: "curl from the WAN answered again", timeoutMs: 30_000, intervalMs: 50 })
      const answered = performance.now()
      expect(await node.leaderPod()).toBe(other.metadata.name)
      console.log(
        `[figure] failover on real nodes: kubectl delete pod of the leader to the mapping on ${other.spec.nodeName} in ${((remapped - started) / 1000).toFixed(1)} s, ` +
          `curl from the WAN answered (by ${answer.pod}) in ${((answered - started) / 1000).toFixed(1)} s`
      )
    } finally {
      await node.kubectlOk(["taint", "node", leaderNode!, `${HOLD_TAINT}:NoSchedule-`])
    }
    // The DaemonSet puts a new pod on the old leader's node: a standby now.
    await waitFor(async () => {
      const after = await node.controllerPods()
      return after.length === 2 && after.every(node.isReady) && !after.some((p) => p.metadata.name === leader) &&
        after.map((p) => p.spec.nodeName).sort().join() === "node-1,node-2"
    }, { description: "a new, Ready pod on the old leader's node", timeoutMs: 60_000 })
    expect(await node.leaderPod()).toBe(other.metadata.name)
    expect(await mappingTarget()).toBe(node.nodeIp(other.spec.nodeName))
  })
})
