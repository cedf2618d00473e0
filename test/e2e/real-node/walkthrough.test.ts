// e2e lab: --real-node
/**
 * The product as users deploy it, on one real node: `kubectl apply -k manifests` (no patch: the
 * lab-built image carries the manifests' name), the controller as a DaemonSet pod from that
 * image, the seed example with real nginx pods, curl from the Internet answered by one of them
 * through the router's mapping, the nodePort and kube-proxy; the pod's logs and its memory; the
 * image's size as a registry would store it.
 */
import * as fs from "node:fs"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { loadLab, upnpcList, waitFor } from "../support/lab.ts"
import * as node from "../support/real-node.ts"

beforeAll(() => {
  node.realNode(1)
})

afterAll(async () => {
  await node.deleteExample()
  await node.deleteManifests()
})

describe("the seed walkthrough on a real node", () => {
  it("runs the manifests' DaemonSet from the lab-built image: Running, Ready, leading with its pod's projected token, uid 65532, no capabilities, read-only root", async () => {
    const started = performance.now()
    const applied = await node.kubectlOk(["apply", "-k", node.MANIFESTS])
    expect(applied).toContain(`daemonset.apps/${node.CONTROLLER} created`)
    await node.rollout(`daemonset/${node.CONTROLLER}`, node.NAMESPACE)
    const [pod, ...others] = await node.controllerPods()
    expect(others).toEqual([])
    expect(pod && node.isReady(pod), JSON.stringify(pod?.status)).toBe(true)
    const image = node.realNode().images.find((i) => i.role === "controller")!
    expect(pod!.status.containerStatuses?.[0]).toMatchObject({ image: image.reference, imageID: image.id, restartCount: 0 })
    console.log(`[figure] kubectl apply -k manifests to a Ready controller pod: ${((performance.now() - started) / 1000).toFixed(1)} s`)

    await waitFor(async () => (await node.leaderPod()) === pod!.metadata.name, { description: "the pod to hold the Lease", timeoutMs: 30_000 })
    // A real projected token (ServiceAccount admission, the token bound to this pod) is what it used.
    const projected = pod!.spec.volumes?.find((v) => v.projected?.sources.some((source) => "serviceAccountToken" in source))
    expect(projected?.name).toMatch(/^kube-api-access-/)
    const audited = fs.readFileSync(loadLab().auditLog, "utf8").split("\n").filter((l) => l !== "").map((l) =>
      JSON.parse(l) as { user: { username: string; extra?: Record<string, Array<string>> }; objectRef?: { resource?: string } }
    )
    // Earlier pods of the same lab (the chart's test) used the same ServiceAccount: look for this pod's.
    const podName = pod!.metadata.name
    const leaseRequestsOfThisPod = audited.filter((e) =>
      e.objectRef?.resource === "leases" && e.user.extra?.["authentication.kubernetes.io/pod-name"]?.includes(podName)
    )
    expect(leaseRequestsOfThisPod.length, `no Lease request in the audit log names the pod ${podName}`).toBeGreaterThan(0)
    expect(leaseRequestsOfThisPod[0]!.user.username).toBe(`system:serviceaccount:${node.NAMESPACE}:${node.CONTROLLER}`)
    const status = fs.readFileSync(`/proc/${node.containerPid(pod!, "controller")}/status`, "utf8")
    expect(status).toMatch(/^Uid:\s+65532\s+65532\s+65532\s+65532$/m)
    expect(status).toMatch(/^Gid:\s+65532\s/m)
    expect(status).toMatch(/^CapEff:\s+0{16}$/m)
    expect(status).toMatch(/^NoNewPrivs:\s+1$/m)
    const rootMount = fs.readFileSync(`/proc/${node.containerPid(pod!, "controller")}/mountinfo`, "utf8").split("\n").find((l) => l.split(" ")[4] === "/")
    expect(rootMount?.split(" ")[5]).toMatch(/^ro\b/)
  })

  it("runs an image of at most 50 MB compressed, as a registry would store it", async () => {
    const size = await node.controllerImageSize()
    console.log(`[figure] the controller image, gzip in an OCI layout: ${(size.total / 1e6).toFixed(2)} MB (layers ${size.layers.map((l) => (l / 1e6).toFixed(2)).join(", ")} MB)`)
    expect(size.layers.length).toBeGreaterThan(1)
    expect(size.total).toBeLessThanOrEqual(50_000_000)
  })

  it("publishes the seed example, served by real nginx pods: EXTERNAL-IP, upnpc -l, curl from the WAN answered by a pod", async () => {
    const lab = loadLab()
    const created = await node.kubectlOk(["create", "-f", node.EXAMPLE])
    expect(created).toContain("deployment.apps/http-nginx-deployment created")
    const started = performance.now()
    expect(await node.exampleExternalIp()).toBe("122.112.219.229")
    console.log(`[figure] EXTERNAL-IP ${((performance.now() - started) / 1000).toFixed(1)} s after kubectl create`)
    await node.rollout("deployment/http-nginx-deployment")
    const nginx = await node.nginxPods()
    expect(nginx.map((p) => [p.spec.nodeName, node.isReady(p)])).toEqual([["node-1", true], ["node-1", true]])
    expect(nginx[0]!.status.containerStatuses?.[0]?.imageID).toBe(node.realNode().images.find((i) => i.role === "nginx")!.id)

    const service = JSON.parse(await node.kubectlOk(["get", "service", "http-nginx-service", "-o", "json"])) as { spec: { ports: Array<{ nodePort: number }> } }
    const nodePort = service.spec.ports[0]!.nodePort
    expect(await upnpcList()).toContainEqual(expect.objectContaining({
      protocol: "TCP",
      externalPort: 8080,
      internalClient: lab.nodeIp,
      internalPort: nodePort,
      description: "kubernetes/default/http-nginx-service/http"
    }))
    const answer = await waitFor(() => node.nginxAnswer(), { description: "an nginx pod to answer a curl from the WAN", timeoutMs: 30_000 })
    expect(nginx.map((p) => p.metadata.name)).toContain(answer.pod)
    expect(answer.body).toBe(`Welcome to nginx! Served by pod ${answer.pod}`)
  })

  it("kubectl logs of the controller pod shows its JSON log lines", async () => {
    const [pod] = await node.controllerPods()
    const logs = await node.kubectlOk(["logs", "-n", node.NAMESPACE, pod!.metadata.name])
    const lines = logs.split("\n").filter((l) => l !== "")
    expect(lines.length).toBeGreaterThan(3)
    const entries = lines.map((line) => JSON.parse(line) as { message: unknown; level: unknown; timestamp: unknown })
    for (const entry of entries) {
      expect(entry.message).toBeDefined()
      expect(entry.level).toMatch(/^(TRACE|DEBUG|INFO|WARN|ERROR|FATAL)$/)
      expect(Number.isNaN(Date.parse(String(entry.timestamp)))).toBe(false)
    }
    expect(entries.map((e) => e.message)).toContain("ready")
    expect(lines.some((l) => l.includes(`node ${pod!.spec.nodeName}`))).toBe(true)
  })

  it("the pod's own memory, read from its cgroup, within the manifests' limit", async () => {
    const [pod] = await node.controllerPods()
    const memory = node.podMemory(pod!)
    // manifests/daemonset.yaml's limits.memory, enforced by the kubelet through the cgroup.
    expect(memory.limit).toBe(await node.manifestsMemoryLimit())
    expect(memory.usage).toBeGreaterThan(16 * 1024 * 1024)
    expect(memory.usage).toBeLessThan(memory.limit)
    // The controller process's own view, as the benchmarks read it (/proc/<pid>/status), beside its cgroup's.
    const status = fs.readFileSync(`/proc/${node.containerPid(pod!, "controller")}/status`, "utf8")
    const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB$`, "m").exec(status)?.[1]) * 1024
    console.log(
      `[figure] controller pod after the walkthrough: memory.usage_in_bytes ${node.mib(memory.usage)}, working set ${node.mib(memory.workingSet)}, rss ${node.mib(memory.rss)} (limit ${node.mib(memory.limit)}); ` +
        `the process: VmRSS ${node.mib(kib("VmRSS"))} (RssAnon ${node.mib(kib("RssAnon"))}, RssFile ${node.mib(kib("RssFile"))}), VmHWM ${node.mib(kib("VmHWM"))}`
    )
  })

  it("deleting the example removes its mapping: the finalizer is honoured by the pod", async () => {
    await node.deleteExample()
    await waitFor(async () => (await upnpcList()).every((m) => m.externalPort !== 8080), { description: "the mapping to be gone" })
    expect((await node.nginxAnswer())).toBeUndefined()
  })
})
