/**
 * What a process under test said, shown when a test fails: its log is the first thing to read,
 * and it is gone once the file's processes stop. Apart from controller.ts, which the
 * benchmarks import outside the test runner.
 */
import { afterEach } from "vitest"

/** After each failed test of the file, the tail of each named process's output. */
export function showOutputOnFailure(
  processes: Readonly<Record<string, () => { output(): string } | undefined>>,
  chars = 4000
): void {
  afterEach((context) => {
    if (context.task.result?.state !== "fail") return
    for (const [name, process] of Object.entries(processes)) {
      console.log(`${name} output (last ${chars} chars):\n${process()?.output().slice(-chars) ?? "(not started)"}`)
    }
  })
}
