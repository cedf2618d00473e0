/**
 * `npm run build`'s second half: the `edge-ccm` command as one tree-shaken ESM bundle,
 * `dist/edge-ccm.mjs`, with the controller in a chunk of its own that only `edge-ccm run`
 * loads, and source maps beside every file. The image and the package's `bin` run it; it needs
 * no `node_modules`.
 *
 * Rolldown, not esbuild: on this code its output is 0.74 MB against esbuild's 1.9 MB (esbuild
 * keeps the lazily imported undici and ws, and needs a `require` shim for them), and `--help`
 * runs in 73 MiB of RSS against 81 MiB (docs/benchmarks.md, "Footprint and startup"). Names are kept
 * (minified but not mangled), so a stack trace names the functions even without source maps,
 * which cost 38 MiB of RSS when Node loads them (`--enable-source-maps`).
 */
import { mkdirSync, readdirSync, rmSync, statSync } from "node:fs"
import { createRequire } from "node:module"
import * as path from "node:path"
import { build, type Plugin } from "rolldown"

const root = path.resolve(import.meta.dirname, "..")
const outDir = path.join(root, "dist")
const started = Date.now()
// Chunks are named by their content: the previous build's would otherwise stay beside the new ones.
mkdirSync(outDir, { recursive: true })
for (const file of readdirSync(outDir, { withFileTypes: true })) {
  if (file.isFile() && /^edge-ccm.*\.mjs(\.map)?$/.test(file.name)) rmSync(path.join(outDir, file.name))
}

/**
 * `import … from "node:http"` as `require("node:http")`. An ES import of a built-in module reads
 * every export once, and three of node:http's (WebSocket, CloseEvent, MessageEvent) are getters
 * that load Node's own undici, http2 and worker_threads, none of which the controller uses:
 * 13 MiB of RSS in a process that loads nothing else, 3 MiB in the controller's. `require`
 * leaves the getters alone.
 */
const nodeHttpByRequire: Plugin = {
  name: "node-http-by-require",
  resolveId: (id) => (id === "node:http" || id === "http" ? "\0node-http" : null),
  load(id) {
    if (id !== "\0node-http") return null
    const http = createRequire(import.meta.url)("node:http") as object
    const values = Object.entries(Object.getOwnPropertyDescriptors(http))
      .filter(([name, descriptor]) => "value" in descriptor && /^[A-Za-z_$][\w$]*$/.test(name))
      .map(([name]) => name)
    return [
      `import { createRequire } from "node:module"`,
      `const http = createRequire(import.meta.url)("node:http")`,
      `export default http`,
      `export const { ${values.join(", ")} } = http`
    ].join("\n")
  }
}

const result = await build({
  input: path.join(root, "src/bin.ts"),
  platform: "node",
  plugins: [nodeHttpByRequire],
  // Nothing is left for node_modules: the bundle runs alone.
  external: (id) => /^node:/.test(id) && id !== "node:http",
  transform: { target: "node24" },
  output: {
    dir: outDir,
    format: "esm",
    entryFileNames: "edge-ccm.mjs",
    chunkFileNames: "edge-ccm-[name]-[hash].mjs",
    sourcemap: true,
    // V8 holds a file with one character outside Latin-1 as two bytes a character, all of it.
    charset: "ascii",
    minify: { compress: true, mangle: false, codegen: true }
  },
  logLevel: "warn"
})

let total = 0
for (const output of result.output) {
  if (output.type !== "chunk") continue
  const size = statSync(path.join(outDir, output.fileName)).size
  total += size
  console.error(`[bundle] ${output.fileName.padEnd(40)} ${(size / 1024).toFixed(0).padStart(5)} KiB`)
}
console.error(`[bundle] ${(total / 1024).toFixed(0)} KiB in ${Date.now() - started} ms: ${path.relative(root, outDir)}/edge-ccm.mjs`)
