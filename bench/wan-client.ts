/**
 * The Internet client, run inside the lab's `wan` namespace: for each request line on stdin
 * ({id, url, timeoutMs}) it GETs the URL until an HTTP answer arrives (or the deadline
 * passes) and prints {id, ok, at, attempts, error}. A resident process, because spawning
 * curl through `ip netns exec` costs more than the latency being measured.
 */
import * as http from "node:http"
import * as readline from "node:readline"
import { setTimeout as sleep } from "node:timers/promises"

const now = () => performance.timeOrigin + performance.now()

const getOnce = (url: string): Promise<number> =>
  new Promise((resolve, reject) => {
    const request = http.get(url, { agent: false, timeout: 500 }, (response) => {
      response.resume()
      response.on("end", () => resolve(response.statusCode ?? 0))
    })
    request.on("timeout", () => request.destroy(new Error("timeout")))
    request.on("error", reject)
  })

const probe = async (request: { id: number; url: string; timeoutMs: number }) => {
  const deadline = now() + request.timeoutMs
  let attempts = 0
  let error = ""
  while (now() < deadline) {
    attempts++
    try {
      const status = await getOnce(request.url)
      if (status >= 200 && status < 400) return { id: request.id, ok: true, at: now(), attempts, error: "" }
      error = `HTTP ${status}`
    } catch (e) {
      error = (e as Error).message
    }
    await sleep(2)
  }
  return { id: request.id, ok: false, at: now(), attempts, error }
}

const lines = readline.createInterface({ input: process.stdin })
lines.on("line", (line) => {
  void probe(JSON.parse(line) as { id: number; url: string; timeoutMs: number }).then((answer) => {
    process.stdout.write(`${JSON.stringify(answer)}\n`)
  })
})
// Ends with its stdin: the benchmark closing the pipe (or dying) stops it.
lines.on("close", () => process.exit(0))
