/** Drives bench/wan-client.ts in the `wan` namespace: "GET this until it answers", timestamped there. */
import { spawn } from "node:child_process"
import * as path from "node:path"
import * as readline from "node:readline"
import { loadLab } from "../../test/e2e/support/lab.ts"

export interface WanProbeResult {
  readonly ok: boolean
  /** When the first successful answer arrived (wall-clock ms). */
  readonly at: number
  readonly attempts: number
  readonly error: string
}

export interface WanClient {
  readonly pid: number
  get(url: string, timeoutMs: number): Promise<WanProbeResult>
  close(): Promise<void>
}

export function startWanClient(): WanClient {
  const lab = loadLab()
  const script = path.join(import.meta.dirname, "..", "wan-client.ts")
  const child = spawn("ip", ["netns", "exec", lab.namespaces.wan, process.execPath, script], { stdio: ["pipe", "pipe", "inherit"] })
  const pending = new Map<number, (result: WanProbeResult) => void>()
  let nextId = 1
  readline.createInterface({ input: child.stdout }).on("line", (line) => {
    const answer = JSON.parse(line) as WanProbeResult & { id: number }
    pending.get(answer.id)?.(answer)
    pending.delete(answer.id)
  })
  const exited = new Promise<void>((resolve) => child.on("close", () => resolve()))
  return {
    pid: child.pid ?? 0,
    get: (url, timeoutMs) =>
      new Promise((resolve) => {
        const id = nextId++
        // The client answers by its own deadline; this one covers a client that died.
        const timer = setTimeout(() => {
          pending.delete(id)
          resolve({ ok: false, at: Date.now(), attempts: 0, error: "the wan client did not answer" })
        }, timeoutMs + 5000)
        pending.set(id, (result) => {
          clearTimeout(timer)
          resolve(result)
        })
        child.stdin.write(`${JSON.stringify({ id, url, timeoutMs })}\n`)
      }),
    close: async () => {
      child.stdin.end()
      const timer = setTimeout(() => {
        if (child.pid !== undefined) process.kill(child.pid, "SIGKILL")
      }, 3000)
      await exited
      clearTimeout(timer)
    }
  }
}
