/**
 * `npm run build`'s second half: the `edge-ccm` command as one tree-shaken ESM bundle,
 * `dist/edge-ccm.mjs`, with the controller in a chunk of its own that only `edge-ccm run`
 * loads, and source maps beside every file. The package's `bin` runs it; it needs no
 * `node_modules`. Beside it, the same command as one CommonJS file for a V8 startup snapshot,
 * `dist/snapshot/edge-ccm.cjs` (src/snapshot.ts), which the image runs; with `--snapshot-blob`,
 * this Node builds the snapshot too, `dist/snapshot/edge-ccm.blob` (the image builds its own
 * with the Node that runs it).
 *
 * Rolldown, not esbuild: on this code its output is 0.74 MB against esbuild's 1.9 MB (esbuild
 * keeps the lazily imported undici and ws, and needs a `require` shim for them), and `--help`
 * runs in 73 MiB of RSS against 81 MiB (docs/benchmarks.md, "Footprint and startup"). Names are kept
 * (minified but not mangled), so a stack trace names the functions even without source maps,
 * which cost 38 MiB of RSS when Node loads them (`--enable-source-maps`).
 */
import { execFileSync } from "node:child_process"
import { mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs"
import { createRequire } from "node:module"
import * as path from "node:path"
import { build, type OutputOptions, type Plugin } from "rolldown"

const root = path.resolve(import.meta.dirname, "..")
const outDir = path.join(root, "dist")
const snapshotDir = path.join(outDir, "snapshot")
const withBlob = process.argv.includes("--snapshot-blob")
const started = Date.now()
// Chunks are named by their content: the previous build's would otherwise stay beside the new ones.
mkdirSync(outDir, { recursive: true })
for (const file of readdirSync(outDir, { withFileTypes: true })) {
  if (file.isFile() && /^edge-ccm.*\.mjs(\.map)?$/.test(file.name)) rmSync(path.join(outDir, file.name))
}
rmSync(snapshotDir, { recursive: true, force: true })

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

/**
 * For the snapshot: node:http, node:https, node:tls and node:http2 loaded at their first use,
 * after the start. Node cannot build a snapshot that holds them (the builder aborts in
 * `CheckGlobalAndEternalHandles`: their native parsers and contexts are not serialisable), and
 * the bundle's modules name them at their top. Each becomes a module whose exports are getters
 * that load the real one; while the snapshot is built a getter throws, naming what touched it.
 */
const LAZY_BUILTINS = new Set(["http", "https", "tls", "http2"])
const lazyName = (id: string) => {
  const name = id.replace(/^node:/, "")
  return LAZY_BUILTINS.has(name) ? name : undefined
}
const builtinsOnFirstUse: Plugin = {
  name: "builtins-on-first-use",
  resolveId: (id) => {
    const name = lazyName(id)
    return name === undefined ? null : `\0lazy-builtin:${name}`
  },
  load(id) {
    // @effect/platform-node loads node:http and node:https with `createRequire` in this one
    // module (to keep away from the getters of an ES import); its exports become the lazy ones.
    if (id.replaceAll("\\", "/").endsWith("/@effect/platform-node/dist/internal/http.js")) {
      return `import http from "node:http"\nimport https from "node:https"\nexport { http, https }`
    }
    if (!id.startsWith("\0lazy-builtin:")) return null
    const name = id.slice("\0lazy-builtin:".length)
    const keys = Object.getOwnPropertyNames(createRequire(import.meta.url)(`node:${name}`))
    return [
      `let loaded`,
      `const load = () => {`,
      `  if (loaded !== undefined) return loaded`,
      `  if (process.getBuiltinModule("node:v8").startupSnapshot.isBuildingSnapshot()) {`,
      `    throw new Error("node:${name} was used while the snapshot was built: it cannot be in the snapshot, only used after the start")`,
      `  }`,
      `  return loaded = process.getBuiltinModule("node:${name}")`,
      `}`,
      `for (const key of ${JSON.stringify(keys)}) {`,
      `  Object.defineProperty(module.exports, key, { enumerable: true, get: () => load()[key] })`,
      `}`
    ].join("\n")
  }
}

const output: OutputOptions = {
  sourcemap: true,
  // V8 holds a file with one character outside Latin-1 as two bytes a character, all of it.
  charset: "ascii",
  minify: { compress: true, mangle: false, codegen: true }
}

const result = await build({
  input: path.join(root, "src/bin.ts"),
  platform: "node",
  plugins: [nodeHttpByRequire],
  // Nothing is left for node_modules: the bundle runs alone.
  external: (id) => /^node:/.test(id) && id !== "node:http",
  transform: { target: "node24" },
  output: {
    ...output,
    dir: outDir,
    format: "esm",
    entryFileNames: "edge-ccm.mjs",
    chunkFileNames: "edge-ccm-[name]-[hash].mjs"
  },
  logLevel: "warn"
})

const snapshotEntry = path.join(snapshotDir, "edge-ccm.cjs")
await build({
  input: path.join(root, "src/snapshot.ts"),
  platform: "node",
  plugins: [builtinsOnFirstUse],
  external: (id) => /^node:/.test(id) && lazyName(id) === undefined,
  // CommonJS has no import.meta: effect reads `import.meta.env` beside process.env, none here.
  transform: { target: "node24", define: { "import.meta": "{}" } },
  // A property read whose value goes unused is dropped, as a call marked pure is: otherwise
  // `http.createServer` of @effect/platform-node's unused test layer stays and loads node:http.
  treeshake: { propertyReadSideEffects: false },
  // One file: the build evaluates all of it, the controller included.
  output: { ...output, file: snapshotEntry, format: "cjs", codeSplitting: false },
  logLevel: "warn"
})
// How Node builds the snapshot, from the folder that holds both (`node --snapshot-blob
// edge-ccm.blob --build-snapshot-config snapshot.json`). Without the code cache of the functions
// compiled while building: the controller idles 4 MiB lower for the same CPU until ready, and
// the blob is half the size (docs/benchmarks.md, "Footprint and startup").
writeFileSync(path.join(snapshotDir, "snapshot.json"), `${JSON.stringify({ builder: "edge-ccm.cjs", withoutCodeCache: true })}\n`)
if (withBlob) {
  execFileSync(process.execPath, ["--snapshot-blob", "edge-ccm.blob", "--build-snapshot-config", "snapshot.json"], {
    cwd: snapshotDir,
    stdio: ["ignore", "inherit", "inherit"]
  })
}

let total = 0
for (const chunk of result.output) {
  if (chunk.type !== "chunk") continue
  const size = statSync(path.join(outDir, chunk.fileName)).size
  total += size
  console.error(`[bundle] ${chunk.fileName.padEnd(40)} ${(size / 1024).toFixed(0).padStart(5)} KiB`)
}
for (const file of [snapshotEntry, ...(withBlob ? [path.join(snapshotDir, "edge-ccm.blob")] : [])]) {
  console.error(`[bundle] ${path.relative(outDir, file).padEnd(40)} ${(statSync(file).size / 1024).toFixed(0).padStart(5)} KiB`)
}
console.error(`[bundle] ${(total / 1024).toFixed(0)} KiB in ${Date.now() - started} ms: ${path.relative(root, outDir)}/edge-ccm.mjs`)
