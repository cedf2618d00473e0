/**
 * What the real-node e2e tests (test/e2e/real-node/) use: the product deployed as users deploy
 * it, on a lab started with `--real-node` (kubelet, kube-proxy, containerd; images built here).
 * The controller runs as a pod; its process, cgroup and logs are read where kubelet put them.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import type { RealNodeState } from "../../../scripts/lab/driver.ts"
import { compressedSize, type CompressedSize, hostArch, imageStore } from "../../../scripts/lab/images.ts"
import { run, type RunResult } from "../../../scripts/lab/proc.ts"
import { curlFromWan, kubectl, kubectlJson, loadLab, waitFor } from "./lab.ts"

export const root = path.resolve(import.meta.dirname, "../../..")
export const MANIFESTS = path.join(root, "manifests")
export const EXAMPLE = path.join(root, "examples/loadbalancers/upnp-igd-http-nginx.yaml")
export const CHART = path.join(root, "charts/edge-cloud-controller-manager")
export const NAMESPACE = "edge-ccm-system"
export const CONTROLLER = "edge-cloud-controller-manager"

/** The lab's real node; throws unless the test file runs in a lab started with `--real-node` and `nodes` nodes. */
export function realNode(nodes = 1): RealNodeState {
  const state = loadLab().raw.realNode
  if (state === null) throw new Error("this file needs a lab with a real node: its first lines must say `// e2e lab: --real-node`")
  if (state.nodes.length < nodes) throw new Error(`this file needs ${nodes} real nodes: \`// e2e lab: --real-node --nodes ${nodes}\``)
  return state
}

/** kubectl that must succeed: its stdout, or an error carrying its stderr. */
export async function kubectlOk(args: ReadonlyArray<string>, options: { input?: string; timeoutMs?: number } = {}): Promise<string> {
  const r = await kubectl(args, options)
  if (r.code !== 0) throw new Error(`kubectl ${args.join(" ")} failed (${r.code}): ${r.stderr.trim()}`)
  return r.stdout
}

/** Waits for a DaemonSet's or Deployment's rollout (`kubectl rollout status`). */
export async function rollout(resource: string, namespace = "default", timeoutSeconds = 180): Promise<void> {
  await kubectlOk(["rollout", "status", resource, "-n", namespace, `--timeout=${timeoutSeconds}s`], { timeoutMs: (timeoutSeconds + 10) * 1000 })
}

export interface PodView {
  readonly metadata: { readonly name: string; readonly uid: string; readonly namespace: string; readonly deletionTimestamp?: string }
  readonly spec: {
    readonly nodeName?: string
    readonly volumes?: ReadonlyArray<{ readonly name: string; readonly projected?: { readonly sources: ReadonlyArray<Record<string, unknown>> } }>
  }
  readonly status: {
    readonly phase: string
    readonly podIP?: string
    readonly conditions?: ReadonlyArray<{ readonly type: string; readonly status: string }>
    readonly containerStatuses?: ReadonlyArray<{
      readonly name: string
      readonly ready: boolean
      readonly image: string
      readonly imageID: string
      readonly containerID?: string
      readonly restartCount: number
    }>
  }
}

/** Pods matching a label selector (not being deleted). */
export async function pods(selector: string, namespace = "default"): Promise<Array<PodView>> {
  const list = await kubectlJson<{ items: Array<PodView> }>(["get", "pods", "-n", namespace, "-l", selector])
  return list.items.filter((p) => p.metadata.deletionTimestamp === undefined)
}

export const controllerPods = () => pods(`app.kubernetes.io/name=${CONTROLLER}`, NAMESPACE)
export const nginxPods = () => pods("app=nginx")

export const isReady = (pod: PodView): boolean =>
  pod.status.phase === "Running" && pod.status.conditions?.some((c) => c.type === "Ready" && c.status === "True") === true

/** The pod holding the controller's leader Lease (its holder identity is the pod's name). */
export async function leaderPod(): Promise<string> {
  const lease = await kubectlJson<{ spec: { holderIdentity?: string } }>(["get", "lease", CONTROLLER, "-n", NAMESPACE])
  return lease.spec.holderIdentity ?? ""
}

/** The LAN address of a lab node, by its Node name. */
export function nodeIp(nodeName: string | undefined): string {
  const node = loadLab().nodes.find((n) => n.name === nodeName)
  if (node === undefined) throw new Error(`no lab node named ${nodeName}`)
  return node.ip
}

/** A curl from the Internet side through the router; the nginx pod that answered, or undefined. */
export async function nginxAnswer(port = 8080): Promise<{ readonly pod: string; readonly body: string } | undefined> {
  const answer = await curlFromWan(`http://${loadLab().gatewayWanIp}:${port}/`, { timeoutMs: 3000 })
  const pod = /^Welcome to nginx! Served by pod (\S+)$/m.exec(answer.body)?.[1]
  return answer.ok && pod !== undefined ? { pod, body: answer.body.trim() } : undefined
}

/**
 * The machine's cgroup hierarchies. The tests run under `ip netns exec`, which mounts a /sys of
 * the lab namespace's own, without them: they are read through the root of a process in the
 * machine's mount namespace (the first node's kubelet).
 */
function cgroups(): string {
  const kubelet = realNode().nodes[0]?.kubelet
  if (kubelet === null || kubelet === undefined) throw new Error("no kubelet runs")
  return `/proc/${kubelet.pid}/root/sys/fs/cgroup`
}

/** The directory of a pod's cgroup in one hierarchy (`memory`, `pids`, …) under its node's cgroup root. */
export function podCgroup(pod: PodView, hierarchy: string): string {
  const member = realNode().nodes.find((n) => n.name === pod.spec.nodeName)
  if (member === undefined) throw new Error(`pod ${pod.metadata.name} is on no real node of this lab`)
  const base = path.join(cgroups(), hierarchy, member.cgroupRoot, "kubepods")
  const name = `pod${pod.metadata.uid}`
  for (const candidate of [path.join(base, name), path.join(base, "burstable", name), path.join(base, "besteffort", name)]) {
    if (fs.existsSync(candidate)) return candidate
  }
  throw new Error(`no ${hierarchy} cgroup for pod ${pod.metadata.name} under ${base}`)
}

/** The PID of a pod's container process, from its cgroup (the container's ID names the leaf). */
export function containerPid(pod: PodView, container: string): number {
  const id = pod.status.containerStatuses?.find((c) => c.name === container)?.containerID?.replace(/^containerd:\/\//, "")
  if (id === undefined) throw new Error(`pod ${pod.metadata.name} has no running ${container} container`)
  const procs = fs.readFileSync(path.join(podCgroup(pod, "pids"), id, "cgroup.procs"), "utf8").trim().split("\n")
  const pid = Number(procs[0])
  if (!Number.isInteger(pid) || pid <= 0) throw new Error(`no process in container ${container} of ${pod.metadata.name}`)
  return pid
}

export interface PodMemory {
  /** memory.usage_in_bytes: everything charged to the pod (its containers and the pause process). */
  readonly usage: number
  readonly limit: number
  /** total_rss of memory.stat: anonymous memory. */
  readonly rss: number
  /** usage minus inactive file pages: what kubelet counts against the limit. */
  readonly workingSet: number
}

/** A pod's own memory, read from its cgroup (v1 memory controller). */
export function podMemory(pod: PodView): PodMemory {
  const dir = podCgroup(pod, "memory")
  const read = (file: string) => Number(fs.readFileSync(path.join(dir, file), "utf8").trim())
  const stat = new Map(fs.readFileSync(path.join(dir, "memory.stat"), "utf8").trim().split("\n").map((line) => {
    const [key = "", value = "0"] = line.split(" ")
    return [key, Number(value)] as const
  }))
  const usage = read("memory.usage_in_bytes")
  return { usage, limit: read("memory.limit_in_bytes"), rss: stat.get("total_rss") ?? 0, workingSet: usage - (stat.get("total_inactive_file") ?? 0) }
}

/**
 * The controller image the nodes imported, measured as docs/benchmarks.md measures it (gzip
 * layers in an OCI layout), from the lab's image store beside the node's binaries.
 */
export function controllerImageSize(): Promise<CompressedSize> {
  const state = realNode()
  const image = state.images.find((i) => i.role === "controller")
  if (image === undefined) throw new Error("the real node imported no controller image")
  return compressedSize(imageStore(path.dirname(state.binDir), hostArch()), image.reference)
}

export const mib = (bytes: number) => `${(bytes / 1024 / 1024).toFixed(1)} MiB`

const QUANTITY_UNITS: Record<string, number> = { "": 1, k: 1e3, M: 1e6, G: 1e9, Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3 }

/** The controller container's memory limit as manifests/daemonset.yaml sets it, in bytes (what kubelet writes to the cgroup). */
export async function manifestsMemoryLimit(): Promise<number> {
  const rendered = await kubectlOk(["kustomize", MANIFESTS])
  const quantity = /^\s*limits:\s*\n\s*memory:\s*(\d+)([kMG]i?)?\s*$/m.exec(rendered)
  const unit = QUANTITY_UNITS[quantity?.[2] ?? ""]
  if (quantity === null || unit === undefined) throw new Error("manifests/daemonset.yaml sets no memory limit this test can read")
  return Number(quantity[1]) * unit
}

/** helm (built beside the control plane) against the lab, its caches in the lab directory. */
export function helm(args: ReadonlyArray<string>, options: { timeoutMs?: number } = {}): Promise<RunResult> {
  const lab = loadLab()
  const home = path.join(lab.labDir, "helm")
  return run([path.join(realNode().binDir, "helm"), ...args], {
    timeoutMs: options.timeoutMs ?? 180_000,
    env: {
      KUBECONFIG: lab.kubeconfig,
      HELM_CACHE_HOME: path.join(home, "cache"),
      HELM_CONFIG_HOME: path.join(home, "config"),
      HELM_DATA_HOME: path.join(home, "data")
    }
  })
}

/** Waits until the example's Service shows the router's public address as its EXTERNAL-IP. */
export async function exampleExternalIp(): Promise<string> {
  return waitFor(async () => {
    const service = await kubectlJson<{ status?: { loadBalancer?: { ingress?: Array<{ ip?: string }> } } }>(["get", "service", "http-nginx-service"])
    const ip = service.status?.loadBalancer?.ingress?.[0]?.ip
    return ip === loadLab().gatewayWanIp ? ip : undefined
  }, { description: "http-nginx-service's EXTERNAL-IP", timeoutMs: 60_000 })
}

/**
 * Deletes the example while the controller still runs (its finalizer honoured: the mapping goes
 * first) and waits until the Service is gone.
 */
export async function deleteExample(): Promise<void> {
  await kubectl(["delete", "-f", EXAMPLE, "--ignore-not-found", "--wait=false"])
  await waitFor(async () => (await kubectl(["get", "service", "http-nginx-service"])).code !== 0, {
    description: "http-nginx-service to be gone (its finalizer removed by the controller)",
    timeoutMs: 60_000
  })
}

/** Deletes what `kubectl apply -k manifests` made (their namespace too) and waits until it is gone. */
export async function deleteManifests(): Promise<void> {
  await kubectl(["delete", "-k", MANIFESTS, "--ignore-not-found", "--wait=true", "--timeout=120s"], { timeoutMs: 130_000 })
}
