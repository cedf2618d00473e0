/** JSON logs for collectors, readable text for terminals, and the minimum level. */
import { Config, Effect, Layer, Logger, type LogLevel, Option, References } from "effect"
import { GlobalFlag } from "effect/cli"

/** The process's logger: JSON or text, at a level. */
export const loggingLayer = (options: {
  readonly format: "json" | "text"
  readonly level: LogLevel.LogLevel
}): Layer.Layer<never> =>
  Layer.mergeAll(
    Logger.layer([options.format === "json" ? Logger.consoleJson : Logger.consolePretty()]),
    Layer.succeed(References.MinimumLogLevel, options.level)
  )

/**
 * The level asked for: the global `--log-level` flag, else EDGE_CCM_LOG_LEVEL, else Info
 * (a controller's normal work is worth a line).
 */
export const requestedLogLevel: Effect.Effect<LogLevel.LogLevel> = Effect.gen(function*() {
  const flag = yield* Effect.serviceOption(GlobalFlag.LogLevel).pipe(Effect.map(Option.flatten))
  if (Option.isSome(flag)) return flag.value
  return yield* Config.Literals(["Trace", "Debug", "Info", "Warn", "Error"], "EDGE_CCM_LOG_LEVEL").pipe(
    Config.withDefault("Info" as const)
  )
}).pipe(Effect.orElseSucceed(() => "Info" as const))
