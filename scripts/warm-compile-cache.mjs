// Image build step: loads every chunk of the bundle beside it (all but the command line's entry,
// which runs when loaded), so that NODE_COMPILE_CACHE keeps their compiled code for the starts to
// come. Loading a chunk defines its functions and runs nothing.
import { readdirSync } from "node:fs"

for (const file of readdirSync(import.meta.dirname)) {
  if (/^edge-ccm-.+\.mjs$/.test(file) && !file.startsWith("edge-ccm-main-")) await import(`${import.meta.dirname}/${file}`)
}
