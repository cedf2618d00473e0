/** Clocks, summaries and the human table. */
import { setTimeout as sleepMs } from "node:timers/promises"

/** Wall-clock milliseconds (fractional) comparable across processes on this machine. */
export const now = (): number => performance.timeOrigin + performance.now()

export const sleep = (ms: number): Promise<void> => sleepMs(ms).then(() => undefined)

export interface Summary {
  readonly n: number
  readonly median: number
  /** Nearest rank: with fewer than 20 samples this is the largest one or close to it. */
  readonly p95: number
  readonly min: number
  readonly max: number
}

export function summarize(samples: ReadonlyArray<number>): Summary | undefined {
  if (samples.length === 0) return undefined
  const sorted = [...samples].sort((a, b) => a - b)
  const n = sorted.length
  const median = n % 2 === 1 ? sorted[(n - 1) / 2]! : (sorted[n / 2 - 1]! + sorted[n / 2]!) / 2
  const p95 = sorted[Math.max(0, Math.ceil(0.95 * n) - 1)]!
  return { n, median, p95, min: sorted[0]!, max: sorted[n - 1]! }
}

/** One line of the table: a figure beside its floor. */
export interface Row {
  readonly section: string
  readonly figure: string
  readonly unit: "ms" | "s" | "MiB" | "%" | "calls" | "count"
  readonly value: Summary | undefined
  readonly floor?: Summary | undefined
  /** What the ratio is held against, e.g. "≤ 1.25". */
  readonly goal?: string | undefined
  /** The goal's bound for the median, in the row's unit, when it is not just ratio × floor. */
  readonly goalBound?: number | undefined
  readonly note?: string | undefined
}

const scale = (unit: Row["unit"], v: number) => (unit === "s" ? v / 1000 : v)

const fmt = (unit: Row["unit"], v: number | undefined): string => {
  if (v === undefined || !Number.isFinite(v)) return "-"
  const x = scale(unit, v)
  if (unit === "calls" || unit === "count") return Number.isInteger(x) ? String(x) : x.toFixed(1)
  return Math.abs(x) >= 100 ? x.toFixed(0) : Math.abs(x) >= 10 ? x.toFixed(1) : x.toFixed(2)
}

export function ratioOf(row: Row): number | undefined {
  if (row.value === undefined || row.floor === undefined || row.floor.median === 0) return undefined
  return row.value.median / row.floor.median
}

/** A fixed-width table: figure, n, median, p95, floor median, ratio, goal, note. */
export function renderTable(rows: ReadonlyArray<Row>): string {
  const header = ["figure", "unit", "n", "median", "p95", "floor", "ratio", "goal", "note"]
  const lines: Array<string | Array<string>> = []
  let section = ""
  for (const row of rows) {
    if (row.section !== section) {
      section = row.section
      lines.push(`[${section}]`)
    }
    const ratio = ratioOf(row)
    lines.push([
      `  ${row.figure}`,
      row.unit,
      String(row.value?.n ?? 0),
      fmt(row.unit, row.value?.median),
      fmt(row.unit, row.value?.p95),
      row.floor === undefined ? "" : fmt(row.unit, row.floor.median),
      ratio === undefined ? "" : `${ratio.toFixed(2)}x`,
      row.goal ?? "",
      row.note ?? ""
    ])
  }
  const cells = lines.filter((l): l is Array<string> => typeof l !== "string")
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((l) => l[i]!.length)))
  // Text columns left-aligned, numbers right-aligned.
  const pad = (row: ReadonlyArray<string>) =>
    row.map((c, i) => (i === 0 || i === 1 || i >= 7 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join("  ").trimEnd()
  return [pad(header), pad(widths.map((w) => "-".repeat(w))), ...lines.map((l) => (typeof l === "string" ? l : pad(l)))].join("\n")
}

/** The same rows as a Markdown table (for docs/benchmarks.md). */
export function renderMarkdown(rows: ReadonlyArray<Row & { readonly ratio?: number | undefined }>): string {
  const out = ["| figure | n | median | p95 | floor | ratio | goal | note |", "|---|---:|---:|---:|---:|---:|---|---|"]
  let section = ""
  for (const row of rows) {
    if (row.section !== section) {
      section = row.section
      out.push(`| **${section}** | | | | | | | |`)
    }
    const unit = row.unit === "calls" || row.unit === "count" ? "" : ` ${row.unit}`
    const cell = (v: number | undefined) => (v === undefined ? "" : `${fmt(row.unit, v)}${unit}`)
    const ratio = ratioOf(row)
    out.push(
      `| ${row.figure.startsWith("  ") ? `↳ ${row.figure.trim()}` : row.figure} | ${row.value?.n ?? 0} | ${cell(row.value?.median)} | ${cell(row.value?.p95)} | ${cell(row.floor?.median)} | ` +
        `${ratio === undefined ? "" : `${ratio.toFixed(2)}×`} | ${row.goal ?? ""} | ${(row.note ?? "").replace(/\|/g, "\\|")} |`
    )
  }
  return out.join("\n")
}

/** Polls `probe` every `intervalMs` until it gives a value; `at` is the middle of the poll that gave it. */
export async function pollUntil<T>(
  probe: () => Promise<T | undefined>,
  options: { readonly intervalMs: number; readonly timeoutMs: number; readonly description: string }
): Promise<{ readonly value: T; readonly at: number }> {
  const deadline = now() + options.timeoutMs
  while (true) {
    const started = now()
    const value = await probe()
    if (value !== undefined) return { value, at: (started + now()) / 2 }
    if (now() > deadline) throw new Error(`timed out after ${options.timeoutMs} ms waiting for ${options.description}`)
    await sleep(Math.max(0, options.intervalMs - (now() - started)))
  }
}
