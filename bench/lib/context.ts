/** What every scenario gets: the options, the clients, the watch, the log and the PIDs to meter. */
import * as fs from "node:fs"
import * as path from "node:path"
import { loadLab, rebootGateway } from "../../test/e2e/support/lab.ts"
import { type Controller, start, type Started, stop, waitIdle } from "./controller.ts"
import { gatewayAlive, tableCount, waitTable } from "./gateway.ts"
import { type Clients, mergePatch, NAMESPACE, pool, retrying, type ServiceTracker } from "./kube.ts"
import type { SoapClient } from "./soap.ts"
import type { Row } from "./stats.ts"

export interface Options {
  readonly quick: boolean
  readonly profile: boolean
  /** Node flags every controller is started with: the DaemonSet's NODE_OPTIONS unless told. */
  readonly nodeFlags: ReadonlyArray<string>
  /** Environment every controller is started with besides NODE_OPTIONS: the DaemonSet's (MALLOC_ARENA_MAX). */
  readonly nodeEnv: Readonly<Record<string, string>>
  /** Scenarios to run (all by default). */
  readonly only: ReadonlySet<string> | undefined
  readonly addressSamples: number
  readonly addressUnpolledSamples: number
  /** SOAP poll interval while waiting for a mapping to appear, ms. */
  readonly pollMs: number
  readonly bulkServices: number
  readonly bulkRounds: number
  /** Services created and deleted, untimed, by the floor client and by each controller before its bulk (0: cold). */
  readonly bulkWarmUp: number
  readonly idleWindowMs: number
  readonly scaleOthers: number
  readonly scaleOurs: number
  readonly resyncLevels: ReadonlyArray<number>
  readonly resyncCountInterval: string
  readonly resyncWindows: number
  readonly startupSamples: number
  /** Parallel create/delete requests of the benchmark's own client. */
  readonly clientConcurrency: number
  /** The controller's defaults, which the floors are held to: router calls and Services in flight. */
  readonly gatewayConcurrency: number
  readonly workers: number
}

export interface Context {
  readonly opts: Options
  readonly c: Clients
  readonly tracker: ServiceTracker
  readonly soap: SoapClient
  readonly log: (message: string) => void
  readonly resultsDir: string
  /** Prefix of this run's files in resultsDir. */
  readonly runStamp: string
  readonly profileDir: string | undefined
  /** Starts a controller (profiled when asked) and notes what it was started with. */
  startController(name: string, flags: ReadonlyArray<string>, options?: { readonly fromSources?: boolean }): Promise<Started>
  stopController(controller: Controller): Promise<void>
  /** The tail of the last started controller's output, for a failure report. */
  lastControllerOutput(): string
  /** Writes the last started controller's whole output next to the results; returns the file. */
  saveControllerLog(tag: string): string
  /** After a failure: every Service of the benchmark released and deleted, the router's table emptied. */
  recover(): Promise<void>
  /** The processes whose CPU is metered, looked up afresh (the gateway's PID changes on reboot). */
  pids(controller?: Controller): Record<string, number | undefined>
}

export interface ScenarioResult {
  readonly rows: ReadonlyArray<Row>
  readonly raw: Record<string, unknown>
}

export function makeContext(
  base: Omit<Context, "startController" | "stopController" | "pids" | "lastControllerOutput" | "saveControllerLog" | "recover">
): Context {
  let profiles = 0
  let last: Controller | undefined
  const ctx: Context = {
    ...base,
    startController: async (name, flags, options) => {
      profiles++
      if (base.profileDir !== undefined) fs.mkdirSync(base.profileDir, { recursive: true })
      const started = await start({
        flags,
        nodeFlags: base.opts.nodeFlags,
        env: base.opts.nodeEnv,
        fromSources: options?.fromSources,
        profileDir: base.profileDir,
        profileName: base.profileDir === undefined ? undefined : `${String(profiles).padStart(2, "0")}-${name}.cpuprofile`
      })
      last = started.controller
      return started
    },
    lastControllerOutput: () => last?.output().slice(-4000) ?? "",
    saveControllerLog: (tag) => {
      const file = path.join(base.resultsDir, `${base.runStamp}-${tag}.log`)
      fs.writeFileSync(file, last?.output() ?? "")
      return file
    },
    recover: () => recover(ctx),
    stopController: stop,
    pids: (controller) => {
      const raw = loadLab().raw
      return {
        controller: controller?.pid,
        "kube-apiserver": raw.controlPlane?.apiserver?.pid,
        etcd: raw.controlPlane?.etcd?.pid,
        miniupnpd: raw.gateway.process?.pid,
        "benchmark client": process.pid
      }
    }
  }
  return ctx
}

async function recover(ctx: Context): Promise<void> {
  const log = ctx.log
  try {
    if (!gatewayAlive()) {
      log("recovery: miniupnpd is dead; rebooting the gateway")
      await rebootGateway()
    }
    const { controller } = await ctx.startController("recover", [])
    try {
      const list = await ctx.c.core.listNamespacedService({ namespace: NAMESPACE })
      const names = list.items.map((s) => s.metadata?.name ?? "")
      await pool(names, ctx.opts.clientConcurrency, (name) =>
        retrying("delete", () => ctx.c.core.deleteNamespacedService({ namespace: NAMESPACE, name })).catch(() => undefined)
      )
      // The floor's own finalizer has no controller: release it here.
      for (const service of list.items) {
        if (service.metadata?.finalizers?.some((f) => f.startsWith("bench.")) === true) {
          await ctx.c.core.patchNamespacedService({
            namespace: NAMESPACE,
            name: service.metadata.name ?? "",
            body: { metadata: { finalizers: service.metadata.finalizers.filter((f) => !f.startsWith("bench.")) } }
          }, mergePatch).catch(() => undefined)
        }
      }
      await ctx.tracker.until(() => ctx.tracker.count(names, (s) => s.goneAt !== undefined) === names.length, { timeoutMs: 300_000, description: "cleanup" })
      await waitIdle(controller, { quietMs: 500, timeoutMs: 60_000 })
    } finally {
      await ctx.stopController(controller)
    }
  } catch (error) {
    log(`recovery incomplete: ${String(error)}`)
  }
  // Whatever is left on the router goes with a reboot.
  if ((await tableCount().catch(() => 1)) > 0 || !gatewayAlive()) {
    await rebootGateway()
    await waitTable((count) => count === 0, { intervalMs: 100, timeoutMs: 10_000, description: "an empty table" }).catch(() => undefined)
  }
}

export const resultsRoot = path.resolve(import.meta.dirname, "..", "results")
