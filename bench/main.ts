/**
 * The benchmarks (issue 7), run inside the lab's node namespace by bench/run.sh:
 *
 *   ip netns exec <lan> env EDGE_CCM_LAB_STATE=<state.json> node bench/main.ts [--quick] [--profile] [--only a,b]
 *
 * Each figure is measured on the real lab against the controller as a process, with its
 * floor measured in the same run; the results go to bench/results/<timestamp>.json and a
 * table to stdout.
 */
import { execFileSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { parseArgs } from "node:util"
import { loadLab, rebootGateway } from "../test/e2e/support/lab.ts"
import { type Context, makeContext, type Options, resultsRoot, type ScenarioResult } from "./lib/context.ts"
import { gatewayAlive } from "./lib/gateway.ts"
import { clients, ensureNamespace, ServiceTracker } from "./lib/kube.ts"
import { cpuWindow, machineInfo } from "./lib/machine.ts"
import { soapClient } from "./lib/soap.ts"
import { now, ratioOf, renderTable, type Row } from "./lib/stats.ts"
import { renderProfile, summariseProfile } from "./profile-summary.ts"
import { timeToAddress } from "./scenarios/address.ts"
import { bulk } from "./scenarios/bulk.ts"
import { eventing } from "./scenarios/eventing.ts"
import { everyday } from "./scenarios/everyday.ts"
import { flood } from "./scenarios/flood.ts"
import { footprint } from "./scenarios/footprint.ts"
import { listing } from "./scenarios/listing.ts"
import { startup } from "./scenarios/startup.ts"

const SCENARIOS: ReadonlyArray<readonly [string, (ctx: Context) => Promise<ScenarioResult>]> = [
  ["address", timeToAddress],
  ["bulk", bulk],
  ["footprint", footprint],
  ["startup", startup],
  ["listing", listing],
  ["flood", flood],
  ["everyday", everyday],
  ["eventing", eventing]
]
/**
 * Run only when named in --only: listing kills the lab's gateway on purpose, flood spoofs it,
 * everyday starts the controller with its default flags and holds it a minute, eventing renumbers
 * the router's WAN 40 times and holds 100 Services twice for 3 minutes.
 */
const OPT_IN = new Set(["listing", "flood", "everyday", "eventing"])

const { values } = parseArgs({
  options: {
    quick: { type: "boolean", default: false },
    profile: { type: "boolean", default: false },
    only: { type: "string" },
    services: { type: "string" },
    rounds: { type: "string" },
    "warm-up": { type: "string" },
    "node-flags": { type: "string" }
  }
})

const quick = values.quick
const opts: Options = {
  quick,
  profile: values.profile,
  nodeFlags: (values["node-flags"] ?? deployedEnv("NODE_OPTIONS") ?? "").split(/\s+/).filter((f) => f !== ""),
  nodeEnv: Object.fromEntries(["MALLOC_ARENA_MAX"].flatMap((name) => {
    const value = deployedEnv(name)
    return value === undefined ? [] : [[name, value]]
  })),
  only: values.only === undefined ? undefined : new Set(values.only.split(",")),
  addressSamples: quick ? 6 : 30,
  addressUnpolledSamples: quick ? 3 : 15,
  pollMs: 5,
  bulkServices: values.services !== undefined ? Number(values.services) : quick ? 50 : 500,
  bulkRounds: values.rounds !== undefined ? Number(values.rounds) : quick ? 2 : 3,
  bulkWarmUp: values["warm-up"] !== undefined ? Number(values["warm-up"]) : quick ? 20 : 100,
  idleWindowMs: quick ? 3_000 : 30_000,
  scaleOthers: quick ? 270 : 4500,
  scaleOurs: quick ? 30 : 500,
  // Services of 2 ports (TCP + UDP): at most 100 of each protocol, below the ~130 that kill
  // this miniupnpd when listed.
  resyncLevels: quick ? [0, 40] : [0, 25, 50, 100, 250, 500],
  resyncCountInterval: quick ? "2s" : "5s",
  resyncWindows: quick ? 2 : 3,
  startupSamples: quick ? 2 : 8,
  clientConcurrency: 16,
  gatewayConcurrency: 4,
  workers: 8
}

/** A variable of the DaemonSet's environment: the controller is measured as it is deployed. */
function deployedEnv(name: string): string | undefined {
  const manifest = fs.readFileSync(path.resolve(import.meta.dirname, "../manifests/daemonset.yaml"), "utf8")
  return new RegExp(`- name: ${name}\\s+value: "?([^"\\n]+)"?`).exec(manifest)?.[1]?.trim()
}

const log = (message: string) => process.stderr.write(`[bench] ${message}\n`)

process.on("unhandledRejection", (reason) => log(`unhandled rejection: ${String(reason)}`))

/** Which sources were measured: the commit, and the files under src/ that differ from it. */
function sourceState(): { commit: string; changedInSrc: Array<string> } {
  // A tree exported from git (git archive) has no repository: its label comes from outside.
  const label = process.env["EDGE_CCM_BENCH_SOURCES"]
  if (label !== undefined && label !== "") return { commit: label, changedInSrc: [] }
  const git = (...args: Array<string>) => {
    try {
      return execFileSync("git", args, { cwd: path.resolve(import.meta.dirname, ".."), stdio: ["ignore", "pipe", "ignore"] }).toString().trimEnd()
    } catch {
      return ""
    }
  }
  return {
    commit: git("rev-parse", "--short", "HEAD") || "unknown",
    // Porcelain lines are "XY path": the status columns may start with a space.
    changedInSrc: git("status", "--porcelain", "--", "src").split("\n").filter((l) => l !== "").map((l) => l.slice(3))
  }
}

async function main(): Promise<number> {
  const source = sourceState()
  const started = now()
  const lab = loadLab()
  const machine = machineInfo(lab.raw.prefix)
  const stamp = new Date().toISOString().replace(/[:.]/g, "-")
  const resultsDir = resultsRoot
  fs.mkdirSync(resultsDir, { recursive: true })
  const profileDir = opts.profile ? path.join(resultsDir, `${stamp}-profiles`) : undefined
  const c = await clients()
  await ensureNamespace(c.core)
  const tracker = new ServiceTracker(c)
  await tracker.start()
  const ctx = makeContext({ opts, c, tracker, soap: soapClient(lab.controlUrl), log, resultsDir, runStamp: stamp, profileDir })
  const whole = cpuWindow(() => ({}))

  log(`${quick ? "quick" : "full"} run on ${machine.nproc} cores (${machine.cpuModel}), ${machine.otherLabNamespaces} other lab namespaces present`)
  const rows: Array<Row> = []
  const raw: Record<string, unknown> = {}
  const errors: Array<{ scenario: string; error: string }> = []
  const timings: Record<string, number> = {}
  for (const [name, scenario] of SCENARIOS) {
    if (opts.only === undefined ? OPT_IN.has(name) : !opts.only.has(name)) continue
    log(`scenario ${name}`)
    const t0 = now()
    try {
      const result = await scenario(ctx)
      rows.push(...result.rows)
      raw[name] = result.raw
    } catch (error) {
      const message = `${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n` +
        `last controller output:\n${ctx.lastControllerOutput()}`
      log(`scenario ${name} FAILED: ${message}`)
      errors.push({ scenario: name, error: message })
      ctx.saveControllerLog(`${name}-failed-controller`)
      await ctx.recover()
    }
    if (!gatewayAlive()) {
      if (!OPT_IN.has(name)) errors.push({ scenario: name, error: "miniupnpd was found dead after this scenario; rebooted it" })
      await rebootGateway()
    }
    timings[name] = Math.round(now() - t0)
  }
  tracker.stop()

  const profiles = profileDir === undefined || !fs.existsSync(profileDir)
    ? []
    : fs.readdirSync(profileDir).filter((f) => f.endsWith(".cpuprofile")).sort().map((f) => summariseProfile(path.join(profileDir, f)))
  const wholeCpu = whole.end()
  const durationS = Math.round((now() - started) / 100) / 10
  const result = {
    startedAt: new Date(performance.timeOrigin).toISOString(),
    durationS,
    mode: quick ? "quick" : "full",
    profiled: opts.profile,
    source,
    // Others may change the sources during a long run: what they were when it ended.
    sourceAtEnd: sourceState(),
    machine: { ...machine, loadAverageAtEnd: os.loadavg().map((l) => Math.round(l * 100) / 100) },
    machineBusyPercent: Math.round((1000 * wholeCpu.machineMs) / (wholeCpu.wallMs * machine.nproc)) / 10,
    options: { ...opts, only: opts.only === undefined ? undefined : [...opts.only] },
    scenarioMs: timings,
    rows: rows.map((row) => ({ ...row, ratio: ratioOf(row) })),
    raw,
    profiles,
    errors
  }
  const file = path.join(resultsDir, `${stamp}${quick ? "-quick" : ""}.json`)
  fs.writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`)

  const header = [
    `edge-ccm benchmarks, ${result.mode} run, ${durationS} s${opts.profile ? " (PROFILED: timings inflated)" : ""}` +
    (opts.nodeFlags.length > 0 ? ` (controller node flags: ${opts.nodeFlags.join(" ")})` : "") +
    (Object.keys(opts.nodeEnv).length > 0
      ? ` (environment: ${Object.entries(opts.nodeEnv).map(([k, v]) => `${k}=${v}`).join(" ")})`
      : ""),
    `sources: commit ${source.commit}${source.changedInSrc.length === 0 ? "" : ` with ${source.changedInSrc.length} changed file(s) under src/`}`,
    `machine: ${machine.nproc} cores ${machine.cpuModel}, ${machine.memoryMiB} MiB, Node ${machine.node}, ${machine.kernel}`,
    `load average at start ${machine.loadAverageAtStart.join(" ")}, at end ${result.machine.loadAverageAtEnd.join(" ")}; ` +
    `machine ${result.machineBusyPercent}% busy over the run; ${machine.otherLabNamespaces} other lab namespaces present at start`,
    ""
  ]
  console.log([...header, renderTable(rows), ""].join("\n"))
  for (const profile of profiles) console.log(`${renderProfile(profile)}\n`)
  for (const error of errors) console.log(`ERROR in ${error.scenario}: ${error.error.split("\n")[0]}`)
  console.log(`results: ${path.relative(process.cwd(), file)}`)
  return errors.length === 0 ? 0 : 1
}

// Exit at once: keep-alive connections and the watch would otherwise hold the process for seconds.
process.exit(await main())
