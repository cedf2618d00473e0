/** `edge-ccm run`: the controller, until SIGTERM (which leaves every mapping in place). */
import { Effect } from "effect"
import { Command } from "effect/cli"
import { runControllerProcess } from "./ControllerProcess.ts"
import { requestedLogLevel } from "./Logging.ts"
import { runFlags, toRunSettings } from "./Settings.ts"

export const runCommand = Command.make(
  "run",
  runFlags,
  (flags) =>
    requestedLogLevel.pipe(
      Effect.flatMap((level) => runControllerProcess(toRunSettings(flags), level)),
      Effect.asVoid
    )
).pipe(
  Command.withDescription(
    "Run the controller: map annotated LoadBalancer Services on the LAN's router and publish its address"
  )
)
