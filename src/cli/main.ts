/** The `edge-ccm` command line on Node: arguments in, an exit code out. */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Effect, Stdio } from "effect"
import { run } from "./Cli.ts"

const main = Effect.gen(function*() {
  const stdio = yield* Stdio.Stdio
  const code = yield* run(yield* stdio.args)
  process.exitCode = code
})

NodeRuntime.runMain(main.pipe(Effect.provide(NodeServices.layer)))
