/** What the commands share for output: aligned tables, and how a failed command ends. */
import { Runtime, Schema } from "effect"

/**
 * A command that has already printed its one-line error: the process exits with `exitCode`
 * and nothing more is printed (no stack trace, no second report).
 */
export class CommandFailed extends Schema.TaggedError<CommandFailed>()("CommandFailed", {
  command: Schema.String,
  exitCode: Schema.Int
}) {
  override readonly [Runtime.errorExitCode] = this.exitCode
  override readonly [Runtime.errorReported] = false
}

/** Columns padded to their widest cell; the last column is not padded. */
export const renderTable = (
  header: ReadonlyArray<string>,
  rows: ReadonlyArray<ReadonlyArray<string>>,
  options?: { readonly header?: boolean }
): string => {
  const all = options?.header === false ? rows : [header, ...rows]
  const widths = header.map((_, column) => Math.max(...all.map((row) => (row[column] ?? "").length)))
  return all
    .map((row) => row.map((cell, column) => column === row.length - 1 ? cell : cell.padEnd(widths[column]!)).join("  "))
    .join("\n")
}
