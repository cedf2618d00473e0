/**
 * The `edge-ccm` command. Subcommands are listed in one place: adding one (the controller's
 * `run`) is one more entry in `subcommands`.
 */
import { Console, Effect, Logger, References } from "effect"
import { CliError, Command } from "effect/cli"
import { runCommand } from "./RunCommand.ts"
import { gatewayCommand } from "./GatewayCommand.ts"
import { CommandFailed } from "./output.ts"

/** The version `edge-ccm --version` prints. */
export const VERSION = "0.1.0"

/** Every subcommand of `edge-ccm`. */
export const subcommands = [runCommand, gatewayCommand] as const

/** `edge-ccm` and its commands: run, gateway. */
export const command = Command.make("edge-ccm").pipe(
  Command.withDescription(
    "Edge cloud controller manager: publishes LoadBalancer Services through the LAN's Internet gateway"
  ),
  Command.withSubcommands(subcommands)
)

/**
 * Runs the CLI on these arguments and returns the process exit code: 0 on success, the
 * command's own code after its one-line error, 2 for usage errors (already shown with help).
 * Logs go to stderr, warnings and worse only, so `--json` output stays clean.
 */
export const run = (args: ReadonlyArray<string>) =>
  Command.runWith(command, { version: VERSION })(args).pipe(
    Effect.as(0),
    Effect.catch((error) => {
      if (error instanceof CommandFailed) return Effect.succeed(error.exitCode)
      if (CliError.isCliError(error)) return Effect.succeed(2)
      return Console.error(`edge-ccm: ${String(error)}`).pipe(Effect.as(1))
    }),
    Effect.catchDefect((defect) =>
      Console.error(`edge-ccm: internal error: ${defect instanceof Error ? defect.message : String(defect)}`).pipe(
        Effect.as(70)
      )
    ),
    Effect.provideService(Logger.LogToStderr, true),
    Effect.provideService(References.MinimumLogLevel, "Warn")
  )
