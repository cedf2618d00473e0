/**
 * The Kubernetes side of the benchmarks: client-node clients, Service manifests, bounded
 * parallel creation, a watch that timestamps what happens to every Service, and the
 * apiserver's own request counters.
 */
import * as k8s from "@kubernetes/client-node"
import * as fs from "node:fs"
import * as https from "node:https"
import { kubeConfig, loadLab } from "../../test/e2e/support/lab.ts"
import { now, sleep } from "./stats.ts"

export const NAMESPACE = "bench"
export const OPT_IN = { "midokura.com/load-balancer-type": "upnp-igd" } as const
export const FLOOR_FINALIZER = "bench.edge-ccm.test/floor"

export interface Clients {
  readonly kc: k8s.KubeConfig
  readonly core: k8s.CoreV1Api
}

/**
 * client-node 2.0.1 builds a new undici Agent for every request (KubeConfig.
 * applySecurityAuthentication), so each request opens its own TCP + TLS connection. A
 * minimal client keeps its connections: one dispatcher, made once, is put back on every
 * request. The controller is measured as it is.
 */
export async function clients(): Promise<Clients> {
  const kc = kubeConfig()
  const cluster = kc.getCurrentCluster()
  if (cluster === null) throw new Error("the lab's kubeconfig names no cluster")
  const probe = new k8s.RequestContext(cluster.server, k8s.HttpMethod.GET)
  await kc.applySecurityAuthentication(probe)
  const dispatcher = probe.getDispatcher()
  const reuse: k8s.ObservableMiddleware = {
    pre: (request) => {
      if (dispatcher !== undefined) request.setDispatcher(dispatcher)
      return new k8s.Observable(Promise.resolve(request))
    },
    post: (response) => new k8s.Observable(Promise.resolve(response))
  }
  const configuration = k8s.createConfiguration({
    baseServer: new k8s.ServerConfiguration(cluster.server, {}),
    authMethods: { default: kc },
    middleware: [reuse]
  })
  return { kc, core: new k8s.CoreV1Api(configuration) }
}

export const mergePatch = k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.MergePatch)

export async function ensureNamespace(core: k8s.CoreV1Api): Promise<void> {
  try {
    await core.createNamespace({ body: { metadata: { name: NAMESPACE } } })
  } catch (error) {
    if (!/AlreadyExists|already exists|409/.test(String((error as { body?: unknown }).body ?? error))) throw error
  }
}

export interface PortSpec {
  readonly name: string
  readonly port: number
  readonly protocol: "TCP" | "UDP"
}

/** A LoadBalancer Service, opted in (ours) or not (left alone by the controller). */
export function loadBalancer(name: string, ports: ReadonlyArray<PortSpec>, ours: boolean): k8s.V1Service {
  return {
    metadata: { name, namespace: NAMESPACE, ...(ours ? { annotations: { ...OPT_IN } } : {}) },
    spec: {
      type: "LoadBalancer",
      selector: { app: name },
      ports: ports.map((p) => ({ name: p.name, port: p.port, targetPort: 80, protocol: p.protocol }))
    }
  }
}

/** A plain ClusterIP Service: the cluster's other workloads, which the controller must only skim. */
export function clusterIp(name: string): k8s.V1Service {
  return {
    metadata: { name, namespace: NAMESPACE },
    spec: { type: "ClusterIP", selector: { app: name }, ports: [{ name: "http", port: 80, targetPort: 8080, protocol: "TCP" }] }
  }
}

/** Runs `fn` over `items` with at most `concurrency` in flight; results in input order. */
export async function pool<T, R>(items: ReadonlyArray<T>, concurrency: number, fn: (item: T, index: number) => Promise<R>): Promise<Array<R>> {
  const results = new Array<R>(items.length)
  let next = 0
  const lanes = Array.from({ length: Math.min(concurrency, items.length) }, async () => {
    while (next < items.length) {
      const index = next++
      results[index] = await fn(items[index]!, index)
    }
  })
  await Promise.all(lanes)
  return results
}

/** Retries an apiserver call on 429/5xx and connection resets: a busy 2-core apiserver sheds load. */
export async function retrying<T>(what: string, f: () => Promise<T>, attempts = 8): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await f()
    } catch (error) {
      const code = (error as { code?: number }).code
      const transient = code === 429 || (code !== undefined && code >= 500) || /ECONNRESET|socket hang up|ETIMEDOUT/.test(String(error))
      if (!transient || attempt >= attempts) throw new Error(`${what}: ${String((error as { body?: unknown }).body ?? error)}`)
      await sleep(50 * attempt)
    }
  }
}

export interface ServiceRecord {
  name: string
  uid: string | undefined
  /** When the watch first showed it. */
  seenAt: number
  /** When the watch first showed `status.loadBalancer.ingress[0].ip`. */
  statusAt: number | undefined
  ip: string | undefined
  /** Ports listed in the status with an error. */
  portErrors: number
  finalizers: ReadonlyArray<string>
  annotations: Readonly<Record<string, string>>
  deletingAt: number | undefined
  goneAt: number | undefined
  nodePorts: ReadonlyArray<number>
}

interface Waiter {
  readonly check: () => boolean
  readonly resolve: (at: number) => void
}

/**
 * One watch on the benchmark namespace, timestamping each Service's milestones as the events
 * arrive. `until(condition)` resolves with the arrival time of the event that made it true.
 */
export class ServiceTracker {
  readonly records = new Map<string, ServiceRecord>()
  private readonly waiters = new Set<Waiter>()
  private abort: AbortController | undefined
  private stopped = false
  private resourceVersion = ""
  events = 0

  private readonly c: Clients

  constructor(c: Clients) {
    this.c = c
  }

  async start(): Promise<void> {
    await this.relist()
    await this.watch()
  }

  stop(): void {
    this.stopped = true
    this.abort?.abort()
  }

  private async relist(): Promise<void> {
    const list = await retrying("list services", () => this.c.core.listNamespacedService({ namespace: NAMESPACE }))
    const at = now()
    const present = new Set<string>()
    for (const item of list.items) {
      present.add(item.metadata?.name ?? "")
      this.apply(item, at, false)
    }
    for (const record of this.records.values()) {
      if (!present.has(record.name) && record.goneAt === undefined) record.goneAt = at
    }
    this.resourceVersion = list.metadata?.resourceVersion ?? ""
    this.settle(at)
  }

  private async watch(): Promise<void> {
    const watch = new k8s.Watch(this.c.kc)
    // client-node gives up after 30 s of silence; idle phases are longer than that.
    Object.assign(watch, { requestTimeoutMs: 15 * 60_000 })
    this.abort = await watch.watch(
      `/api/v1/namespaces/${NAMESPACE}/services`,
      { resourceVersion: this.resourceVersion, allowWatchBookmarks: true },
      (phase: string, object: k8s.V1Service) => {
        const at = now()
        if (phase === "BOOKMARK") {
          this.resourceVersion = object.metadata?.resourceVersion ?? this.resourceVersion
          return
        }
        if (phase === "ERROR") return
        this.events += 1
        this.resourceVersion = object.metadata?.resourceVersion ?? this.resourceVersion
        this.apply(object, at, phase === "DELETED")
        this.settle(at)
      },
      () => {
        if (this.stopped) return
        // Resume from a fresh list: whatever happened in between is folded in.
        void sleep(100).then(() => this.relist()).then(() => this.watch()).catch((error: unknown) => {
          console.error(`[bench] service watch failed: ${String(error)}`)
        })
      }
    )
  }

  private apply(service: k8s.V1Service, at: number, deleted: boolean): void {
    const name = service.metadata?.name ?? ""
    const uid = service.metadata?.uid
    let record = this.records.get(name)
    if (record === undefined || (record.uid !== undefined && uid !== undefined && record.uid !== uid)) {
      record = {
        name,
        uid,
        seenAt: at,
        statusAt: undefined,
        ip: undefined,
        portErrors: 0,
        finalizers: [],
        annotations: {},
        deletingAt: undefined,
        goneAt: undefined,
        nodePorts: []
      }
      this.records.set(name, record)
    }
    const ingress = service.status?.loadBalancer?.ingress?.[0]
    if (ingress?.ip !== undefined && record.statusAt === undefined) record.statusAt = at
    record.ip = ingress?.ip
    record.portErrors = (ingress?.ports ?? []).filter((p) => p.error !== undefined).length
    record.finalizers = service.metadata?.finalizers ?? []
    record.annotations = service.metadata?.annotations ?? {}
    record.nodePorts = (service.spec?.ports ?? []).flatMap((p) => (p.nodePort === undefined ? [] : [p.nodePort]))
    if (service.metadata?.deletionTimestamp !== undefined && record.deletingAt === undefined) record.deletingAt = at
    if (deleted) record.goneAt = at
  }

  private settle(at: number): void {
    for (const waiter of [...this.waiters]) {
      if (waiter.check()) {
        this.waiters.delete(waiter)
        waiter.resolve(at)
      }
    }
  }

  /** Forgets everything known about these names (a new round reuses them). */
  forget(names: Iterable<string>): void {
    for (const name of names) this.records.delete(name)
  }

  /** Resolves with the time of the event that made `check` true (now, if it already is). */
  until(check: () => boolean, options: { timeoutMs: number; description: string; detail?: () => string }): Promise<number> {
    if (check()) return Promise.resolve(now())
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(waiter)
        reject(new Error(`timed out after ${options.timeoutMs} ms waiting for ${options.description}${options.detail ? ` (${options.detail()})` : ""}`))
      }, options.timeoutMs)
      const waiter: Waiter = {
        check,
        resolve: (at) => {
          clearTimeout(timer)
          resolve(at)
        }
      }
      this.waiters.add(waiter)
    })
  }

  /** How many of `names` satisfy `predicate`. */
  count(names: ReadonlyArray<string>, predicate: (record: ServiceRecord) => boolean): number {
    let n = 0
    for (const name of names) {
      const record = this.records.get(name)
      if (record !== undefined && predicate(record)) n++
    }
    return n
  }

  /** The latest time `pick` gives over `names` (all must have it). */
  latest(names: ReadonlyArray<string>, pick: (record: ServiceRecord) => number | undefined): number {
    let latest = 0
    for (const name of names) latest = Math.max(latest, pick(this.records.get(name)!) ?? Number.NaN)
    return latest
  }
}

/** `apiserver_request_total` summed by verb and resource (with subresource), from the apiserver's /metrics. */
export async function apiserverRequests(): Promise<Map<string, number>> {
  const lab = loadLab()
  const url = new URL("/metrics", lab.apiserverUrl)
  const text = await new Promise<string>((resolve, reject) => {
    const request = https.get(url, { ca: fs.readFileSync(lab.caFile), headers: { authorization: `Bearer ${lab.adminToken}` } }, (response) => {
      const chunks: Array<Buffer> = []
      response.on("data", (chunk: Buffer) => chunks.push(chunk))
      response.on("end", () => resolve(Buffer.concat(chunks).toString("utf8")))
      response.on("error", reject)
    })
    request.on("error", reject)
  })
  const totals = new Map<string, number>()
  for (const line of text.split("\n")) {
    if (!line.startsWith("apiserver_request_total{")) continue
    const labels = line.slice(line.indexOf("{") + 1, line.lastIndexOf("}"))
    const label = (key: string) => new RegExp(`(?:^|,)${key}="([^"]*)"`).exec(labels)?.[1] ?? ""
    const resource = label("resource") + (label("subresource") === "" ? "" : `/${label("subresource")}`)
    const key = `${label("verb")} ${resource}`
    totals.set(key, (totals.get(key) ?? 0) + Number(line.slice(line.lastIndexOf(" ") + 1)))
  }
  return totals
}

/** The difference of two `apiserverRequests()` snapshots, largest first, zeros dropped. */
export function requestDelta(before: Map<string, number>, after: Map<string, number>): Record<string, number> {
  const delta: Array<[string, number]> = []
  for (const [key, value] of after) {
    const d = value - (before.get(key) ?? 0)
    if (d > 0) delta.push([key, d])
  }
  return Object.fromEntries(delta.sort((a, b) => b[1] - a[1]))
}
