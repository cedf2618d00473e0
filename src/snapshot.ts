/**
 * The `edge-ccm` command as a V8 startup snapshot: what the image runs. scripts/bundle.ts makes
 * a one-file CommonJS build of this entry (`dist/snapshot/edge-ccm.cjs`); the image's Node runs
 * it once (`--build-snapshot-config snapshot.json`), which loads every module of the CLI and the
 * controller and saves the heap in a blob. A start (`node --snapshot-blob edge-ccm.blob -- ARGS`)
 * deserialises that heap instead of loading the modules again (docs/benchmarks.md, "Footprint
 * and startup").
 *
 * Nothing here may run at build time that the start must do afresh: no arguments, environment,
 * clock or randomness is read before `setDeserializeMainFunction`'s function runs. Node's http,
 * https, tls and http2 modules cannot be in the snapshot; the build loads them on first use
 * (scripts/bundle.ts), and Intl objects are made on first use (`snapshotIntl.ts`).
 */
import { startupSnapshot } from "node:v8"
import { restoreIntl } from "./snapshotIntl.ts"
import { runCli } from "./cli/program.ts"
// `edge-ccm run` loads the controller when it runs (RunCommand.ts): here it is loaded at build time.
import "./runtime/ControllerProcess.ts"

restoreIntl()

startupSnapshot.setDeserializeMainFunction(() => {
  // Started from a blob, Node puts no script in argv: the command's arguments begin at argv[1].
  // Put the command's name there, so they begin at argv[2] as they do for `node edge-ccm.mjs`.
  process.argv.splice(1, 0, "edge-ccm")
  runCli()
})
