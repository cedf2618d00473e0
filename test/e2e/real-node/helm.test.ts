// e2e lab: --real-node
/**
 * The Helm chart (charts/edge-cloud-controller-manager): it renders what manifests/ holds (and
 * manifests/monitoring with the ServiceMonitor on), passes `helm lint`, and `helm install` on a
 * real node does what `kubectl apply -k manifests` does; `helm uninstall` removes all it made.
 */
import { loadAllYaml } from "@kubernetes/client-node"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import { kubectl, upnpcList, waitFor } from "../support/lab.ts"
import * as node from "../support/real-node.ts"

const RELEASE = "edge-ccm"

interface K8sObject {
  readonly apiVersion: string
  readonly kind: string
  readonly metadata: { readonly name: string; readonly namespace?: string; readonly labels?: Record<string, string> }
}

/** Helm's bookkeeping labels: what the chart adds to manifests/'s objects, and nothing else. */
const HELM_LABELS = ["helm.sh/chart", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by", "app.kubernetes.io/version"]

const key = (o: K8sObject) => `${o.kind} ${o.metadata.namespace ?? ""}/${o.metadata.name}`
const sorted = (objects: Array<K8sObject>) => [...objects].sort((a, b) => key(a).localeCompare(key(b)))

async function helmOk(args: ReadonlyArray<string>): Promise<string> {
  const r = await node.helm(args)
  if (r.code !== 0) throw new Error(`helm ${args.join(" ")} failed (${r.code}): ${r.stderr.trim()}`)
  return r.stdout
}

async function chartObjects(values: ReadonlyArray<string> = []): Promise<Array<K8sObject>> {
  const rendered = await helmOk(["template", RELEASE, node.CHART, "--namespace", node.NAMESPACE, ...values])
  return (loadAllYaml(rendered) as Array<K8sObject | null>).filter((o): o is K8sObject => o !== null)
}

async function kustomizeObjects(dir: string): Promise<Array<K8sObject>> {
  return loadAllYaml(await node.kubectlOk(["kustomize", dir])) as Array<K8sObject>
}

/** A chart object with Helm's labels checked and taken off, to compare with manifests/. */
function withoutHelmLabels(o: K8sObject): K8sObject {
  expect(o.metadata.labels, key(o)).toMatchObject({
    "helm.sh/chart": "edge-cloud-controller-manager-0.1.0",
    "app.kubernetes.io/instance": RELEASE,
    "app.kubernetes.io/managed-by": "Helm",
    "app.kubernetes.io/version": "0.1.0"
  })
  const labels = Object.fromEntries(Object.entries(o.metadata.labels ?? {}).filter(([k]) => !HELM_LABELS.includes(k)))
  return { ...o, metadata: { ...o.metadata, labels } }
}

let installed: Array<K8sObject> = []

beforeAll(() => {
  node.realNode(1)
})

afterAll(async () => {
  await node.deleteExample()
  await node.helm(["uninstall", RELEASE, "--namespace", node.NAMESPACE, "--ignore-not-found", "--wait"])
})

describe("the Helm chart", () => {
  it("renders the objects of manifests/ (the Namespace is the release's), and of manifests/monitoring with the ServiceMonitor on", async () => {
    // The release's namespace holds the objects; Helm makes it (--create-namespace), manifests/ lists it.
    const manifests = (await kustomizeObjects(node.MANIFESTS)).filter((o) => o.kind !== "Namespace")
    expect(manifests.length).toBe(9)
    expect(sorted((await chartObjects()).map(withoutHelmLabels))).toEqual(sorted(manifests))

    const monitoring = await kustomizeObjects(path.join(node.MANIFESTS, "monitoring"))
    expect(monitoring.map((o) => o.kind).sort()).toEqual(["ClusterRoleBinding", "Service", "ServiceMonitor"])
    expect(sorted((await chartObjects(["--set", "serviceMonitor.enabled=true"])).map(withoutHelmLabels)))
      .toEqual(sorted([...manifests, ...monitoring]))
  })

  it("passes helm lint --strict; its schema refuses a lease the controller would refuse", async () => {
    const lint = await node.helm(["lint", "--strict", node.CHART])
    expect(lint.code, lint.stdout + lint.stderr).toBe(0)
    expect(lint.stdout).toContain("1 chart(s) linted, 0 chart(s) failed")
    const refused = await node.helm(["template", RELEASE, node.CHART, "--set", "mappingLease=-5s"])
    expect(refused.code).not.toBe(0)
    expect(refused.stderr).toMatch(/mappingLease.*-5s/)
    const values = await chartObjects(["--set", "mappingLease=10m,leaderElection.retryPeriod=1s,nodeSelector.edge=yes"])
    const daemonSet = JSON.stringify(values.find((o) => o.kind === "DaemonSet"))
    expect(daemonSet).toContain('{"name":"EDGE_CCM_MAPPING_LEASE","value":"10m"}')
    expect(daemonSet).toContain('{"name":"EDGE_CCM_LEADER_ELECT_RETRY_PERIOD","value":"1s"}')
    expect(daemonSet).toContain('"nodeSelector":{"edge":"yes"}')
  })

  it("helm install does what kubectl apply -k manifests does: the controller pod Ready from the lab-built image, the example published and served by nginx", async () => {
    // Nothing of manifests/ is left (another file of this lab may have applied and deleted them).
    await waitFor(async () => (await kubectl(["get", "clusterrole", node.CONTROLLER])).code !== 0, { description: "no ClusterRole left from manifests/", timeoutMs: 60_000 })
    const install = await helmOk(["install", RELEASE, node.CHART, "--namespace", node.NAMESPACE, "--create-namespace", "--wait", "--timeout", "3m"])
    expect(install).toContain("STATUS: deployed")
    installed = (loadAllYaml(await helmOk(["get", "manifest", RELEASE, "--namespace", node.NAMESPACE])) as Array<K8sObject | null>)
      .filter((o): o is K8sObject => o !== null)
    expect(installed.length).toBe(9)

    await node.rollout(`daemonset/${node.CONTROLLER}`, node.NAMESPACE)
    const [pod, ...others] = await node.controllerPods()
    expect(others).toEqual([])
    expect(node.isReady(pod!)).toBe(true)
    expect(pod!.status.containerStatuses?.[0]?.imageID).toBe(node.realNode().images.find((i) => i.role === "controller")!.id)
    await waitFor(async () => (await node.leaderPod()) === pod!.metadata.name, { description: "the pod to lead", timeoutMs: 30_000 })

    await node.kubectlOk(["create", "-f", node.EXAMPLE])
    expect(await node.exampleExternalIp()).toBe("122.112.219.229")
    await node.rollout("deployment/http-nginx-deployment")
    expect(await upnpcList()).toContainEqual(expect.objectContaining({ externalPort: 8080, internalClient: "192.168.77.10" }))
    const answer = await waitFor(() => node.nginxAnswer(), { description: "an nginx pod to answer from the WAN", timeoutMs: 30_000 })
    expect((await node.nginxPods()).map((p) => p.metadata.name)).toContain(answer.pod)
    const logs = await node.kubectlOk(["logs", "-n", node.NAMESPACE, pod!.metadata.name])
    expect(logs.split("\n").filter((l) => l !== "").map((l) => (JSON.parse(l) as { message: unknown }).message)).toContain("ready")
  })

  it("helm uninstall, once the Services it served are let go (their mappings and finalizers with them), leaves none of its objects", async () => {
    expect(installed.length).toBeGreaterThan(0)
    await node.deleteExample()
    await waitFor(async () => (await upnpcList()).length === 0, { description: "the router's table to be empty" })
    const uninstall = await helmOk(["uninstall", RELEASE, "--namespace", node.NAMESPACE, "--wait", "--timeout", "2m"])
    expect(uninstall).toContain(`release "${RELEASE}" uninstalled`)
    for (const o of installed) {
      const found = await kubectl(["get", o.kind.toLowerCase(), o.metadata.name, ...(o.metadata.namespace ? ["-n", o.metadata.namespace] : []), "-o", "name"])
      expect(found.code, `${key(o)} is still there`).not.toBe(0)
      expect(found.stderr).toContain("NotFound")
    }
    await waitFor(async () => (await node.controllerPods()).length === 0, { description: "the controller pods to be gone", timeoutMs: 60_000 })
    const services = JSON.parse(await node.kubectlOk(["get", "services", "--all-namespaces", "-o", "json"])) as { items: Array<{ metadata: { finalizers?: Array<string> } }> }
    expect(services.items.flatMap((s) => s.metadata.finalizers ?? [])).not.toContain("midokura.com/load-balancer-cleanup")
    expect((await node.helm(["status", RELEASE, "--namespace", node.NAMESPACE])).code).not.toBe(0)
  })
})
