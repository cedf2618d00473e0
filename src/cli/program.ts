/** The `edge-ccm` command line on Node as one program, for every way of starting it. */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Effect, Stdio } from "effect"
import { run } from "./Cli.ts"

/** The process's arguments in, its exit code set. */
export const cliProgram = Effect.gen(function*() {
  const stdio = yield* Stdio.Stdio
  const code = yield* run(yield* stdio.args)
  process.exitCode = code
}).pipe(Effect.provide(NodeServices.layer))

/** Runs the command line until it ends; SIGINT and SIGTERM interrupt it. */
export const runCli = (): void => NodeRuntime.runMain(cliProgram)
