/**
 * Process helpers for the lab: run a command and collect its output, start a daemon with its
 * output in a log file, and stop a process by its recorded PID (never by name).
 *
 * A recorded process is identified by its PID *and* its start time (field 22 of
 * /proc/<pid>/stat), so a PID reused by an unrelated process is never signalled.
 */
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import { setTimeout as delay } from "node:timers/promises"

export { delay }

export interface RunResult {
  readonly code: number
  readonly signal: string | null
  readonly stdout: string
  readonly stderr: string
}

export interface RunOptions {
  readonly input?: string | undefined
  readonly timeoutMs?: number | undefined
  readonly env?: Readonly<Record<string, string>> | undefined
  readonly cwd?: string | undefined
}

/**
 * Runs argv and resolves with its exit code and output. Never rejects: a command that cannot
 * be started resolves with code 127, a command that overruns `timeoutMs` is killed (by the
 * PID of the child) and resolves with code 124.
 */
export function run(argv: ReadonlyArray<string>, options: RunOptions = {}): Promise<RunResult> {
  const [file, ...args] = argv
  if (file === undefined) return Promise.resolve({ code: 127, signal: null, stdout: "", stderr: "empty command" })
  return new Promise((resolve) => {
    const child = spawn(file, args, {
      stdio: ["pipe", "pipe", "pipe"],
      env: options.env === undefined ? process.env : { ...process.env, ...options.env },
      ...(options.cwd === undefined ? {} : { cwd: options.cwd })
    })
    const out: Array<Buffer> = []
    const err: Array<Buffer> = []
    let timedOut = false
    let settled = false
    const timer = options.timeoutMs === undefined
      ? undefined
      : setTimeout(() => {
        timedOut = true
        child.kill("SIGKILL")
      }, options.timeoutMs)
    child.stdout.on("data", (chunk: Buffer) => out.push(chunk))
    child.stderr.on("data", (chunk: Buffer) => err.push(chunk))
    child.on("error", (error) => {
      if (settled) return
      settled = true
      if (timer !== undefined) clearTimeout(timer)
      resolve({ code: 127, signal: null, stdout: "", stderr: `${file}: ${error.message}` })
    })
    child.on("close", (code, signal) => {
      if (settled) return
      settled = true
      if (timer !== undefined) clearTimeout(timer)
      const stderr = Buffer.concat(err).toString("utf8")
      resolve({
        code: timedOut ? 124 : (code ?? 128),
        signal: signal ?? null,
        stdout: Buffer.concat(out).toString("utf8"),
        stderr: timedOut ? `${stderr}\n(timed out after ${options.timeoutMs} ms)` : stderr
      })
    })
    child.stdin.on("error", () => {})
    child.stdin.end(options.input ?? "")
  })
}

/** Runs argv and returns stdout; throws with the command and its stderr when it fails. */
export async function runOk(argv: ReadonlyArray<string>, options: RunOptions = {}): Promise<string> {
  const result = await run(argv, options)
  if (result.code !== 0) {
    const detail = (result.stderr.trim() || result.stdout.trim() || `exit code ${result.code}`).split("\n").slice(-15).join("\n")
    throw new Error(`\`${argv.join(" ")}\` failed (exit ${result.code}): ${detail}`)
  }
  return result.stdout
}

/** A process the lab started and must stop. */
export interface ProcessRecord {
  readonly pid: number
  /** Field 22 of /proc/<pid>/stat: guards against PID reuse. */
  readonly startTime: string
  readonly command: string
  readonly log: string | null
}

interface ProcStat {
  readonly state: string
  readonly startTime: string
}

export function procStat(pid: number): ProcStat | undefined {
  let text: string
  try {
    text = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
  } catch {
    return undefined
  }
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ")
  const state = fields[0]
  const startTime = fields[19]
  if (state === undefined || startTime === undefined) return undefined
  return { state, startTime }
}

export function recordProcess(pid: number, command: string, log: string | null): ProcessRecord | undefined {
  const stat = procStat(pid)
  return stat === undefined ? undefined : { pid, startTime: stat.startTime, command, log }
}

/** True while the recorded process runs (a zombie counts as gone). */
export function isAlive(record: ProcessRecord): boolean {
  const stat = procStat(record.pid)
  return stat !== undefined && stat.state !== "Z" && stat.state !== "X" && stat.startTime === record.startTime
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig)
  } catch {
    // already gone
  }
}

/**
 * Stops a recorded process: SIGTERM, wait up to `graceMs`, then SIGKILL and wait again.
 * Throws if it is still there afterwards.
 */
export async function stopProcess(record: ProcessRecord, graceMs = 10_000): Promise<void> {
  if (!isAlive(record)) return
  signal(record.pid, "SIGTERM")
  const deadline = Date.now() + graceMs
  while (isAlive(record) && Date.now() < deadline) await delay(25)
  if (!isAlive(record)) return
  signal(record.pid, "SIGKILL")
  const killDeadline = Date.now() + 5_000
  while (isAlive(record) && Date.now() < killDeadline) await delay(25)
  if (isAlive(record)) throw new Error(`${record.command} (pid ${record.pid}) did not exit after SIGKILL`)
}

/**
 * Starts a daemon detached from the caller, stdout and stderr appended to `log`. With
 * `ip netns exec` in front, the PID is the daemon's own: ip execs it in place.
 */
export function startDaemon(argv: ReadonlyArray<string>, log: string, command: string): ProcessRecord {
  const [file, ...args] = argv
  if (file === undefined) throw new Error("empty command")
  const fd = fs.openSync(log, "a")
  try {
    const child = spawn(file, args, { detached: true, stdio: ["ignore", fd, fd] })
    child.on("error", () => {})
    child.unref()
    const pid = child.pid
    if (pid === undefined) throw new Error(`could not start ${command} (${file})`)
    const record = recordProcess(pid, command, log)
    if (record === undefined) throw new Error(`${command} exited at once; see ${log}`)
    return record
  } finally {
    fs.closeSync(fd)
  }
}

/** The last `lines` lines of a file, or a note that there is none. */
export function tailFile(file: string | null, lines = 40): string {
  if (file === null) return ""
  try {
    const text = fs.readFileSync(file, "utf8").trimEnd()
    return text.split("\n").slice(-lines).join("\n")
  } catch {
    return `(no log at ${file})`
  }
}

/** The inode that identifies a network namespace, from a path such as /proc/<pid>/ns/net. */
export function netnsId(nsPath: string): string | undefined {
  try {
    const stat = fs.statSync(nsPath)
    return `${stat.dev}:${stat.ino}`
  } catch {
    return undefined
  }
}

/** This process and its ancestors: never to be swept, even when they run inside a lab namespace. */
function selfAndAncestors(): Set<number> {
  const out = new Set<number>()
  let pid = process.pid
  while (pid > 1 && !out.has(pid)) {
    out.add(pid)
    try {
      const text = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
      pid = Number(text.slice(text.lastIndexOf(")") + 2).split(" ")[1])
    } catch {
      break
    }
  }
  return out
}

/** PIDs of every process whose network namespace is one of `namespaces` (named ones). */
export function processesInNamespaces(namespaces: ReadonlyArray<string>): Array<{ pid: number; namespace: string; command: string }> {
  const wanted = new Map<string, string>()
  for (const ns of namespaces) {
    const id = netnsId(`/run/netns/${ns}`)
    if (id !== undefined) wanted.set(id, ns)
  }
  if (wanted.size === 0) return []
  const found: Array<{ pid: number; namespace: string; command: string }> = []
  const exclude = selfAndAncestors()
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue
    const pid = Number(entry)
    if (exclude.has(pid)) continue
    const id = netnsId(`/proc/${pid}/ns/net`)
    const ns = id === undefined ? undefined : wanted.get(id)
    if (ns === undefined) continue
    let command = "?"
    try {
      command = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").filter((s) => s !== "").join(" ")
    } catch {
      // gone meanwhile
    }
    found.push({ pid, namespace: ns, command })
  }
  return found
}
