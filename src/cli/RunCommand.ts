/**
 * `edge-ccm run`: the controller, until SIGTERM (which leaves every mapping in place). The
 * controller itself (Kubernetes client, router backends, loops) is loaded only when `run` runs:
 * `edge-ccm gateway …` and `--help` never load it.
 */
import { Console, Effect } from "effect"
import { Command } from "effect/cli"
import { requestedLogLevel } from "../runtime/Logging.ts"
import { runFlags, settingsProblem, toRunSettings } from "../runtime/Settings.ts"
import { CommandFailed } from "./output.ts"

/** `edge-ccm run`: the controller, with its flags (Settings.ts). */
export const runCommand = Command.make(
  "run",
  runFlags,
  (flags) => {
    const settings = toRunSettings(flags)
    const problem = settingsProblem(settings)
    if (problem !== undefined) {
      return Console.error(`edge-ccm run: ${problem}`).pipe(
        Effect.andThen(Effect.fail(new CommandFailed({ command: "run", exitCode: 2 })))
      )
    }
    return Effect.all([requestedLogLevel, Effect.promise(() => import("../runtime/ControllerProcess.ts"))]).pipe(
      Effect.flatMap(([level, process]) => process.runControllerProcess(settings, level)),
      Effect.asVoid
    )
  }
).pipe(
  Command.withDescription(
    "Run the controller: map annotated LoadBalancer Services on the LAN's router and publish its address"
  )
)
