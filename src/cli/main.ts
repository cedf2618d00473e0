/** The `edge-ccm` command line on Node: arguments in, an exit code out. */
import { runCli } from "./program.ts"

runCli()
