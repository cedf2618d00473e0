/**
 * The controller as a real process in a lab node namespace, and the Kubernetes views the
 * e2e tests assert on (Service status, events, the router's table).
 */
import * as path from "node:path"
import { run } from "../../../scripts/lab/proc.ts"
import { kubectl, kubectlJson, type LabProcess, loadLab, spawnInNamespace, waitFor } from "./lab.ts"

const root = path.resolve(import.meta.dirname, "../../..")

export interface ControllerProcessOptions {
  /** Lab namespace key (default "lan"). */
  readonly namespace?: "lan" | "lan2"
  readonly nodeName?: string
  readonly healthPort?: number
  /** Extra flags, e.g. ["--resync-interval", "5s"]. */
  readonly flags?: ReadonlyArray<string>
  readonly kubeconfig?: string
  /** Runs this entry point instead of the sources (e.g. the compiled dist/bin.js). */
  readonly entry?: ReadonlyArray<string>
  readonly env?: Readonly<Record<string, string>>
}

/** Runs `edge-ccm <args>` from the sources, in the node namespace (the test process is already in it). */
export function edgeCcm(args: ReadonlyArray<string>, options: { readonly timeoutMs?: number } = {}) {
  return run([process.execPath, path.join(root, "src/bin.ts"), ...args], { cwd: root, timeoutMs: options.timeoutMs ?? 30_000 })
}

/** Starts `edge-ccm run` and waits until /readyz answers 200 (caches synced, router reachable). */
export async function startController(options: ControllerProcessOptions = {}): Promise<LabProcess & { readonly healthUrl: string }> {
  const lab = loadLab()
  const healthPort = options.healthPort ?? 10258
  const node = options.namespace === "lan2" ? lab.nodes[1]! : lab.nodes[0]!
  const argv = [
    ...(options.entry ?? [process.execPath, path.join(root, "src/bin.ts")]),
    "run",
    "--kubeconfig", options.kubeconfig ?? lab.kubeconfig,
    "--node-name", options.nodeName ?? node.name,
    "--health-bind-address", `${node.ip}:${healthPort}`,
    "--log-format", "json",
    ...(options.flags ?? [])
  ]
  const proc = spawnInNamespace(options.namespace ?? "lan", argv, { cwd: root, ...(options.env ? { env: options.env } : {}) })
  const healthUrl = `http://${node.ip}:${healthPort}`
  let exited = false
  void proc.exited.then(() => {
    exited = true
  })
  try {
    await waitFor(async () => {
      if (exited) throw new Error("the controller exited")
      const response = await fetch(`${healthUrl}/readyz`)
      return response.status === 200
    }, { description: "the controller's /readyz to answer 200", timeoutMs: 30_000, intervalMs: 100 })
  } catch (error) {
    await proc.stop({ signal: "SIGKILL" })
    throw new Error(`${(error as Error).message}\ncontroller output:\n${proc.output().slice(-3000)}`)
  }
  return Object.assign(proc, { healthUrl })
}

export interface ServiceView {
  readonly metadata: {
    readonly name: string
    readonly finalizers?: Array<string>
    readonly annotations?: Record<string, string>
    readonly deletionTimestamp?: string
  }
  readonly spec: { readonly ports: Array<{ name?: string; port: number; nodePort?: number; protocol: string }> }
  readonly status?: {
    readonly loadBalancer?: {
      readonly ingress?: Array<{ ip?: string; ports?: Array<{ port: number; protocol: string; error?: string }> }>
    }
  }
}

/** The Service, or undefined once it is gone. */
export async function getService(name: string, namespace = "default"): Promise<ServiceView | undefined> {
  try {
    return await kubectlJson<ServiceView>(["get", "service", name, "-n", namespace])
  } catch (error) {
    if (/NotFound|not found/.test((error as Error).message)) return undefined
    throw error
  }
}

export interface EventView {
  readonly reason: string
  readonly type: string
  readonly note: string
  readonly regarding: { readonly name: string; readonly kind: string }
  readonly reportingController: string
}

/** events.k8s.io/v1 Events about one object. */
export async function eventsFor(name: string, namespace = "default"): Promise<Array<EventView>> {
  const list = await kubectlJson<{ items: Array<EventView> }>(["get", "events.events.k8s.io", "-n", namespace])
  return list.items.filter((event) => event.regarding.name === name)
}

export const ingressIp = (service: ServiceView | undefined): string | undefined =>
  service?.status?.loadBalancer?.ingress?.[0]?.ip

export const portError = (service: ServiceView | undefined, port: number): string | undefined =>
  service?.status?.loadBalancer?.ingress?.[0]?.ports?.find((p) => p.port === port)?.error

/** A LoadBalancer Service manifest with our annotation (unless `annotations` says otherwise). */
export function loadBalancerService(name: string, options: {
  readonly ports: ReadonlyArray<{ name: string; port: number; protocol?: "TCP" | "UDP" }>
  readonly annotations?: Readonly<Record<string, string>>
  readonly loadBalancerClass?: string
}): string {
  return JSON.stringify({
    apiVersion: "v1",
    kind: "Service",
    metadata: {
      name,
      namespace: "default",
      annotations: options.annotations ?? { "midokura.com/load-balancer-type": "upnp-igd" }
    },
    spec: {
      type: "LoadBalancer",
      selector: { app: name },
      ...(options.loadBalancerClass === undefined ? {} : { loadBalancerClass: options.loadBalancerClass }),
      ports: options.ports.map((p) => ({ name: p.name, port: p.port, targetPort: 80, protocol: p.protocol ?? "TCP" }))
    }
  })
}

/**
 * Deletes every Service a test made in `default` (all but the apiserver's own), and waits until
 * they are gone: run it while a controller still runs, so finalizers are honoured and a failed
 * test leaves nothing for the next file.
 */
export async function deleteTestServices(): Promise<void> {
  await kubectl(["delete", "service", "-n", "default", "--field-selector", "metadata.name!=kubernetes", "--wait=false"])
  await waitFor(async () => {
    const list = await kubectlJson<{ items: Array<{ metadata: { name: string } }> }>(["get", "services", "-n", "default"])
    return list.items.every((item) => item.metadata.name === "kubernetes")
  }, { description: "every test Service to be gone", timeoutMs: 60_000 })
}

/** A counter from the controller's /metrics, summed by the value of one label. */
export async function counterBy(
  controller: { readonly healthUrl: string },
  metric: string,
  label: string
): Promise<Record<string, number>> {
  const text = await (await fetch(`${controller.healthUrl}/metrics`)).text()
  const counts: Record<string, number> = {}
  const labelPattern = new RegExp(`${label}="([^"]*)"`)
  for (const line of text.split("\n")) {
    if (!line.startsWith(`${metric}{`)) continue
    const value = labelPattern.exec(line)?.[1] ?? "?"
    counts[value] = (counts[value] ?? 0) + Number(line.slice(line.lastIndexOf(" ") + 1))
  }
  return counts
}

/** The controller's own count of router calls by action (edge_ccm_gateway_requests_total). */
export const gatewayCalls = (controller: { readonly healthUrl: string }) =>
  counterBy(controller, "edge_ccm_gateway_requests_total", "action")

/** Full passes by result, complete or incomplete (edge_ccm_full_passes_total). */
export const fullPasses = (controller: { readonly healthUrl: string }) =>
  counterBy(controller, "edge_ccm_full_passes_total", "result")

/** after − before, by key, zeros dropped. */
export function countDelta(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  const delta: Record<string, number> = {}
  for (const [key, value] of Object.entries(after)) {
    const d = value - (before[key] ?? 0)
    if (d !== 0) delta[key] = d
  }
  return delta
}
