/**
 * What ran where, and what it cost: the machine's description, per-process CPU time and
 * memory from /proc, and the whole machine's busy time (others' test runs share it).
 */
import { execFileSync, spawn, spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"

export interface MachineInfo {
  readonly nproc: number
  readonly memoryMiB: number
  readonly cpuModel: string
  readonly node: string
  readonly kernel: string
  readonly loadAverageAtStart: ReadonlyArray<number>
  /** Network namespaces of other labs present at the start: other runs sharing the cores. */
  readonly otherLabNamespaces: number
}

const clockTicks = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim()) || 100
  } catch {
    return 100
  }
})()

export function machineInfo(ownPrefix: string): MachineInfo {
  const cpuinfo = fs.readFileSync("/proc/cpuinfo", "utf8")
  const model = /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1]?.trim() ?? "unknown"
  let namespaces: Array<string> = []
  try {
    namespaces = execFileSync("ip", ["netns", "list"]).toString().split("\n").map((l) => l.split(" ")[0] ?? "")
  } catch {
    // no ip(8): leave it empty
  }
  return {
    nproc: os.availableParallelism(),
    memoryMiB: Math.round(os.totalmem() / 1024 / 1024),
    cpuModel: model,
    node: process.version,
    kernel: `${os.type()} ${os.release()}`,
    loadAverageAtStart: os.loadavg().map((l) => Math.round(l * 100) / 100),
    otherLabNamespaces: namespaces.filter((n) => n.startsWith("eccm-") && !n.startsWith(ownPrefix)).length
  }
}

/** CPU milliseconds (user + system) a process has used so far, or undefined once it is gone. */
export function cpuMs(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    // Fields after the command name, which may itself contain spaces and parentheses.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    const utime = Number(fields[11])
    const stime = Number(fields[12])
    return ((utime + stime) * 1000) / clockTicks
  } catch {
    return undefined
  }
}

/** CPU milliseconds used by a process's finished children (nft, ip, curl the benchmark ran and waited for). */
export function childrenCpuMs(pid: number): number | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ")
    return ((Number(fields[13]) + Number(fields[14])) * 1000) / clockTicks
  } catch {
    return undefined
  }
}

/** Resident set size and its high-water mark in MiB, from /proc/<pid>/status. */
export function memoryMiB(pid: number): { rss: number; hwm: number } | undefined {
  try {
    const status = fs.readFileSync(`/proc/${pid}/status`, "utf8")
    const kib = (key: string) => Number(new RegExp(`^${key}:\\s*(\\d+) kB`, "m").exec(status)?.[1] ?? Number.NaN)
    return { rss: kib("VmRSS") / 1024, hwm: kib("VmHWM") / 1024 }
  } catch {
    return undefined
  }
}

/**
 * Node's own floor: the RSS of a bare `node -e` process waiting on a timer, after `settleMs`,
 * and the wall and CPU time, and high-water, of a `node -e 0` run to its end.
 */
export async function nodeFloor(settleMs = 2000): Promise<{ idleRssMiB: number; startMs: number; startCpuMs: number }> {
  const child = spawn(process.execPath, ["-e", "setTimeout(() => {}, 1e9)"], { stdio: "ignore" })
  await new Promise((resolve) => setTimeout(resolve, settleMs))
  const idleRssMiB = memoryMiB(child.pid ?? -1)?.rss ?? Number.NaN
  child.kill()
  const run = timed([process.execPath, "-e", "0"])
  return { idleRssMiB, startMs: run.wallMs, startCpuMs: run.cpuMs }
}

/** Runs a command to its end and reports its wall and CPU milliseconds and peak RSS (GNU time). */
export function timed(argv: ReadonlyArray<string>): { wallMs: number; cpuMs: number; maxRssMiB: number; code: number } {
  const out = spawnSync("/usr/bin/time", ["-f", "%e %U %S %M", ...argv], { encoding: "utf8" })
  const [wall, user, system, maxKiB] = (out.stderr.trim().split("\n").at(-1) ?? "").split(" ").map(Number)
  return {
    wallMs: (wall ?? Number.NaN) * 1000,
    cpuMs: ((user ?? Number.NaN) + (system ?? Number.NaN)) * 1000,
    maxRssMiB: (maxKiB ?? Number.NaN) / 1024,
    code: out.status ?? -1
  }
}

/** Busy and total jiffies of the whole machine (all cores), from /proc/stat. */
function machineJiffies(): { busy: number; total: number } {
  const line = fs.readFileSync("/proc/stat", "utf8").split("\n")[0]!
  const values = line.trim().split(/\s+/).slice(1).map(Number)
  const idle = (values[3] ?? 0) + (values[4] ?? 0)
  const total = values.reduce((a, b) => a + b, 0)
  return { busy: total - idle, total }
}

export interface CpuWindow {
  /** Wall milliseconds. */
  readonly wallMs: number
  /** CPU milliseconds used in the window, per named process. */
  readonly processes: Readonly<Record<string, number>>
  /** CPU milliseconds used by the whole machine (every core) in the window. */
  readonly machineMs: number
  /** What the machine used besides the named processes: other runs, kernel work, the lab's plumbing. */
  readonly othersMs: number
}

/** Measures CPU over a window for the named PIDs (looked up again at the end: a PID may change). */
export function cpuWindow(pids: () => Readonly<Record<string, number | undefined>>): { end: () => CpuWindow } {
  const startPids = pids()
  const start: Record<string, number> = {}
  for (const [name, pid] of Object.entries(startPids)) {
    const used = pid === undefined ? undefined : cpuMs(pid)
    if (used !== undefined) start[name] = used
  }
  const startChildren = childrenCpuMs(process.pid) ?? 0
  const startMachine = machineJiffies()
  const startWall = performance.now()
  return {
    end: () => {
      const endPids = pids()
      const processes: Record<string, number> = {}
      for (const [name, pid] of Object.entries(endPids)) {
        const used = pid === undefined ? undefined : cpuMs(pid)
        // A process restarted in the window (the gateway after a reboot) counts from zero.
        if (used !== undefined) processes[name] = startPids[name] === pid ? used - (start[name] ?? 0) : used
      }
      processes["benchmark's short-lived children (nft, ip)"] = (childrenCpuMs(process.pid) ?? 0) - startChildren
      const endMachine = machineJiffies()
      const machineMs = ((endMachine.busy - startMachine.busy) * 1000) / clockTicks
      const ours = Object.values(processes).reduce((a, b) => a + b, 0)
      return { wallMs: performance.now() - startWall, processes, machineMs, othersMs: Math.max(0, machineMs - ours) }
    }
  }
}
