#!/usr/bin/env node
/** The `edge-ccm` executable. */
import { NodeRuntime, NodeServices } from "@effect/platform-node"
import { Effect, Stdio } from "effect"
import { run } from "./cli/Cli.ts"

const main = Effect.gen(function*() {
  const stdio = yield* Stdio.Stdio
  const code = yield* run(yield* stdio.args)
  process.exitCode = code
})

NodeRuntime.runMain(main.pipe(Effect.provide(NodeServices.layer)))
