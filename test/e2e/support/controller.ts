/**
 * The controller as a real process in a lab node namespace, and the Kubernetes views the
 * e2e tests assert on (Service status, events, the router's table).
 */
import * as fs from "node:fs"
import { Agent, request } from "node:https"
import * as path from "node:path"
import { run } from "../../../scripts/lab/proc.ts"
import {
  createServiceAccountToken,
  kubectl,
  kubectlJson,
  type LabProcess,
  loadLab,
  spawnInNamespace,
  waitFor
} from "./lab.ts"

const root = path.resolve(import.meta.dirname, "../../..")

export interface ControllerProcessOptions {
  /** Lab namespace key (default "lan"). */
  readonly namespace?: "lan" | "lan2"
  readonly nodeName?: string
  readonly healthPort?: number
  readonly metricsPort?: number
  /**
   * Where /metrics listens: on the node's address over HTTPS with bearer tokens, as the
   * DaemonSet runs it (default), or on 127.0.0.1 over plain HTTP (cheaper to poll, for the
   * benchmarks; reachable only from the controller's own namespace).
   */
  readonly metricsOn?: "node" | "loopback"
  /** Extra flags, e.g. ["--resync-interval", "5s"]. */
  readonly flags?: ReadonlyArray<string>
  readonly kubeconfig?: string
  /** Runs this entry point instead of the sources (e.g. the bundle, dist/edge-ccm.mjs). */
  readonly entry?: ReadonlyArray<string>
  readonly env?: Readonly<Record<string, string>>
}

/** Runs `edge-ccm <args>` from the sources, in the node namespace (the test process is already in it). */
export function edgeCcm(args: ReadonlyArray<string>, options: { readonly timeoutMs?: number } = {}) {
  return run([process.execPath, path.join(root, "src/bin.ts"), ...args], { cwd: root, timeoutMs: options.timeoutMs ?? 30_000 })
}

/** A controller process, its /healthz and /readyz base URL, and its /metrics URL. */
export type ControllerUnderTest = LabProcess & { readonly healthUrl: string; readonly metricsUrl: string }

/** Starts `edge-ccm run` and waits until /readyz answers 200 (caches synced, router reachable). */
export async function startController(options: ControllerProcessOptions = {}): Promise<ControllerUnderTest> {
  const lab = loadLab()
  const healthPort = options.healthPort ?? 10258
  const metricsPort = options.metricsPort ?? 10259
  const node = options.namespace === "lan2" ? lab.nodes[1]! : lab.nodes[0]!
  const metricsHost = options.metricsOn === "loopback" ? "127.0.0.1" : node.ip
  const argv = [
    ...(options.entry ?? [process.execPath, path.join(root, "src/bin.ts")]),
    "run",
    "--kubeconfig", options.kubeconfig ?? lab.kubeconfig,
    "--node-name", options.nodeName ?? node.name,
    "--health-bind-address", `${node.ip}:${healthPort}`,
    "--metrics-bind-address", `${metricsHost}:${metricsPort}`,
    "--log-format", "json",
    ...(options.flags ?? [])
  ]
  const proc = spawnInNamespace(options.namespace ?? "lan", argv, { cwd: root, ...(options.env ? { env: options.env } : {}) })
  const healthUrl = `http://${node.ip}:${healthPort}`
  const metricsUrl = `${options.metricsOn === "loopback" ? "http" : "https"}://${metricsHost}:${metricsPort}/metrics`
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
  return Object.assign(proc, { healthUrl, metricsUrl })
}

/** Where manifests/ put the controller: its namespace and ServiceAccount. */
export const MANIFESTS_NAMESPACE = "edge-ccm-system"
export const MANIFESTS_SERVICE_ACCOUNT = "edge-cloud-controller-manager"
/** The unprivileged user the image-like controller runs as (uid and gid `nobody`). */
export const NOBODY = 65534

/**
 * The controller as the image runs it: the startup snapshot scripts/build-artifact.sh put in
 * .lab/artifact (built from the one-file bundle, no node_modules at all) on the pinned Node 24,
 * as `nobody`, authenticated as the manifests' ServiceAccount, with leader election in its
 * namespace. Its rights are RBAC's, no more: apply manifests/ first.
 */
export async function startAsImage(options: { readonly flags?: ReadonlyArray<string> } = {}): Promise<ControllerUnderTest> {
  return await startController({
    kubeconfig: await serviceAccountKubeconfig(MANIFESTS_NAMESPACE, MANIFESTS_SERVICE_ACCOUNT, NOBODY),
    entry: ["setpriv", `--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", ...imageEntry(artifactDir())],
    flags: ["--leader-elect", "--leader-elect-namespace", MANIFESTS_NAMESPACE, ...(options.flags ?? [])]
  })
}

/** Runs `edge-ccm <args>` as the image runs it (the artifact's startup snapshot), in the node namespace. */
export function edgeCcmAsImage(
  args: ReadonlyArray<string>,
  options: { readonly env?: Readonly<Record<string, string>>; readonly timeoutMs?: number } = {}
) {
  return run([...imageEntry(artifactDir()), ...args], {
    cwd: root,
    timeoutMs: options.timeoutMs ?? 30_000,
    ...(options.env === undefined ? {} : { env: options.env })
  })
}

/** .lab/artifact, once scripts/build-artifact.sh has filled it. */
function artifactDir(): string {
  const artifact = path.join(root, ".lab/artifact")
  if (!fs.existsSync(path.join(artifact, "edge-ccm.blob"))) throw new Error("run scripts/build-artifact.sh first (npm test does)")
  if (fs.existsSync(path.join(artifact, "node_modules"))) throw new Error("the artifact holds node_modules: the bundle must run alone")
  return artifact
}

/**
 * The image's command line (the Dockerfile's ENTRYPOINT, its Node flags included) for the
 * snapshot in `dir`, this process's Node in place of the image's, `nodeFlags` after the image's
 * own: the command's arguments follow.
 */
export const imageEntry = (dir: string, nodeFlags: ReadonlyArray<string> = []): Array<string> =>
  [process.execPath, ...imageNodeFlags(), ...nodeFlags, "--snapshot-blob", path.join(dir, "edge-ccm.blob"), "--"]

let entryNodeFlags: Array<string> | undefined
/** The Node flags of the Dockerfile's ENTRYPOINT (those between Node and `--snapshot-blob`), read once. */
function imageNodeFlags(): Array<string> {
  entryNodeFlags ??= readEntryNodeFlags()
  return entryNodeFlags
}

function readEntryNodeFlags(): Array<string> {
  const dockerfile = fs.readFileSync(path.join(root, "Dockerfile"), "utf8")
  const line = dockerfile.split("\n").find((candidate) => candidate.startsWith("ENTRYPOINT "))
  const entry: unknown = JSON.parse(line?.slice("ENTRYPOINT ".length) ?? "null")
  if (!Array.isArray(entry) || !entry.includes("--snapshot-blob")) {
    throw new Error("the Dockerfile has no ENTRYPOINT [node, flags…, --snapshot-blob, …]")
  }
  return entry.slice(1, entry.indexOf("--snapshot-blob")).map(String)
}

/** Kept-alive connections for scrapes; the controller's certificate is self-signed (as curl -k). */
const scrapeConnections = new Agent({ keepAlive: true, rejectUnauthorized: false })

export interface Scrape {
  readonly status: number
  readonly body: string
}

/**
 * GETs the controller's /metrics. Over HTTPS it sends `token` (default: the lab's admin token,
 * which RBAC allows everything) unless `token` is null; plain HTTP on loopback needs none.
 */
export async function scrapeMetrics(
  controller: { readonly metricsUrl: string },
  options: { readonly token?: string | null } = {}
): Promise<Scrape> {
  if (controller.metricsUrl.startsWith("http:")) {
    const response = await fetch(controller.metricsUrl)
    return { status: response.status, body: await response.text() }
  }
  const token = options.token === undefined ? loadLab().adminToken : options.token
  return await new Promise<Scrape>((resolve, reject) => {
    const req = request(controller.metricsUrl, {
      agent: scrapeConnections,
      headers: token === null ? {} : { authorization: `Bearer ${token}` },
      timeout: 10_000
    }, (response) => {
      let body = ""
      response.setEncoding("utf8")
      response.on("data", (chunk: string) => (body += chunk))
      response.on("end", () => resolve({ status: response.statusCode ?? 0, body }))
    })
    req.on("error", reject)
    req.on("timeout", () => req.destroy(new Error(`no answer from ${controller.metricsUrl} within 10 s`)))
    req.end()
  })
}

/** /metrics as the lab's admin would scrape it; throws unless it answers 200. */
export async function metricsText(controller: { readonly metricsUrl: string }): Promise<string> {
  const scrape = await scrapeMetrics(controller)
  if (scrape.status !== 200) throw new Error(`${controller.metricsUrl} answered ${scrape.status}: ${scrape.body.slice(0, 200)}`)
  return scrape.body
}

/** The value of one sample of /metrics (`name` with its labels, as printed), or undefined. */
export function sample(text: string, series: string): number | undefined {
  for (const line of text.split("\n")) {
    if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1))
  }
  return undefined
}

/**
 * A kubeconfig for a token of the ServiceAccount, in a directory the unprivileged user
 * `owner` (uid = gid) can read, with the lab's CA beside it.
 */
export async function serviceAccountKubeconfig(namespace: string, name: string, owner: number): Promise<string> {
  const lab = loadLab()
  const token = await createServiceAccountToken(namespace, name, { expirationSeconds: 3600 })
  const dir = path.join(lab.labDir, `kubeconfig-${namespace}-${name}`)
  fs.mkdirSync(dir, { recursive: true })
  fs.copyFileSync(lab.caFile, path.join(dir, "ca.crt"))
  const file = path.join(dir, "kubeconfig")
  fs.writeFileSync(file, [
    "apiVersion: v1",
    "kind: Config",
    "clusters: [{name: lab, cluster: {server: " + JSON.stringify(lab.apiserverUrl) + ", certificate-authority: " +
    JSON.stringify(path.join(dir, "ca.crt")) + "}}]",
    "users: [{name: controller, user: {token: " + JSON.stringify(token) + "}}]",
    "contexts: [{name: lab, context: {cluster: lab, user: controller}}]",
    "current-context: lab",
    ""
  ].join("\n"), { mode: 0o600 })
  fs.chownSync(dir, owner, owner)
  for (const entry of fs.readdirSync(dir)) fs.chownSync(path.join(dir, entry), owner, owner)
  return file
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
  controller: { readonly metricsUrl: string },
  metric: string,
  label: string
): Promise<Record<string, number>> {
  const text = await metricsText(controller)
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
export const gatewayCalls = (controller: { readonly metricsUrl: string }) =>
  counterBy(controller, "edge_ccm_gateway_requests_total", "action")

/** Full passes by result, complete or incomplete (edge_ccm_full_passes_total). */
export const fullPasses = (controller: { readonly metricsUrl: string }) =>
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
