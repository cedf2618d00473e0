/**
 * Summarises V8 .cpuprofile files (from `node --cpu-prof`): self time by function and by
 * where the code lives (the controller's src/, effect, client-node, Node internals, GC).
 *
 *   node bench/profile-summary.ts <file.cpuprofile>... [--top 25] [--window FROM,TO]
 *
 * `--window` keeps the samples taken between two readings of the monotonic clock in µs
 * (`process.hrtime.bigint() / 1000n`, the clock V8 stamps samples with), as the everyday
 * scenario logs them for its delete when profiled.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { parseArgs } from "node:util"

interface ProfileNode {
  readonly id: number
  readonly callFrame: { readonly functionName: string; readonly url: string; readonly lineNumber: number }
  readonly children?: ReadonlyArray<number>
}

interface CpuProfile {
  readonly nodes: ReadonlyArray<ProfileNode>
  readonly startTime: number
  readonly endTime: number
  readonly samples: ReadonlyArray<number>
  readonly timeDeltas: ReadonlyArray<number>
}

export interface ProfileSummary {
  readonly file: string
  /** Profiled wall time, ms. */
  readonly wallMs: number
  /** Time not idle, ms. */
  readonly busyMs: number
  readonly byArea: ReadonlyArray<{ readonly area: string; readonly ms: number; readonly percentOfBusy: number }>
  readonly topFunctions: ReadonlyArray<{ readonly fn: string; readonly where: string; readonly ms: number; readonly percentOfBusy: number }>
  /** Self time of the controller's own modules, by file. */
  readonly srcFiles: ReadonlyArray<{ readonly file: string; readonly ms: number }>
}

const areaOf = (node: ProfileNode): string => {
  const { functionName, url } = node.callFrame
  if (functionName === "(idle)") return "idle"
  if (functionName === "(garbage collector)") return "garbage collector"
  if (functionName === "(program)") return "V8/native (program)"
  if (url === "") return "native/builtin"
  if (url.includes("/node_modules/effect/")) return "effect"
  if (url.includes("/node_modules/@effect/")) return "@effect/platform-node"
  if (url.includes("/node_modules/@kubernetes/client-node/")) return "@kubernetes/client-node"
  if (url.includes("/node_modules/")) return `other npm: ${/node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url)?.[1] ?? "?"}`
  if (url.startsWith("node:")) return `node: ${url.slice(5).split("/")[0]}`
  if (url.includes("/src/")) return "controller src/"
  return "other"
}

const shortUrl = (url: string): string => {
  const nm = url.lastIndexOf("/node_modules/")
  if (nm >= 0) return url.slice(nm + "/node_modules/".length)
  const src = url.lastIndexOf("/src/")
  if (src >= 0) return url.slice(src + 1)
  return url.replace(/^file:\/\//, "")
}

/** A profile's samples taken from `fromUs` to `toUs` on the monotonic clock. */
export interface ProfileWindow {
  readonly fromUs: number
  readonly toUs: number
}

export function summariseProfile(file: string, top = 25, window?: ProfileWindow): ProfileSummary {
  const profile = JSON.parse(fs.readFileSync(file, "utf8")) as CpuProfile
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const self = new Map<number, number>()
  let at = profile.startTime
  let first = Number.POSITIVE_INFINITY
  let last = Number.NEGATIVE_INFINITY
  for (let i = 0; i < profile.samples.length; i++) {
    const delta = profile.timeDeltas[i] ?? 0
    at += delta
    if (window !== undefined && (at < window.fromUs || at > window.toUs)) continue
    first = Math.min(first, at - delta)
    last = Math.max(last, at)
    const id = profile.samples[i]!
    self.set(id, (self.get(id) ?? 0) + delta / 1000)
  }
  const areas = new Map<string, number>()
  const functions = new Map<string, { fn: string; where: string; ms: number }>()
  const files = new Map<string, number>()
  let idle = 0
  let total = 0
  for (const [id, ms] of self) {
    const node = byId.get(id)
    if (node === undefined) continue
    total += ms
    const area = areaOf(node)
    if (area === "idle") {
      idle += ms
      continue
    }
    areas.set(area, (areas.get(area) ?? 0) + ms)
    const where = node.callFrame.url === "" ? "" : `${shortUrl(node.callFrame.url)}:${node.callFrame.lineNumber + 1}`
    const key = `${node.callFrame.functionName}@${where}`
    const entry = functions.get(key) ?? { fn: node.callFrame.functionName || "(anonymous)", where, ms: 0 }
    entry.ms += ms
    functions.set(key, entry)
    if (area === "controller src/") {
      const f = shortUrl(node.callFrame.url)
      files.set(f, (files.get(f) ?? 0) + ms)
    }
  }
  const busy = total - idle
  const pct = (ms: number) => Math.round((1000 * ms) / Math.max(busy, 1e-9)) / 10
  return {
    file: path.basename(file),
    wallMs: Math.round((window === undefined ? profile.endTime - profile.startTime : Math.max(0, last - first)) / 1000),
    busyMs: Math.round(busy),
    byArea: [...areas].sort((a, b) => b[1] - a[1]).map(([area, ms]) => ({ area, ms: Math.round(ms), percentOfBusy: pct(ms) })),
    topFunctions: [...functions.values()].sort((a, b) => b.ms - a.ms).slice(0, top)
      .map((f) => ({ fn: f.fn, where: f.where, ms: Math.round(f.ms * 10) / 10, percentOfBusy: pct(f.ms) })),
    srcFiles: [...files].sort((a, b) => b[1] - a[1]).map(([f, ms]) => ({ file: f, ms: Math.round(ms * 10) / 10 }))
  }
}

export function renderProfile(summary: ProfileSummary): string {
  const lines = [
    `${summary.file}: ${summary.wallMs} ms profiled, ${summary.busyMs} ms busy`,
    "  by area:",
    ...summary.byArea.slice(0, 12).map((a) => `    ${String(a.ms).padStart(7)} ms ${a.percentOfBusy.toFixed(1).padStart(5)}%  ${a.area}`),
    "  top functions (self time):",
    ...summary.topFunctions.map((f) => `    ${f.ms.toFixed(1).padStart(7)} ms ${f.percentOfBusy.toFixed(1).padStart(5)}%  ${f.fn}  ${f.where}`)
  ]
  if (summary.srcFiles.length > 0) {
    lines.push("  controller src/ files (self time):", ...summary.srcFiles.slice(0, 10).map((f) => `    ${f.ms.toFixed(1).padStart(7)} ms  ${f.file}`))
  }
  return lines.join("\n")
}

/**
 * Who calls `functionName`: its self time (and that of everything below it) summed by the
 * chain of callers above it, `depth` frames deep, largest first.
 */
export function callers(file: string, functionName: string, depth = 8, top = 8): string {
  const profile = JSON.parse(fs.readFileSync(file, "utf8")) as CpuProfile
  const parent = new Map<number, number>()
  for (const node of profile.nodes) for (const child of node.children ?? []) parent.set(child, node.id)
  const byId = new Map(profile.nodes.map((n) => [n.id, n]))
  const inclusive = new Map<number, number>()
  for (let i = 0; i < profile.samples.length; i++) {
    // Charge the sample to the nearest frame named functionName above it, if any.
    let id: number | undefined = profile.samples[i]!
    while (id !== undefined && byId.get(id)?.callFrame.functionName !== functionName) id = parent.get(id)
    if (id !== undefined) inclusive.set(id, (inclusive.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0) / 1000)
  }
  const chains = new Map<string, number>()
  let total = 0
  for (const [id, ms] of inclusive) {
    total += ms
    const frames: Array<string> = []
    let up = parent.get(id)
    while (up !== undefined && frames.length < depth) {
      const frame = byId.get(up)!.callFrame
      if (frame.functionName !== "" || frame.url !== "") {
        frames.push(`${frame.functionName || "(anonymous)"} ${frame.url === "" ? "" : `${shortUrl(frame.url)}:${frame.lineNumber + 1}`}`.trim())
      }
      up = parent.get(up)
    }
    const key = frames.join("\n      ← ")
    chains.set(key, (chains.get(key) ?? 0) + ms)
  }
  return [
    `${functionName}: ${total.toFixed(0)} ms with everything it calls`,
    ...[...chains].sort((a, b) => b[1] - a[1]).slice(0, top).map(([chain, ms]) => `  ${ms.toFixed(0).padStart(6)} ms  ← ${chain}`)
  ].join("\n")
}

if (import.meta.main) {
  const { positionals, values } = parseArgs({
    allowPositionals: true,
    options: {
      top: { type: "string", default: "25" },
      callers: { type: "string", multiple: true },
      depth: { type: "string", default: "8" },
      window: { type: "string" }
    }
  })
  const [fromUs, toUs] = (values.window ?? "").split(",").map(Number)
  const window = fromUs !== undefined && toUs !== undefined && Number.isFinite(fromUs) && Number.isFinite(toUs) ? { fromUs, toUs } : undefined
  for (const file of positionals) {
    console.log(renderProfile(summariseProfile(file, Number(values.top), window)))
    for (const fn of values.callers ?? []) console.log(`\n${callers(file, fn, Number(values.depth))}`)
  }
}
