/** `edge-ccm run`: the controller, until SIGTERM (which leaves every mapping in place). */
import { Console, Effect } from "effect"
import { Command } from "effect/cli"
import { CommandFailed } from "../cli/output.ts"
import { runControllerProcess } from "./ControllerProcess.ts"
import { requestedLogLevel } from "./Logging.ts"
import { runFlags, settingsProblem, toRunSettings } from "./Settings.ts"

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
    return requestedLogLevel.pipe(
      Effect.flatMap((level) => runControllerProcess(settings, level)),
      Effect.asVoid
    )
  }
).pipe(
  Command.withDescription(
    "Run the controller: map annotated LoadBalancer Services on the LAN's router and publish its address"
  )
)
