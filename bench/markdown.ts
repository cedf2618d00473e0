/**
 * Prints a results file as Markdown, for docs/benchmarks.md:
 *
 *   node bench/markdown.ts bench/results/<timestamp>.json
 */
import * as fs from "node:fs"
import { renderMarkdown, type Row } from "./lib/stats.ts"

for (const file of process.argv.slice(2)) {
  const result = JSON.parse(fs.readFileSync(file, "utf8")) as {
    mode: string
    durationS: number
    source?: { commit: string }
    machine: { nproc: number; cpuModel: string; memoryMiB: number; node: string; kernel: string }
    machineBusyPercent: number
    rows: ReadonlyArray<Row>
  }
  const m = result.machine
  console.log(
    `${result.mode} run, ${result.durationS} s, sources ${result.source?.commit ?? "unknown"}; ` +
      `${m.nproc} cores ${m.cpuModel}, ${Math.round(m.memoryMiB / 1024)} GiB, Node ${m.node}, ${m.kernel}; ` +
      `machine ${result.machineBusyPercent}% busy on average\n`
  )
  console.log(renderMarkdown(result.rows))
}
