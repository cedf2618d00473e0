/** Runs `edge-ccm` in-process, as the tests of its commands need it. */
import { NodeServices } from "@effect/platform-node"
import { assert } from "@effect/vitest"
import { ConfigProvider, Effect, Layer } from "effect"
import { TestConsole } from "effect/testing"
import { run } from "../../src/cli/Cli.ts"

/** Runs `edge-ccm <args>` in-process with a clean environment; returns the exit code and output. */
export const cli = (args: ReadonlyArray<string>, env: Record<string, string> = {}) =>
  Effect.gen(function*() {
    const code = yield* run(args)
    const out = (yield* TestConsole.logLines).map(String).join("\n")
    const err = (yield* TestConsole.errorLines).map(String).join("\n")
    return { code, out, err }
  }).pipe(
    Effect.provide(Layer.mergeAll(
      TestConsole.layer,
      NodeServices.layer,
      ConfigProvider.layer(ConfigProvider.fromEnv({ env }))
    ))
  )

/** One line, no stack trace. */
export const assertOneLine = (text: string) => {
  assert.strictEqual(text.split("\n").length, 1, text)
  assert.notMatch(text, /\bat .*\.ts:\d+/)
}
