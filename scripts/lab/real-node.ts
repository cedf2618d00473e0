/**
 * A real node in the lab (`npm run lab -- up --real-node`): containerd, kubelet and kube-proxy
 * in each node namespace, and kube-scheduler and kube-controller-manager beside the apiserver,
 * so that Deployments and DaemonSets run as pods from images built here (images.ts).
 *
 * This machine kind has cgroup v1 ("hybrid") without systemd and a root without
 * CAP_SYS_RESOURCE: kubelet uses the cgroupfs driver and accepts cgroup v1, containerd lets
 * runc leave oom_score_adj alone, kube-proxy leaves nf_conntrack_max alone.
 *
 * containerd and kubelet enter only the node's network namespace (nsenter --net): they share
 * the machine's mount namespace, so the volumes kubelet mounts are the ones containerd's
 * containers see. Every path they can be told is under `.lab/<name>/nodes/<node>/`; the few they
 * cannot (below, HOST_PATHS), the kernel settings kubelet changes, and the pods' network
 * namespaces are recorded at start and restored by teardown. Those fixed host paths are why
 * only one lab with a real node may run at a time (a lock, REAL_NODE_LOCK); labs without one
 * can run beside it.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import type { ImageSet } from "./images.ts"
import { delay, isAlive, type ProcessRecord, run, runOk, startDaemon, stopProcess, tailFile } from "./proc.ts"

/** One lab with a real node at a time: kubelet and containerd write fixed host paths. */
export const REAL_NODE_LOCK = "/run/lock/edge-ccm-real-node"

/** Every pod subnet is inside this; node n (1-based) gets 10.244.n.0/24. */
export const CLUSTER_CIDR = "10.244.0.0/16"

/**
 * Host paths kubelet and containerd write whatever they are told (kubelet's
 * /var/log/containers links, containerd's shim sockets in /run/containerd, the CNI plugins'
 * result cache in /var/lib/cni). A path that did not exist before is removed by teardown; in one
 * that did, only this lab's entries are.
 */
export const HOST_PATHS = ["/var/log/containers", "/run/containerd", "/var/lib/cni", "/var/lib/kubelet", "/var/log/pods", "/opt/containerd", "/run/kubernetes"] as const

/**
 * The kernel settings kubelet sets at start (pkg/kubelet/cm, setupKernelTunables), not per
 * namespace: their values before are put back by teardown.
 */
export const KUBELET_SYSCTLS = [
  "vm/overcommit_memory",
  "vm/panic_on_oom",
  "kernel/panic",
  "kernel/panic_on_oops",
  "kernel/keys/root_maxkeys",
  "kernel/keys/root_maxbytes"
] as const

export interface RealNodeMember {
  /** The Node's name (`node-1`). */
  readonly name: string
  readonly namespace: string
  readonly ip: string
  /** This node's pod subnet (`10.244.1.0/24`). */
  readonly podCidr: string
  readonly dir: string
  readonly containerdSocket: string
  /** The CNI network's name: unique per lab and node, so its host-side state is told apart. */
  readonly cniNetwork: string
  /** kubelet's cgroup root, in every hierarchy (`/eccm-<lab>-node-1`). */
  readonly cgroupRoot: string
  /** Where kubelet writes pod logs (instead of /var/log/pods). */
  readonly podLogsDir: string
  containerd: ProcessRecord | null
  kubelet: ProcessRecord | null
  kubeProxy: ProcessRecord | null
}

export interface RealNodeState {
  readonly binDir: string
  readonly lockFile: string
  readonly clusterCidr: string
  /** KUBELET_SYSCTLS as found before kubelet started (empty until then). */
  sysctls: Record<string, string>
  /** Which HOST_PATHS did not exist before the node started. */
  hostPathsCreated: Array<string>
  /** The images imported into every node's containerd. */
  images: Array<{ readonly role: string; readonly reference: string; readonly id: string }>
  scheduler: ProcessRecord | null
  controllerManager: ProcessRecord | null
  readonly nodes: ReadonlyArray<RealNodeMember>
}

/** What the real node needs from the lab driver (kept narrow: real-node.ts does not import it). */
export interface RealNodeLab {
  readonly name: string
  readonly labDir: string
  readonly logDir: string
  readonly nodes: ReadonlyArray<{ readonly name: string; readonly namespace: string; readonly ip: string }>
  readonly kubeconfig: string
  readonly kubectlPath: string
  readonly caFile: string
  readonly serviceAccountKeyFile: string
  realNode: RealNodeState | null
  save(): void
}

type Log = (message: string) => void

// ---------------------------------------------------------------------------------------------
// The lock

interface LockHolder {
  readonly lab: string
  readonly statePath: string
  readonly pid: number
}

/** The real-node lock is held by a lab that is up (or starting). */
export class RealNodeLockHeld extends Error {
  readonly holder: string
  /** The holder's state file (it may be another checkout's lab). */
  readonly statePath: string
  constructor(holder: string, statePath: string) {
    super(
      `lab "${holder}" already runs a real node, and only one lab at a time can (kubelet and containerd write fixed host paths): ` +
        `stop it first with \`npm run lab -- down --name ${holder}\`, or wait for it with --wait-real-node SECONDS (labs without --real-node can run beside it)`
    )
    this.holder = holder
    this.statePath = statePath
  }
}

/**
 * Takes the machine-wide real-node lock for this lab, or throws `RealNodeLockHeld`.
 * A lock whose lab is gone (no state file, or nothing of it left running) is taken over.
 */
export function acquireRealNodeLock(lab: string, statePath: string, stillUp: (statePath: string) => boolean, log: Log): string {
  const holder: LockHolder = { lab, statePath, pid: process.pid }
  fs.mkdirSync(path.dirname(REAL_NODE_LOCK), { recursive: true })
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      fs.writeFileSync(REAL_NODE_LOCK, `${JSON.stringify(holder)}\n`, { flag: "wx" })
      return REAL_NODE_LOCK
    } catch {
      // Held: by a lab that is up, or left over.
    }
    let current: LockHolder | undefined
    try {
      current = JSON.parse(fs.readFileSync(REAL_NODE_LOCK, "utf8")) as LockHolder
    } catch {
      current = undefined
    }
    const starting = current !== undefined && !fs.existsSync(current.statePath) && fs.existsSync(`/proc/${current.pid}`)
    if (current !== undefined && (starting || (fs.existsSync(current.statePath) && stillUp(current.statePath)))) {
      throw new RealNodeLockHeld(current.lab, current.statePath)
    }
    log(`the real-node lock of lab "${current?.lab ?? "?"}" was left over: taking it`)
    fs.rmSync(REAL_NODE_LOCK, { force: true })
  }
  throw new Error(`could not take ${REAL_NODE_LOCK}`)
}

function releaseRealNodeLock(lab: string): void {
  try {
    const current = JSON.parse(fs.readFileSync(REAL_NODE_LOCK, "utf8")) as LockHolder
    if (current.lab === lab) fs.rmSync(REAL_NODE_LOCK, { force: true })
  } catch {
    // not held
  }
}

// ---------------------------------------------------------------------------------------------
// Start

/** The real node's part of the state, before anything runs (nodes get 10.244.<n>.0/24). */
export function initialRealNodeState(lab: Omit<RealNodeLab, "realNode" | "save">, binDir: string, lockFile: string): RealNodeState {
  return {
    binDir,
    lockFile,
    clusterCidr: CLUSTER_CIDR,
    sysctls: {},
    hostPathsCreated: [],
    images: [],
    scheduler: null,
    controllerManager: null,
    nodes: lab.nodes.map((node, index) => {
      const dir = path.join(lab.labDir, "nodes", node.name)
      return {
        name: node.name,
        namespace: node.namespace,
        ip: node.ip,
        podCidr: `10.244.${index + 1}.0/24`,
        dir,
        containerdSocket: path.join(dir, "containerd", "containerd.sock"),
        cniNetwork: `eccm-${lab.name}-${node.name}`,
        cgroupRoot: `/eccm-${lab.name}-${node.name}`,
        podLogsDir: path.join(dir, "pod-logs"),
        containerd: null,
        kubelet: null,
        kubeProxy: null
      }
    })
  }
}

/** The apiserver flags a real node needs, replacing the plain lab's ServiceAccount/endpoint ones. */
export function realNodeApiserverArgs(pki: string): Array<string> {
  return [
    // ServiceAccount admission on: pods get projected tokens (kube-controller-manager makes the accounts).
    // The `kubernetes` Service's endpoints kept by the apiserver itself (the default reconciler).
    "--kubelet-preferred-address-types=InternalIP",
    `--kubelet-client-certificate=${path.join(pki, "kubelet-client.crt")}`,
    `--kubelet-client-key=${path.join(pki, "kubelet-client.key")}`
  ]
}

/** Runs argv in a node's network namespace only (the machine's mount namespace stays shared). */
function inNet(namespace: string, argv: ReadonlyArray<string>): Array<string> {
  return ["nsenter", `--net=/run/netns/${namespace}`, "--", ...argv]
}

function cgroupHierarchies(): Array<string> {
  const mounts = fs.readFileSync("/proc/self/mounts", "utf8").split("\n")
  return mounts
    .map((line) => line.split(" "))
    .filter((f) => f[2] === "cgroup" || f[2] === "cgroup2")
    .map((f) => f[1] ?? "")
    .filter((m) => m.startsWith("/sys/fs/cgroup"))
}

/** kubelet insists that its cgroup root exists in every hierarchy; cpuset needs its CPUs and memory nodes set. */
function makeCgroupRoot(cgroupRoot: string): void {
  for (const hierarchy of cgroupHierarchies()) {
    const dir = path.join(hierarchy, cgroupRoot)
    fs.mkdirSync(dir, { recursive: true })
    for (const file of ["cpuset.cpus", "cpuset.mems"]) {
      const parent = path.join(hierarchy, file)
      if (fs.existsSync(parent)) fs.writeFileSync(path.join(dir, file), fs.readFileSync(parent, "utf8"))
    }
  }
}

/** Removes a cgroup tree, deepest first (rmdir of an empty cgroup; its tasks must be gone). */
function removeCgroupRoot(cgroupRoot: string): Array<string> {
  const problems: Array<string> = []
  for (const hierarchy of cgroupHierarchies()) {
    const top = path.join(hierarchy, cgroupRoot)
    if (!fs.existsSync(top)) continue
    const dirs: Array<string> = []
    const walk = (dir: string) => {
      for (const entry of fs.readdirSync(dir, { withFileTypes: true })) if (entry.isDirectory()) walk(path.join(dir, entry.name))
      dirs.push(dir)
    }
    walk(top)
    for (const dir of dirs) {
      try {
        fs.rmdirSync(dir)
      } catch (error) {
        problems.push(`cgroup ${dir}: ${(error as Error).message}`)
      }
    }
  }
  return problems
}

function containerdConfig(member: RealNodeMember, pauseImage: string): string {
  const d = member.dir
  return `version = 2
root = "${d}/containerd/root"
state = "${d}/containerd/state"
[grpc]
  address = "${member.containerdSocket}"
[plugins."io.containerd.internal.v1.opt"]
  path = "${d}/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${pauseImage}"
  # No CAP_SYS_RESOURCE here: runc cannot lower oom_score_adj below its parent's.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "${d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "${d}/cni"
`
}

/** A bridge (cni0) in the node namespace; host-local addresses from the node's pod subnet. */
function cniConfig(member: RealNodeMember): string {
  return JSON.stringify({
    cniVersion: "1.0.0",
    name: member.cniNetwork,
    plugins: [{
      type: "bridge",
      bridge: "cni0",
      isGateway: true,
      ipMasq: false,
      hairpinMode: true,
      ipam: {
        type: "host-local",
        dataDir: path.join(member.dir, "ipam"),
        ranges: [[{ subnet: member.podCidr }]],
        routes: [{ dst: "0.0.0.0/0" }]
      }
    }]
  }, null, 2)
}

function kubeletConfig(member: RealNodeMember, lab: RealNodeLab): string {
  return `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://${member.containerdSocket}
# cgroup v1 without systemd.
cgroupDriver: cgroupfs
failCgroupV1: false
cgroupRoot: ${member.cgroupRoot}
failSwapOn: false
address: ${member.ip}
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
# The apiserver's client certificate (the lab CA) for logs and exec; anything else is reviewed.
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: ${lab.caFile}}
authorization: {mode: Webhook}
clusterDomain: cluster.local
# No DNS in the lab: pods get no resolver rather than the machine's (queries would only die at the WAN).
resolvConf: ""
podLogsDir: ${member.podLogsDir}
# The lab's images are imported, never pulled: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"}
`
}

function kubeProxyConfig(member: RealNodeMember, lab: RealNodeLab, state: RealNodeState): string {
  return `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: ${lab.kubeconfig}}
mode: nftables
clusterCIDR: ${state.clusterCidr}
hostnameOverride: ${member.name}
bindAddress: ${member.ip}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# nf_conntrack_max cannot be written from a network namespace other than the first.
conntrack: {maxPerCore: 0, min: 0}
`
}

async function waitUntil<T>(what: string, check: () => Promise<T | undefined>, options: { timeoutMs: number; log?: string; signal?: AbortSignal | undefined }): Promise<T> {
  const deadline = Date.now() + options.timeoutMs
  while (true) {
    options.signal?.throwIfAborted()
    const value = await check()
    if (value !== undefined) return value
    if (Date.now() > deadline) {
      throw new Error(`${what}: not within ${options.timeoutMs / 1000} s${options.log ? `\n--- last lines of ${options.log} ---\n${tailFile(options.log, 25)}` : ""}`)
    }
    await delay(200)
  }
}

const readSysctl = (name: string) => fs.readFileSync(`/proc/sys/${name}`, "utf8").trim()

async function startNodeRuntime(member: RealNodeMember, lab: RealNodeLab, images: ImageSet, signal: AbortSignal | undefined): Promise<void> {
  for (const sub of ["containerd", "cni", "ipam", "kubelet", "pki", "runc", "run"]) fs.mkdirSync(path.join(member.dir, sub), { recursive: true })
  fs.mkdirSync(member.podLogsDir, { recursive: true })
  const pause = images.images.find((i) => i.role === "pause")?.reference ?? ""
  fs.writeFileSync(path.join(member.dir, "containerd.toml"), containerdConfig(member, pause))
  fs.writeFileSync(path.join(member.dir, "cni", "10-pods.conflist"), cniConfig(member))
  const log = path.join(lab.logDir, `containerd-${member.name}.log`)
  member.containerd = startDaemon(inNet(member.namespace, ["containerd", "--config", path.join(member.dir, "containerd.toml")]), log, `containerd (${member.name})`)
  lab.save()
  await waitUntil(`containerd on ${member.name}`, async () => {
    if (member.containerd !== null && !isAlive(member.containerd)) throw new Error(`containerd (${member.name}) exited:\n${tailFile(log)}`)
    return (await run(["ctr", "--address", member.containerdSocket, "version"])).code === 0 ? true : undefined
  }, { timeoutMs: 30_000, log, signal })
  const ctr = ["ctr", "--address", member.containerdSocket, "-n", "k8s.io"]
  for (const image of images.images) await runOk([...ctr, "images", "import", image.archive], { timeoutMs: 300_000 })
  await runOk([...ctr, "images", "label", pause, "io.cri-containerd.pinned=pinned"])
}

async function startNodeAgents(member: RealNodeMember, lab: RealNodeLab, state: RealNodeState): Promise<void> {
  makeCgroupRoot(member.cgroupRoot)
  fs.writeFileSync(path.join(member.dir, "kubelet.yaml"), kubeletConfig(member, lab))
  fs.writeFileSync(path.join(member.dir, "kube-proxy.yaml"), kubeProxyConfig(member, lab, state))
  member.kubelet = startDaemon(inNet(member.namespace, [
    path.join(state.binDir, "kubelet"),
    `--config=${path.join(member.dir, "kubelet.yaml")}`,
    `--kubeconfig=${lab.kubeconfig}`,
    `--root-dir=${path.join(member.dir, "kubelet")}`,
    `--cert-dir=${path.join(member.dir, "pki")}`,
    `--hostname-override=${member.name}`,
    `--node-ip=${member.ip}`
  ]), path.join(lab.logDir, `kubelet-${member.name}.log`), `kubelet (${member.name})`)
  member.kubeProxy = startDaemon(inNet(member.namespace, [
    path.join(state.binDir, "kube-proxy"),
    `--config=${path.join(member.dir, "kube-proxy.yaml")}`
  ]), path.join(lab.logDir, `kube-proxy-${member.name}.log`), `kube-proxy (${member.name})`)
  lab.save()
}

async function kubectl(lab: RealNodeLab, args: ReadonlyArray<string>) {
  const first = lab.nodes[0]
  if (first === undefined) throw new Error("the lab has no node")
  return run(inNet(first.namespace, [lab.kubectlPath, "--kubeconfig", lab.kubeconfig, ...args]), { timeoutMs: 60_000 })
}

/**
 * Starts the real node(s): containerd with the images imported, kubelet and kube-proxy on each
 * node, kube-scheduler and kube-controller-manager on the first; waits until every Node is
 * Ready, every kube-proxy healthy, and the `default` ServiceAccount exists.
 */
export async function startRealNode(lab: RealNodeLab, images: ImageSet, log: Log, signal: AbortSignal | undefined): Promise<Record<string, number>> {
  const state = lab.realNode
  if (state === null) throw new Error("no real node in this lab's state")
  if (cgroupHierarchies().length === 0) {
    // Under `ip netns exec` /sys is the namespace's own, without the cgroup hierarchies kubelet needs.
    throw new Error("no cgroup hierarchy is mounted under /sys/fs/cgroup here: start a real node from the machine's own mount namespace (not under `ip netns exec`)")
  }
  const timings: Record<string, number> = {}
  const t0 = performance.now()
  state.images = images.images.map((i) => ({ role: i.role, reference: i.reference, id: i.id }))
  state.hostPathsCreated = HOST_PATHS.filter((p) => !fs.existsSync(p))
  state.sysctls = Object.fromEntries(KUBELET_SYSCTLS.map((name) => [name, readSysctl(name)]))
  lab.save()

  log(`containerd on ${state.nodes.map((n) => n.name).join(", ")}; importing ${images.images.map((i) => i.reference).join(", ")}`)
  await Promise.all(state.nodes.map((member) => startNodeRuntime(member, lab, images, signal)))
  timings["containerd"] = Math.round(performance.now() - t0)

  // Pods on one node reach pods on another through that node's LAN address.
  for (const member of state.nodes) {
    for (const other of state.nodes) {
      if (other !== member) await runOk(["ip", "-n", member.namespace, "route", "add", other.podCidr, "via", other.ip])
    }
  }

  const first = state.nodes[0]
  if (first === undefined) throw new Error("the lab has no node")
  const kubeconfigFlags = [`--kubeconfig=${lab.kubeconfig}`, `--authentication-kubeconfig=${lab.kubeconfig}`, `--authorization-kubeconfig=${lab.kubeconfig}`]
  const controlDir = path.join(lab.labDir, "nodes", "control")
  fs.mkdirSync(controlDir, { recursive: true })
  state.scheduler = startDaemon(inNet(first.namespace, [
    path.join(state.binDir, "kube-scheduler"), ...kubeconfigFlags, "--leader-elect=false", "--bind-address=127.0.0.1",
    `--cert-dir=${path.join(controlDir, "scheduler")}`
  ]), path.join(lab.logDir, "kube-scheduler.log"), "kube-scheduler")
  state.controllerManager = startDaemon(inNet(first.namespace, [
    path.join(state.binDir, "kube-controller-manager"), ...kubeconfigFlags, "--leader-elect=false", "--bind-address=127.0.0.1",
    `--cert-dir=${path.join(controlDir, "controller-manager")}`,
    `--service-account-private-key-file=${lab.serviceAccountKeyFile}`, `--root-ca-file=${lab.caFile}`,
    "--use-service-account-credentials=false", "--controllers=*"
  ]), path.join(lab.logDir, "kube-controller-manager.log"), "kube-controller-manager")
  lab.save()

  log(`kubelet and kube-proxy on ${state.nodes.map((n) => n.name).join(", ")} (kubelet sets ${KUBELET_SYSCTLS.join(", ")}; teardown puts them back)`)
  const t1 = performance.now()
  for (const member of state.nodes) await startNodeAgents(member, lab, state)
  for (const member of state.nodes) {
    const kubeletLog = path.join(lab.logDir, `kubelet-${member.name}.log`)
    await waitUntil(`Node ${member.name} Ready from its kubelet`, async () => {
      for (const record of [member.kubelet, member.kubeProxy, member.containerd, state.scheduler, state.controllerManager]) {
        if (record !== null && !isAlive(record)) throw new Error(`${record.command} exited:\n${tailFile(record.log)}`)
      }
      const r = await kubectl(lab, ["get", "node", member.name, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].reason}"])
      return r.code === 0 && r.stdout === "KubeletReady" ? true : undefined
    }, { timeoutMs: 90_000, log: kubeletLog, signal })
    await waitUntil(`kube-proxy on ${member.name} healthy`, async () => {
      const r = await run(inNet(member.namespace, ["curl", "-fsS", "-m", "1", "-o", "/dev/null", "http://127.0.0.1:10256/healthz"]))
      return r.code === 0 ? true : undefined
    }, { timeoutMs: 60_000, log: path.join(lab.logDir, `kube-proxy-${member.name}.log`), signal })
  }
  timings["nodesReady"] = Math.round(performance.now() - t1)
  await waitUntil("the default ServiceAccount and kube-root-ca.crt (kube-controller-manager)", async () => {
    const sa = await kubectl(lab, ["get", "serviceaccount", "default", "-n", "default", "-o", "name"])
    const ca = await kubectl(lab, ["get", "configmap", "kube-root-ca.crt", "-n", "default", "-o", "name"])
    return sa.code === 0 && ca.code === 0 ? true : undefined
  }, { timeoutMs: 60_000, log: path.join(lab.logDir, "kube-controller-manager.log"), signal })
  timings["realNode"] = Math.round(performance.now() - t0)
  return timings
}

// ---------------------------------------------------------------------------------------------
// Teardown

async function stopRecord(record: ProcessRecord | null, problems: Array<string>): Promise<void> {
  if (record === null) return
  try {
    await stopProcess(record)
  } catch (error) {
    problems.push((error as Error).message)
  }
}

/** Network namespaces of the sandboxes this node's containerd still has, from their specs. */
async function sandboxNetns(member: RealNodeMember): Promise<Array<string>> {
  const ctr = ["ctr", "--address", member.containerdSocket, "-n", "k8s.io"]
  const out: Array<string> = []
  const ids = (await run([...ctr, "containers", "ls", "-q"])).stdout.split("\n").filter((id) => id !== "")
  for (const id of ids) {
    const info = await run([...ctr, "containers", "info", id])
    if (info.code !== 0) continue
    try {
      const spec = (JSON.parse(info.stdout) as { Spec?: { linux?: { namespaces?: Array<{ type: string; path?: string }> } } }).Spec
      const netns = spec?.linux?.namespaces?.find((n) => n.type === "network")?.path
      if (netns !== undefined && /^\/(var\/)?run\/netns\/cni-[0-9a-f-]+$/.test(netns)) out.push(path.basename(netns))
    } catch {
      // not a container spec we can read
    }
  }
  return out
}

/**
 * Stops the real node and removes what it left on the machine: the daemons by PID, every
 * container, the mounts under the lab directory, the pods' network namespaces, the cgroups, this
 * lab's entries in the fixed host paths, and the kernel settings kubelet changed. Returns what it could not undo; says what it removed through `log`.
 */
export async function stopRealNode(lab: RealNodeLab, log: Log): Promise<Array<string>> {
  const state = lab.realNode
  if (state === null) return []
  const problems: Array<string> = []
  const removed: Array<string> = []
  const started = performance.now()

  // The agents first, so that nothing restarts a pod; the lab goes away with the pods, so they
  // are not stopped gracefully: the pod networks are undone below, with the namespaces.
  await stopRecord(state.controllerManager, problems)
  await stopRecord(state.scheduler, problems)
  for (const member of state.nodes) {
    await stopRecord(member.kubeProxy, problems)
    await stopRecord(member.kubelet, problems)
  }
  const netns = new Set<string>()
  for (const member of state.nodes) {
    if (member.containerd !== null && isAlive(member.containerd)) for (const n of await sandboxNetns(member)) netns.add(n)
  }
  // Kill every container (their shims exit with them) and delete them.
  await Promise.all(state.nodes.map(async (member) => {
    if (member.containerd === null || !isAlive(member.containerd)) return
    const ctr = ["ctr", "--address", member.containerdSocket, "-n", "k8s.io"]
    const tasks = async () =>
      (await run([...ctr, "tasks", "ls"])).stdout.split("\n").slice(1).map((l) => l.trim().split(/\s+/)).filter((f) => f.length === 3)
    const running = (await tasks()).filter(([, , status]) => status !== "STOPPED").map(([id = ""]) => id)
    await Promise.all(running.map((id) => run([...ctr, "tasks", "kill", "-s", "SIGKILL", id])))
    for (let i = 0; i < 100 && (await tasks()).some(([, , status]) => status !== "STOPPED"); i++) await delay(100)
    const stopped = (await tasks()).map(([id = ""]) => id)
    if (stopped.length > 0) await run([...ctr, "tasks", "delete", ...stopped])
    const ids = (await run([...ctr, "containers", "ls", "-q"])).stdout.split("\n").filter((id) => id !== "")
    if (ids.length > 0) await run([...ctr, "containers", "delete", ...ids])
    if (ids.length > 0) removed.push(`${ids.length} containers on ${member.name}`)
    await stopRecord(member.containerd, problems)
  }))
  // Mounts under the node directories (volumes, rootfs, sandbox /dev/shm), deepest first.
  const nodesDir = `${path.join(lab.labDir, "nodes")}/`
  const mounts = fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n")
    .map((line) => line.split(" ")[4] ?? "")
    .filter((target) => target.startsWith(nodesDir))
    .sort((a, b) => b.length - a.length)
  for (const target of [...new Set(mounts)]) {
    const r = await run(["umount", "-l", target])
    if (r.code !== 0) problems.push(`umount ${target}: ${r.stderr.trim()}`)
  }
  if (mounts.length > 0) removed.push(`${mounts.length} mounts`)
  for (const name of netns) {
    if (!fs.existsSync(`/run/netns/${name}`)) continue
    const r = await run(["ip", "netns", "delete", name])
    if (r.code === 0) removed.push(`pod network namespace ${name}`)
    else problems.push(`ip netns delete ${name}: ${r.stderr.trim()}`)
  }
  for (const member of state.nodes) {
    problems.push(...removeCgroupRoot(member.cgroupRoot))
    // CNI result cache entries of this lab's networks.
    const results = "/var/lib/cni/results"
    if (fs.existsSync(results)) {
      for (const entry of fs.readdirSync(results)) {
        if (entry.startsWith(`${member.cniNetwork}-`)) fs.rmSync(path.join(results, entry), { force: true })
      }
    }
  }
  // kubelet's links to this lab's pod logs.
  if (fs.existsSync("/var/log/containers")) {
    for (const entry of fs.readdirSync("/var/log/containers")) {
      const link = path.join("/var/log/containers", entry)
      let target = ""
      try {
        target = fs.readlinkSync(link)
      } catch {
        continue
      }
      if (state.nodes.some((n) => target.startsWith(`${n.podLogsDir}/`))) fs.rmSync(link, { force: true })
    }
  }
  for (const hostPath of state.hostPathsCreated) {
    if (!fs.existsSync(hostPath)) continue
    fs.rmSync(hostPath, { recursive: true, force: true })
    removed.push(hostPath)
  }
  for (const [name, value] of Object.entries(state.sysctls)) {
    if (readSysctl(name) === value) continue
    fs.writeFileSync(`/proc/sys/${name}`, value)
    removed.push(`${name.replaceAll("/", ".")} back to ${value}`)
  }
  fs.rmSync(path.join(lab.labDir, "nodes"), { recursive: true, force: true })
  releaseRealNodeLock(lab.name)
  log(`real node down in ${((performance.now() - started) / 1000).toFixed(1)} s: ${removed.join(", ") || "nothing left to remove"}`)
  return problems
}
