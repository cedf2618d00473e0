/**
 * The lab driver: a real miniupnpd gateway in network namespaces and, optionally, a real
 * etcd + kube-apiserver on the node namespace. Used by `npm run lab`, by scripts/lab/run-e2e.sh
 * and (for reboots and reconfiguration) by test/e2e/support/lab.ts.
 *
 * Topology (see scripts/lab/README.md):
 *
 *   wan  eth0 122.112.219.1/24 ── wan0 122.112.219.229/24  gw  br0 192.168.77.1/24
 *        2001:db8:1::2/64          2001:db8:1::1/64            2001:db8:2::1/64
 *                                                            ├─ lan0 ── eth0 192.168.77.10/24  lan   (node-1)   2001:db8:2::10/64
 *                                                            ├─ lan1 ── eth0 192.168.77.11/24  lan2  (node-2)   2001:db8:2::11/64
 *                                                            └─ peer0 ─ eth0 192.168.77.50/24  peer  (another)  2001:db8:2::50/64
 *
 * IPv6 is routed, never translated: the gateway forwards between its two /64s, and its
 * `forward` chain (policy drop) lets the Internet in only through miniupnpd's pinholes.
 *
 * Everything runs inside namespaces created here; nothing is sent from the machine's own
 * namespace. Every process is recorded (PID + start time) in the state file and stopped by
 * that PID; every namespace is deleted on teardown, also after a failed start.
 */
import { spawnSync } from "node:child_process"
import { randomBytes } from "node:crypto"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"
import { type Arch, buildImages, type ImageSet } from "./images.ts"
import {
  delay,
  isAlive,
  type ProcessRecord,
  processesInNamespaces,
  recordProcess,
  run,
  runOk,
  startDaemon,
  stopProcess,
  tailFile
} from "./proc.ts"
import {
  acquireRealNodeLock,
  initialRealNodeState,
  type RealNodeLab,
  RealNodeLockHeld,
  realNodeApiserverArgs,
  type RealNodeState,
  startRealNode,
  stopRealNode
} from "./real-node.ts"

export type { ProcessRecord } from "./proc.ts"
export type { RealNodeMember, RealNodeState } from "./real-node.ts"

/** The repository root (two levels above this file). */
export const repoRoot: string = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..")

/** Where labs keep their state: `<repo>/.lab/<name>/` (gitignored). */
export const labsRoot: string = process.env["EDGE_CCM_LAB_ROOT"] ?? path.join(repoRoot, ".lab")

export const LAB = {
  wanClientCidr: "122.112.219.1/24",
  gatewayWanCidr: "122.112.219.229/24",
  gatewayLanCidr: "192.168.77.1/24",
  nodeIps: ["192.168.77.10", "192.168.77.11"],
  peerIp: "192.168.77.50",
  lanPrefix: 24,
  /** IPv6, documentation prefixes (RFC 3849): the WAN /64 and the LAN /64, no NAT66. */
  wanClientCidr6: "2001:db8:1::2/64",
  gatewayWanCidr6: "2001:db8:1::1/64",
  gatewayLanCidr6: "2001:db8:2::1/64",
  nodeIps6: ["2001:db8:2::10", "2001:db8:2::11"],
  peerIp6: "2001:db8:2::50",
  lanPrefix6: 64,
  upnpPort: 49536,
  apiserverPort: 6443,
  etcdClientPort: 2379,
  etcdPeerPort: 2380,
  // Dual-stack: IPv4 first (Services stay IPv4-only unless they ask), and an IPv6 range so the
  // apiserver accepts PreferDualStack, RequireDualStack and IPv6-only Services.
  serviceCidr: "10.96.0.0/16,fd00:10:96::/112",
  nodePortRange: "30000-32767",
  serviceAccountIssuer: "https://kubernetes.default.svc.cluster.local",
  /** Whose requests the audit log records: the controller's ServiceAccounts (manifests/). */
  auditedGroup: "system:serviceaccounts:edge-ccm-system"
} as const

/** Interface names; each is unique inside its own namespace only. */
export const IFACES = {
  wanClient: "eth0",
  gatewayWan: "wan0",
  gatewayLan: "br0",
  node: "eth0"
} as const

/** The three chains miniupnpd writes, flushed on a reboot. */
export const MINIUPNPD_CHAINS = [
  "inet filter miniupnpd",
  "inet nat prerouting_miniupnpd",
  "inet nat postrouting_miniupnpd"
] as const

export interface GatewaySettings {
  readonly secureMode: boolean
  readonly enableUpnp: boolean
  readonly enableNatpmp: boolean
  /** IPv6 on the router (pinholes, the firewall service); absent: on. Off: `ipv6_disable=yes`, no `ext_ifname6`. */
  readonly enableIpv6?: boolean | undefined
}

export interface LabNode {
  /** The Node object's name, e.g. `node-1`. */
  readonly name: string
  readonly namespace: string
  readonly ip: string
  /** Its global IPv6 address, where kube-proxy would serve a Service over IPv6. */
  readonly ip6: string
  /** The gateway bridge port this node's veth is plugged into. */
  readonly bridgePort: string
}

export interface ControlPlaneState {
  readonly binDir: string
  readonly kubectlPath: string
  readonly kubeApiserverPath: string
  readonly etcdPath: string
  readonly apiserverUrl: string
  readonly etcdUrl: string
  readonly adminToken: string
  readonly caFile: string
  readonly kubeconfig: string
  readonly tokenFile: string
  readonly serviceAccountKeyFile: string
  readonly etcdDataDir: string
  /**
   * The apiserver's audit log (JSON lines, level Metadata): every request made by a
   * ServiceAccount of `edge-ccm-system`, and nobody else's.
   */
  readonly auditLog: string
  readonly auditPolicyFile: string
  etcd: ProcessRecord | null
  apiserver: ProcessRecord | null
}

export interface GatewayState {
  readonly binary: string
  readonly confPath: string
  readonly pidFile: string
  settings: GatewaySettings
  process: ProcessRecord | null
  /** How many times miniupnpd was started (1 after `up`, +1 per reboot). */
  starts: number
  /** A host route added in `wan` toward a gateway WAN address outside the client's subnet. */
  wanHostRoute: string | null
}

export interface LabNamespaces {
  readonly wan: string
  readonly gw: string
  readonly lan: string
  readonly peer: string
  readonly lan2: string | null
}

export type NamespaceKey = "wan" | "gw" | "lan" | "lan2" | "peer"

/** The state file, `.lab/<name>/state.json`. */
export interface LabStateFile {
  readonly version: 1
  readonly name: string
  readonly labDir: string
  readonly statePath: string
  readonly logDir: string
  readonly prefix: string
  readonly createdAt: string
  status: "starting" | "up" | "stopping"
  readonly namespaces: LabNamespaces
  readonly interfaces: typeof IFACES
  readonly wanClientIp: string
  readonly wanClientCidr: string
  gatewayWanIp: string
  gatewayWanCidr: string
  readonly gatewayLanIp: string
  readonly gatewayLanCidr: string
  readonly nodeIp: string
  readonly peerIp: string
  readonly wanClientIp6: string
  readonly gatewayWanIp6: string
  readonly gatewayLanIp6: string
  readonly nodeIp6: string
  readonly peerIp6: string
  readonly nodes: ReadonlyArray<LabNode>
  readonly rootDescUrl: string
  readonly controlUrl: string
  /** The root description over IPv6, `http://[2001:db8:2::1]:49536/rootDesc.xml`. */
  readonly rootDescUrl6: string
  /** miniupnpd's WANIPv6FirewallControl:1 control URL, over IPv6. */
  readonly firewallControlUrl: string
  readonly gateway: GatewayState
  controlPlane: ControlPlaneState | null
  /** containerd, kubelet, kube-proxy, kube-scheduler, kube-controller-manager (`--real-node`). */
  realNode: RealNodeState | null
  /**
   * The process whose exit ends this lab (`in-lab.sh`, from `EDGE_CCM_LAB_OWNER_PID`); null for a
   * lab brought up by hand. A lab whose owner is gone was left up by a killed run.
   */
  readonly owner?: ProcessRecord | null
  readonly timings: Record<string, number>
}

/** A start-up step that failed: which step, which component, and the tail of its log. */
export class LabStepError extends Error {
  readonly step: string
  readonly component: string | null
  readonly logTail: string
  /** Set once the failure has been reported (with its log tail and the teardown). */
  reported = false
  constructor(step: string, message: string, component: string | null = null, logTail = "") {
    super(`step "${step}" failed: ${message}`)
    this.name = "LabStepError"
    this.step = step
    this.component = component
    this.logTail = logTail
  }
}

export type Logger = (message: string) => void

const defaultLogger: Logger = (message) => process.stderr.write(`[lab] ${message}\n`)

// ---------------------------------------------------------------------------------------------
// State file

export function statePathFor(name: string): string {
  return path.join(labsRoot, name, "state.json")
}

export function readState(statePath: string): LabStateFile {
  let text: string
  try {
    text = fs.readFileSync(statePath, "utf8")
  } catch {
    throw new Error(`no lab state at ${statePath}`)
  }
  const state = JSON.parse(text) as LabStateFile
  // State files of labs started before real nodes existed.
  if (state.realNode === undefined) state.realNode = null
  return state
}

export function writeState(state: LabStateFile): void {
  if (!fs.existsSync(state.labDir)) return
  const tmp = `${state.statePath}.${process.pid}.tmp`
  fs.writeFileSync(tmp, `${JSON.stringify(state, null, 2)}\n`)
  fs.renameSync(tmp, state.statePath)
}

function namespaceList(state: LabStateFile): Array<string> {
  const ns = state.namespaces
  return [ns.lan2, ns.peer, ns.lan, ns.wan, ns.gw].filter((n): n is string => n !== null)
}

export function namespaceExists(name: string): boolean {
  return fs.existsSync(`/run/netns/${name}`)
}

export function namespaceOf(state: LabStateFile, key: NamespaceKey | string): string {
  if (key === "wan" || key === "gw" || key === "lan" || key === "peer") return state.namespaces[key]
  if (key === "lan2") {
    if (state.namespaces.lan2 === null) throw new Error(`lab "${state.name}" has no second node (start it with --nodes 2)`)
    return state.namespaces.lan2
  }
  if (namespaceList(state).includes(key)) return key
  throw new Error(`"${key}" is not a namespace of lab "${state.name}" (${namespaceList(state).join(", ")})`)
}

/** True when the lab still has namespaces or processes on the machine. */
export function isInUse(state: LabStateFile): boolean {
  const records = [state.gateway.process, state.controlPlane?.etcd ?? null, state.controlPlane?.apiserver ?? null, ...realNodeRecords(state)]
  return namespaceList(state).some(namespaceExists) || records.some((r) => r !== null && isAlive(r))
}

/** The real node's daemons, by name (empty without --real-node). */
function realNodeProcesses(state: LabStateFile): Array<[string, ProcessRecord | null]> {
  const rn = state.realNode
  if (rn === null) return []
  return [
    ["kube-scheduler", rn.scheduler],
    ["kube-controller-manager", rn.controllerManager],
    ...rn.nodes.flatMap((n): Array<[string, ProcessRecord | null]> => [
      [`containerd (${n.name})`, n.containerd],
      [`kubelet (${n.name})`, n.kubelet],
      [`kube-proxy (${n.name})`, n.kubeProxy]
    ])
  ]
}

function realNodeRecords(state: LabStateFile): Array<ProcessRecord | null> {
  return realNodeProcesses(state).map(([, record]) => record)
}

// ---------------------------------------------------------------------------------------------
// Host commands and binaries

async function which(name: string, extraDirs: ReadonlyArray<string> = ["/usr/sbin", "/sbin"]): Promise<string | undefined> {
  for (const dir of [...(process.env["PATH"] ?? "").split(":"), ...extraDirs]) {
    if (dir === "") continue
    const candidate = path.join(dir, name)
    try {
      fs.accessSync(candidate, fs.constants.X_OK)
      return candidate
    } catch {
      // next
    }
  }
  return undefined
}

/** The control-plane binary cache directory, as build-control-plane.sh computes it. */
export async function controlPlaneBinDir(): Promise<string> {
  return (await runOk(["bash", path.join(repoRoot, "scripts/lab/build-control-plane.sh"), "--print-dir"])).trim()
}

/** The binaries a real node adds to the control plane's (build-control-plane.sh --real-node). */
export const REAL_NODE_BINARIES = ["kubelet", "kube-proxy", "kube-scheduler", "kube-controller-manager", "helm"] as const

export function controlPlaneBinariesPresent(binDir: string, realNode = false): boolean {
  return ["kube-apiserver", "kubectl", "etcd", ...(realNode ? REAL_NODE_BINARIES : [])].every((b) => {
    try {
      fs.accessSync(path.join(binDir, b), fs.constants.X_OK)
      return true
    } catch {
      return false
    }
  })
}

// ---------------------------------------------------------------------------------------------
// Gateway: miniupnpd

export function miniupnpdConf(state: LabStateFile): string {
  const s = state.gateway.settings
  const yes = (b: boolean) => (b ? "yes" : "no")
  // IPv6 pinholes: ext_ifname6 is the WAN side of the pinhole rules. No ipv6_listening_ip: set
  // to the LAN address it closes the IPv4 listener and SSDP (docs/ipv6-field-notes.md);
  // without it miniupnpd serves both families on the bridge. force_igd_desc_v1=no keeps the
  // IGD:2 description, the one that lists WANIPv6FirewallControl:1. The allow/deny rules stay
  // IPv4 only: miniupnpd 2.3.1 refuses an IPv6 rule as a parse error.
  const ipv6 = s.enableIpv6 !== false
  return [
    `ext_ifname=${IFACES.gatewayWan}`,
    ...(ipv6 ? [`ext_ifname6=${IFACES.gatewayWan}`] : ["ipv6_disable=yes"]),
    `listening_ip=${IFACES.gatewayLan}`,
    "force_igd_desc_v1=no",
    `port=${LAB.upnpPort}`,
    `enable_upnp=${yes(s.enableUpnp)}`,
    `enable_natpmp=${yes(s.enableNatpmp)}`,
    `secure_mode=${yes(s.secureMode)}`,
    "system_uptime=no",
    "upnp_table_name=filter",
    "upnp_nat_table_name=nat",
    "upnp_forward_chain=miniupnpd",
    "upnp_nat_chain=prerouting_miniupnpd",
    "upnp_nat_postrouting_chain=postrouting_miniupnpd",
    "allow 1-65535 192.168.77.0/24 1-65535",
    "deny 0-65535 0.0.0.0/0 0-65535",
    ""
  ].join("\n")
}

/**
 * The gateway's firewall. The `inet` tables cover both families: the forward chain's policy
 * drops what the Internet sends to a LAN host (IPv4 that no DNAT rule took, IPv6 to any node
 * address) unless a rule in miniupnpd's chain (a mapping's accept, a pinhole) lets it in.
 */
function nftRuleset(): string {
  return `
table inet filter {
  chain miniupnpd {
  }
  chain forward {
    type filter hook forward priority 0; policy drop;
    ct state established,related accept
    iifname "${IFACES.gatewayLan}" accept
    jump miniupnpd
  }
}
table inet nat {
  chain prerouting_miniupnpd {
  }
  chain postrouting_miniupnpd {
  }
  chain prerouting {
    type nat hook prerouting priority -100; policy accept;
    jump prerouting_miniupnpd
  }
  chain postrouting {
    type nat hook postrouting priority 100; policy accept;
    jump postrouting_miniupnpd
    oifname "${IFACES.gatewayWan}" masquerade
  }
}
`
}

/** The IGD:2 services the lab's SOAP helpers speak to. */
export const SERVICES = {
  connection: "urn:schemas-upnp-org:service:WANIPConnection:2",
  firewall: "urn:schemas-upnp-org:service:WANIPv6FirewallControl:1"
} as const

/**
 * One SOAP action against the gateway, sent with curl from `fromNs` (default: the node
 * namespace): WANIPConnection:2 over IPv4, or with `service: "firewall"`
 * WANIPv6FirewallControl:1 over IPv6 (miniupnpd opens pinholes only for the sender's IPv6
 * address).
 */
export async function gatewaySoap(
  state: LabStateFile,
  action: string,
  args: Readonly<Record<string, string>> = {},
  options: { fromNs?: string; timeoutMs?: number; service?: keyof typeof SERVICES } = {}
): Promise<{ status: number; body: string; error: string }> {
  const service = SERVICES[options.service ?? "connection"]
  const url = options.service === "firewall" ? state.firewallControlUrl : state.controlUrl
  const body = `<?xml version="1.0"?>\r\n<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><u:${action} xmlns:u="${service}">${
    Object.entries(args).map(([k, v]) => `<${k}>${v}</${k}>`).join("")
  }</u:${action}></s:Body></s:Envelope>\r\n`
  const seconds = String(Math.max(1, Math.ceil((options.timeoutMs ?? 3000) / 1000)))
  const r = await run([
    "ip", "netns", "exec", options.fromNs ?? state.namespaces.lan,
    "curl", "-sS", "-g", "-m", seconds, "-o", "-", "-w", "\n%{http_code}",
    "-H", "Content-Type: text/xml; charset=\"utf-8\"",
    "-H", `SOAPAction: "${service}#${action}"`,
    "--data-binary", "@-",
    url
  ], { input: body })
  const cut = r.stdout.lastIndexOf("\n")
  const status = Number(r.stdout.slice(cut + 1)) || 0
  return { status, body: r.stdout.slice(0, Math.max(0, cut)), error: r.code === 0 ? "" : r.stderr.trim() }
}

async function gatewayAnswers(state: LabStateFile): Promise<string | true> {
  const s = state.gateway.settings
  if (s.enableUpnp) {
    const r = await gatewaySoap(state, "GetStatusInfo", {}, { timeoutMs: 2000 })
    if (r.status !== 200) return `SOAP GetStatusInfo: ${r.error || `HTTP ${r.status}`}`
    const firewall = s.enableIpv6 === false
      ? { status: 200, error: "" }
      : await gatewaySoap(state, "GetFirewallStatus", {}, { timeoutMs: 2000, service: "firewall" })
    if (firewall.status !== 200) return `SOAP GetFirewallStatus over IPv6: ${firewall.error || `HTTP ${firewall.status}`}`
  }
  if (s.enableNatpmp) {
    const r = await run(["ip", "netns", "exec", state.namespaces.gw, "ss", "-Hlun", `sport = :5351`])
    if (!r.stdout.includes(`${state.gatewayLanIp}:5351`) && !r.stdout.includes("*:5351") && !r.stdout.includes("0.0.0.0:5351")) {
      return "NAT-PMP socket on UDP 5351 not open yet"
    }
  }
  return true
}

/** miniupnpd logs only to syslog; when it fails to start, run it once in the foreground to see why. */
async function miniupnpdDiagnostics(state: LabStateFile): Promise<string> {
  const debugPid = path.join(state.labDir, "miniupnpd-debug.pid")
  const log = path.join(state.logDir, "miniupnpd-debug.log")
  const record = startDaemon(
    ["ip", "netns", "exec", state.namespaces.gw, state.gateway.binary, "-d", "-f", state.gateway.confPath, "-P", debugPid],
    log,
    "miniupnpd -d (diagnostic run)"
  )
  const deadline = Date.now() + 1500
  while (isAlive(record) && Date.now() < deadline) await delay(50)
  await stopProcess(record, 2000)
  return `miniupnpd -d (diagnostic run after the failure):\n${tailFile(log, 30)}`
}

/** Starts miniupnpd in gw with the state's settings and waits until it answers. */
export async function startGateway(state: LabStateFile, log: Logger = () => {}): Promise<void> {
  const step = "start miniupnpd"
  if (state.gateway.process !== null && isAlive(state.gateway.process)) {
    throw new LabStepError(step, `miniupnpd already runs (pid ${state.gateway.process.pid})`, "miniupnpd")
  }
  fs.writeFileSync(state.gateway.confPath, miniupnpdConf(state))
  fs.rmSync(state.gateway.pidFile, { force: true })
  const started = Date.now()
  const r = await run(["ip", "netns", "exec", state.namespaces.gw, state.gateway.binary, "-f", state.gateway.confPath, "-P", state.gateway.pidFile], { timeoutMs: 10_000 })
  if (r.code !== 0) {
    throw new LabStepError(step, `miniupnpd exited with ${r.code}: ${r.stderr.trim()}`, "miniupnpd", await miniupnpdDiagnostics(state))
  }
  // It forks; the daemon's PID arrives in the pid file.
  let pid: number | undefined
  while (Date.now() - started < 5000) {
    const text = fs.existsSync(state.gateway.pidFile) ? fs.readFileSync(state.gateway.pidFile, "utf8").trim() : ""
    if (/^\d+$/.test(text)) {
      pid = Number(text)
      break
    }
    await delay(20)
  }
  const record = pid === undefined ? undefined : recordProcess(pid, "miniupnpd", null)
  if (record === undefined) {
    throw new LabStepError(step, "miniupnpd did not write its pid file or exited at once", "miniupnpd", await miniupnpdDiagnostics(state))
  }
  state.gateway.process = record
  state.gateway.starts += 1
  writeState(state)
  let last = ""
  while (Date.now() - started < 15_000) {
    if (!isAlive(record)) {
      state.gateway.process = null
      writeState(state)
      throw new LabStepError(step, `miniupnpd (pid ${record.pid}) exited after start`, "miniupnpd", await miniupnpdDiagnostics(state))
    }
    const answer = await gatewayAnswers(state)
    if (answer === true) {
      log(`miniupnpd pid ${record.pid} answers (${Date.now() - started} ms)`)
      return
    }
    last = answer
    await delay(50)
  }
  throw new LabStepError(step, `miniupnpd (pid ${record.pid}) did not answer within 15 s: ${last}`, "miniupnpd")
}

/** Stops miniupnpd by its recorded PID and waits until it is gone. */
export async function stopGateway(state: LabStateFile): Promise<void> {
  const record = state.gateway.process
  if (record !== null) await stopProcess(record)
  state.gateway.process = null
  fs.rmSync(state.gateway.pidFile, { force: true })
  writeState(state)
}

/** Empties miniupnpd's three chains, as a router's reboot does. */
export async function flushGatewayChains(state: LabStateFile): Promise<void> {
  const script = MINIUPNPD_CHAINS.map((chain) => `flush chain ${chain}`).join("\n")
  await runOk(["ip", "netns", "exec", state.namespaces.gw, "nft", "-f", "-"], { input: `${script}\n` })
}

/** A router reboot: stop miniupnpd, flush its chains, start it again (optionally with new settings). */
export async function rebootGateway(
  state: LabStateFile,
  settings: Partial<GatewaySettings> = {},
  options: { flush?: boolean } = {}
): Promise<void> {
  await stopGateway(state)
  if (options.flush !== false) await flushGatewayChains(state)
  state.gateway.settings = { ...state.gateway.settings, ...definedOnly(settings) }
  writeState(state)
  await startGateway(state)
}

function definedOnly(settings: Partial<GatewaySettings>): Partial<GatewaySettings> {
  const out: { secureMode?: boolean; enableUpnp?: boolean; enableNatpmp?: boolean; enableIpv6?: boolean } = {}
  if (settings.enableIpv6 !== undefined) out.enableIpv6 = settings.enableIpv6
  if (settings.secureMode !== undefined) out.secureMode = settings.secureMode
  if (settings.enableUpnp !== undefined) out.enableUpnp = settings.enableUpnp
  if (settings.enableNatpmp !== undefined) out.enableNatpmp = settings.enableNatpmp
  return out
}

function parseCidr(cidr: string): { ip: string; prefix: number; ipNum: number } {
  const match = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(cidr)
  if (match === null) throw new Error(`not an IPv4 CIDR: ${cidr}`)
  const octets = match.slice(1, 5).map(Number)
  const prefix = Number(match[5])
  if (octets.some((o) => o > 255) || prefix > 32) throw new Error(`not an IPv4 CIDR: ${cidr}`)
  const ipNum = octets.reduce((acc, o) => acc * 256 + o, 0)
  return { ip: octets.join("."), prefix, ipNum }
}

function sameSubnet(a: string, b: string): boolean {
  const x = parseCidr(a)
  const y = parseCidr(b)
  if (x.prefix !== y.prefix) return false
  const size = 2 ** (32 - x.prefix)
  return Math.floor(x.ipNum / size) === Math.floor(y.ipNum / size)
}

/**
 * Replaces the address on the gateway's WAN veth (the ISP renumbers, or a private address to
 * simulate double NAT), keeping the `wan` client able to reach it: when the new address is
 * outside the client's subnet, on-link host routes are added on both sides.
 * miniupnpd needs no restart: it reads the address at each request. `afterRemoval` runs between
 * the old address going and the new one coming: miniupnpd never sends a change made while its
 * NOTIFY of the previous one is still in flight, so a test of eventing waits there for it.
 */
export async function setGatewayWanAddress(
  state: LabStateFile,
  cidr: string,
  options: { readonly afterRemoval?: () => Promise<void> } = {}
): Promise<void> {
  parseCidr(cidr) // a bad CIDR is refused before the old address goes
  const gw = state.namespaces.gw
  // IPv4 only: the WAN's IPv6 address and the pinholes that use it stay as they are.
  await runOk(["ip", "-n", gw, "-4", "addr", "flush", "dev", IFACES.gatewayWan])
  try {
    await options.afterRemoval?.()
  } finally {
    // A failed wait must not leave the router without an address for every later test.
    await putWanAddress(state, cidr)
  }
}

/** Gives the gateway's WAN `cidr`, with the routes both sides need, and records it. */
async function putWanAddress(state: LabStateFile, cidr: string): Promise<void> {
  const next = parseCidr(cidr)
  const gw = state.namespaces.gw
  const wan = state.namespaces.wan
  const clientIp = state.wanClientIp
  await runOk(["ip", "-n", gw, "addr", "add", cidr, "dev", IFACES.gatewayWan])
  await runOk(["ip", "-n", gw, "route", "replace", `${clientIp}/32`, "dev", IFACES.gatewayWan])
  await runOk(["ip", "-n", gw, "route", "replace", "default", "via", clientIp, "dev", IFACES.gatewayWan, "onlink"])
  if (state.gateway.wanHostRoute !== null) {
    await run(["ip", "-n", wan, "route", "del", state.gateway.wanHostRoute, "dev", IFACES.wanClient])
    state.gateway.wanHostRoute = null
  }
  if (!sameSubnet(cidr, state.wanClientCidr)) {
    const route = `${next.ip}/32`
    await runOk(["ip", "-n", wan, "route", "replace", route, "dev", IFACES.wanClient])
    state.gateway.wanHostRoute = route
  }
  state.gatewayWanIp = next.ip
  state.gatewayWanCidr = cidr
  writeState(state)
}

// ---------------------------------------------------------------------------------------------
// Control plane: etcd + kube-apiserver in the node namespace

async function makePki(state: LabStateFile, cp: ControlPlaneState): Promise<void> {
  const pki = path.dirname(cp.caFile)
  fs.mkdirSync(pki, { recursive: true })
  const file = (name: string) => path.join(pki, name)
  const ossl = (args: Array<string>) => runOk(["openssl", ...args])
  await ossl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", file("ca.key")])
  await ossl([
    "req", "-x509", "-new", "-key", file("ca.key"), "-subj", "/CN=edge-ccm-lab-ca", "-days", "30", "-out", cp.caFile,
    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"
  ])
  await ossl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", file("apiserver.key")])
  await ossl(["req", "-new", "-key", file("apiserver.key"), "-subj", "/CN=kube-apiserver", "-out", file("apiserver.csr")])
  const sans = [
    ...state.nodes.map((n) => `IP:${n.ip}`),
    "IP:127.0.0.1",
    "IP:10.96.0.1",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
    "DNS:localhost"
  ]
  fs.writeFileSync(file("apiserver.ext"), [
    "basicConstraints=CA:FALSE",
    "keyUsage=critical,digitalSignature,keyEncipherment",
    "extendedKeyUsage=serverAuth",
    `subjectAltName=${sans.join(",")}`,
    ""
  ].join("\n"))
  await ossl([
    "x509", "-req", "-in", file("apiserver.csr"), "-CA", cp.caFile, "-CAkey", file("ca.key"),
    "-set_serial", `0x${randomBytes(8).toString("hex")}`, "-days", "30", "-extfile", file("apiserver.ext"),
    "-out", file("apiserver.crt")
  ])
  if (state.realNode !== null) {
    // The apiserver's client certificate toward kubelets (logs, exec): kubelet trusts the lab CA.
    await ossl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", file("kubelet-client.key")])
    await ossl(["req", "-new", "-key", file("kubelet-client.key"), "-subj", "/O=system:masters/CN=kube-apiserver-kubelet-client", "-out", file("kubelet-client.csr")])
    fs.writeFileSync(file("kubelet-client.ext"), "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n")
    await ossl([
      "x509", "-req", "-in", file("kubelet-client.csr"), "-CA", cp.caFile, "-CAkey", file("ca.key"),
      "-set_serial", `0x${randomBytes(8).toString("hex")}`, "-days", "30", "-extfile", file("kubelet-client.ext"),
      "-out", file("kubelet-client.crt")
    ])
  }
  await ossl(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", cp.serviceAccountKeyFile])
  fs.writeFileSync(cp.tokenFile, `${cp.adminToken},admin,admin,"system:masters"\n`, { mode: 0o600 })
}

/** A kubeconfig for `token` against the lab's apiserver, written to `file`. */
export function writeKubeconfig(cp: ControlPlaneState, token: string, file: string, user = "admin"): string {
  const text = [
    "apiVersion: v1",
    "kind: Config",
    "clusters:",
    "- name: edge-ccm-lab",
    "  cluster:",
    `    server: ${cp.apiserverUrl}`,
    `    certificate-authority: ${cp.caFile}`,
    "users:",
    `- name: ${JSON.stringify(user)}`,
    "  user:",
    `    token: ${JSON.stringify(token)}`,
    "contexts:",
    "- name: edge-ccm-lab",
    "  context:",
    "    cluster: edge-ccm-lab",
    `    user: ${JSON.stringify(user)}`,
    "    namespace: default",
    "current-context: edge-ccm-lab",
    ""
  ].join("\n")
  fs.mkdirSync(path.dirname(file), { recursive: true })
  fs.writeFileSync(file, text, { mode: 0o600 })
  return file
}

/** kubectl with the admin kubeconfig, run in the node namespace. */
export function kubectlIn(state: LabStateFile, args: ReadonlyArray<string>, options: { input?: string; kubeconfig?: string; timeoutMs?: number } = {}) {
  const cp = requireControlPlane(state)
  return run(
    ["ip", "netns", "exec", state.namespaces.lan, cp.kubectlPath, "--kubeconfig", options.kubeconfig ?? cp.kubeconfig, ...args],
    { input: options.input, timeoutMs: options.timeoutMs ?? 60_000 }
  )
}

/**
 * Compacts etcd's history up to its current revision (through etcd's HTTP gateway, from the node
 * namespace), so that a watch or list from an older resourceVersion gets 410 Gone once the
 * apiserver's watch cache no longer holds it. Returns the revision compacted at.
 */
export async function compactEtcd(state: LabStateFile): Promise<number> {
  const cp = requireControlPlane(state)
  const post = async (endpoint: string, body: string) => {
    const out = await runOk([
      "ip", "netns", "exec", state.namespaces.lan, "curl", "-sS", "-m", "5", "-X", "POST", "--data-binary", body, `${cp.etcdUrl}${endpoint}`
    ])
    return JSON.parse(out) as { header?: { revision?: string } }
  }
  const range = await post("/v3/kv/range", JSON.stringify({ key: Buffer.from("/registry/").toString("base64"), limit: 1 }))
  const revision = Number(range.header?.revision)
  if (!Number.isInteger(revision) || revision <= 0) throw new Error(`etcd gave no revision: ${JSON.stringify(range)}`)
  await post("/v3/kv/compaction", JSON.stringify({ revision: String(revision), physical: true }))
  return revision
}

/**
 * What real-node.ts sees of the lab: paths, nodes, and its own part of the state file. The
 * paths are where the control plane puts them, so a start that failed before the control
 * plane still tears its real node (the lock) down.
 */
function realNodeView(state: LabStateFile, binDir: string): RealNodeLab {
  return {
    name: state.name,
    labDir: state.labDir,
    logDir: state.logDir,
    nodes: state.nodes,
    kubeconfig: path.join(state.labDir, "kubeconfig"),
    kubectlPath: path.join(binDir, "kubectl"),
    caFile: path.join(state.labDir, "pki", "ca.crt"),
    serviceAccountKeyFile: path.join(state.labDir, "pki", "sa.key"),
    get realNode() {
      return state.realNode
    },
    set realNode(value) {
      state.realNode = value
    },
    save: () => writeState(state)
  }
}

export function requireControlPlane(state: LabStateFile): ControlPlaneState {
  if (state.controlPlane === null) {
    throw new Error(`lab "${state.name}" runs without the control plane (started with --no-control-plane)`)
  }
  return state.controlPlane
}

async function startEtcd(state: LabStateFile, cp: ControlPlaneState, signal: AbortSignal | undefined): Promise<void> {
  const step = "start etcd"
  const log = path.join(state.logDir, "etcd.log")
  fs.mkdirSync(cp.etcdDataDir, { recursive: true, mode: 0o700 })
  const peer = `http://127.0.0.1:${LAB.etcdPeerPort}`
  cp.etcd = startDaemon([
    "ip", "netns", "exec", state.namespaces.lan, cp.etcdPath,
    "--name", "lab",
    "--data-dir", cp.etcdDataDir,
    "--listen-client-urls", cp.etcdUrl,
    "--advertise-client-urls", cp.etcdUrl,
    "--listen-peer-urls", peer,
    "--initial-advertise-peer-urls", peer,
    "--initial-cluster", `lab=${peer}`,
    "--unsafe-no-fsync"
  ], log, "etcd")
  writeState(state)
  const started = Date.now()
  let last = ""
  while (Date.now() - started < 30_000) {
    signal?.throwIfAborted()
    if (!isAlive(cp.etcd)) throw new LabStepError(step, `etcd (pid ${cp.etcd.pid}) exited`, "etcd", tailFile(log))
    const r = await run(["ip", "netns", "exec", state.namespaces.lan, "curl", "-sS", "-m", "2", `${cp.etcdUrl}/health`])
    if (r.code === 0 && r.stdout.includes('"health":"true"')) return
    last = r.code === 0 ? r.stdout.trim() : r.stderr.trim()
    await delay(100)
  }
  throw new LabStepError(step, `etcd not healthy within 30 s: ${last}`, "etcd", tailFile(log))
}

/**
 * Metadata (who, verb, resource, name, response code; no bodies) for the controller's
 * ServiceAccounts only: the tests measure which calls the controller makes, and nothing else
 * costs a line. One line per request (RequestReceived omitted), written before the response.
 */
function writeAuditPolicy(file: string): void {
  fs.writeFileSync(file, [
    "apiVersion: audit.k8s.io/v1",
    "kind: Policy",
    "omitStages: [RequestReceived]",
    "rules:",
    "  - level: Metadata",
    `    userGroups: [${JSON.stringify(LAB.auditedGroup)}]`,
    "  - level: None",
    ""
  ].join("\n"))
}

async function startApiserver(
  state: LabStateFile,
  cp: ControlPlaneState,
  extraArgs: ReadonlyArray<string>,
  log: Logger,
  signal: AbortSignal | undefined
): Promise<void> {
  const step = "start kube-apiserver"
  const logFile = path.join(state.logDir, "kube-apiserver.log")
  const pki = path.dirname(cp.caFile)
  writeAuditPolicy(cp.auditPolicyFile)
  cp.apiserver = startDaemon([
    "ip", "netns", "exec", state.namespaces.lan, cp.kubeApiserverPath,
    `--etcd-servers=${cp.etcdUrl}`,
    `--bind-address=${state.nodeIp}`,
    `--advertise-address=${state.nodeIp}`,
    `--secure-port=${LAB.apiserverPort}`,
    `--cert-dir=${pki}`,
    `--tls-cert-file=${path.join(pki, "apiserver.crt")}`,
    `--tls-private-key-file=${path.join(pki, "apiserver.key")}`,
    `--client-ca-file=${cp.caFile}`,
    `--token-auth-file=${cp.tokenFile}`,
    "--authorization-mode=RBAC",
    `--service-account-issuer=${LAB.serviceAccountIssuer}`,
    `--service-account-key-file=${cp.serviceAccountKeyFile}`,
    `--service-account-signing-key-file=${cp.serviceAccountKeyFile}`,
    `--service-cluster-ip-range=${LAB.serviceCidr}`,
    `--service-node-port-range=${LAB.nodePortRange}`,
    // Without a real node nothing makes ServiceAccounts or answers for pods: no admission of
    // them, no endpoints for the `kubernetes` Service. A real node needs both, and logs.
    ...(state.realNode === null ? ["--disable-admission-plugins=ServiceAccount", "--endpoint-reconciler-type=none"] : realNodeApiserverArgs(pki)),
    `--audit-policy-file=${cp.auditPolicyFile}`,
    `--audit-log-path=${cp.auditLog}`,
    ...extraArgs
  ], logFile, "kube-apiserver")
  writeState(state)
  const started = Date.now()
  let lastReport = started
  let last = "no answer yet"
  while (true) {
    signal?.throwIfAborted()
    if (!isAlive(cp.apiserver)) {
      throw new LabStepError(step, `kube-apiserver (pid ${cp.apiserver.pid}) exited`, "kube-apiserver", tailFile(logFile))
    }
    const r = await run([
      "ip", "netns", "exec", state.namespaces.lan, "curl", "-sS", "-m", "3", "--cacert", cp.caFile,
      "-H", `Authorization: Bearer ${cp.adminToken}`, "-o", "-", "-w", "\n%{http_code}", `${cp.apiserverUrl}/readyz?verbose`
    ])
    const cut = r.stdout.lastIndexOf("\n")
    const status = Number(r.stdout.slice(cut + 1)) || 0
    if (status === 200) return
    if (r.code !== 0) last = r.stderr.trim().split("\n").at(-1) ?? `curl exit ${r.code}`
    else {
      const failing = r.stdout.split("\n").filter((l) => l.startsWith("[-]")).map((l) => l.slice(3).split(" ")[0])
      last = failing.length > 0 ? `HTTP ${status}, not ready: ${failing.join(", ")}` : `HTTP ${status}`
    }
    const elapsed = Date.now() - started
    if (elapsed > 90_000) {
      throw new LabStepError(step, `/readyz not OK within 90 s (last: ${last})`, "kube-apiserver", tailFile(logFile))
    }
    if (Date.now() - lastReport >= 5000) {
      log(`waiting for kube-apiserver /readyz (${Math.round(elapsed / 1000)} s): ${last}`)
      lastReport = Date.now()
    }
    await delay(200)
  }
}

async function createNodes(state: LabStateFile, signal: AbortSignal | undefined): Promise<void> {
  const step = "create Node objects"
  const apiLog = path.join(state.logDir, "kube-apiserver.log")
  // The apiserver's own bootstrap creates the `default` namespace shortly after /readyz.
  const started = Date.now()
  while (true) {
    signal?.throwIfAborted()
    const r = await kubectlIn(state, ["get", "namespace", "default", "-o", "name"])
    if (r.code === 0) break
    if (Date.now() - started > 30_000) throw new LabStepError(step, `namespace default missing: ${r.stderr.trim()}`, "kube-apiserver", tailFile(apiLog))
    await delay(100)
  }
  const now = new Date().toISOString().replace(/\.\d+Z$/, "Z")
  // A real node's kubelet registers its Node itself.
  for (const node of state.realNode === null ? state.nodes : []) {
    const manifest = {
      apiVersion: "v1",
      kind: "Node",
      metadata: { name: node.name, labels: { "kubernetes.io/hostname": node.name, "kubernetes.io/os": "linux" } }
    }
    const created = await kubectlIn(state, ["create", "-f", "-"], { input: JSON.stringify(manifest) })
    if (created.code !== 0) throw new LabStepError(step, `kubectl create node ${node.name}: ${created.stderr.trim()}`, "kube-apiserver", tailFile(apiLog))
    const status = {
      status: {
        addresses: [{ type: "InternalIP", address: node.ip }, { type: "Hostname", address: node.name }],
        conditions: [{
          type: "Ready",
          status: "True",
          reason: "KubeletReady",
          message: "lab node (no kubelet runs in the lab)",
          lastHeartbeatTime: now,
          lastTransitionTime: now
        }]
      }
    }
    const patched = await kubectlIn(state, ["patch", "node", node.name, "--subresource=status", "--type=merge", "-p", JSON.stringify(status)])
    if (patched.code !== 0) throw new LabStepError(step, `status patch of node ${node.name}: ${patched.stderr.trim()}`, "kube-apiserver", tailFile(apiLog))
  }
  // The controller's own namespace, as `kubectl apply -k manifests/` leaves it: its leader Lease
  // and the Secret with the key that signs the Services' records live there.
  const namespace = await kubectlIn(state, ["apply", "-f", path.join(repoRoot, "manifests/namespace.yaml")])
  if (namespace.code !== 0) throw new LabStepError(step, `namespace edge-ccm-system: ${namespace.stderr.trim()}`, "kube-apiserver", tailFile(apiLog))
}

// ---------------------------------------------------------------------------------------------
// Up

/** A lab's state, or undefined when it is gone (a lab going down removes it at any moment). */
function stateIfThere(statePath: string): LabStateFile | undefined {
  try {
    return readState(statePath)
  } catch {
    return undefined
  }
}

/** The real-node lock, waited for (polled every 2 s, a progress line every 30 s) within `waitRealNodeSeconds`. */
async function takeRealNodeLock(name: string, statePath: string, options: UpOptions, log: Logger): Promise<string> {
  const deadline = performance.now() + (options.waitRealNodeSeconds ?? 0) * 1000
  let nextNote = 0
  const takenDown = new Set<string>()
  for (;;) {
    try {
      return acquireRealNodeLock(name, statePath, (other) => {
        const holder = stateIfThere(other)
        return holder !== undefined && isInUse(holder)
      }, log)
    } catch (error) {
      const now = performance.now()
      if (!(error instanceof RealNodeLockHeld)) throw error
      const holder = stateIfThere(error.statePath)
      // Once per lab: a teardown that could not end it leaves the lock to the wait below.
      if (holder?.owner != null && !isAlive(holder.owner) && !takenDown.has(holder.statePath)) {
        takenDown.add(holder.statePath)
        log(`lab "${holder.name}" was left up by a run that is gone (pid ${holder.owner.pid}): taking it down`)
        await teardown(holder, { log })
        continue
      }
      if (now >= deadline || options.signal?.aborted) throw error
      if (now >= nextNote) {
        log(`lab "${error.holder}" runs a real node: waiting for it to go down (at most ${Math.ceil((deadline - now) / 1000)} s more)`)
        nextNote = now + 30_000
      }
      await new Promise((resolve) => setTimeout(resolve, 2_000))
    }
  }
}

export interface UpOptions {
  readonly name: string
  /** Start etcd + kube-apiserver too (default true). */
  readonly controlPlane?: boolean
  /** 1 (lan) or 2 (lan + lan2). */
  readonly nodes?: 1 | 2
  readonly gateway?: Partial<GatewaySettings>
  /** Build the control-plane binaries when the cache is empty (default true). */
  readonly build?: boolean
  /** Extra kube-apiserver flags (default: $EDGE_CCM_LAB_APISERVER_ARGS, split on spaces). */
  readonly apiserverArgs?: ReadonlyArray<string>
  /**
   * containerd, kubelet and kube-proxy on every node, kube-scheduler and kube-controller-manager,
   * with the images built and imported (one such lab at a time on a machine).
   */
  readonly realNode?: boolean
  /** The images' architecture (default amd64). */
  readonly arch?: Arch
  /**
   * While another lab that is up holds the real node, wait up to this many seconds for it
   * (default 0: fail at once, naming it). Two test runs on one machine take turns this way.
   */
  readonly waitRealNodeSeconds?: number
  /** The process whose exit ends this lab (its runner): a lab it left up is taken down by the next. */
  readonly ownerPid?: number | undefined
  /** Keep `.lab/<name>/logs` when a failed start tears down. */
  readonly keepLogs?: boolean
  /** Progress messages (default: stderr). */
  readonly log?: Logger
  /** Where a failed start is reported: step, log tail, teardown (default: stderr). */
  readonly failureLog?: Logger
  readonly signal?: AbortSignal
}

function envArgs(name: string): Array<string> {
  return (process.env[name] ?? "").split(" ").filter((a) => a !== "")
}

function acquire(name: string, log: Logger): string {
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]{0,40}$/.test(name)) throw new Error(`invalid lab name "${name}"`)
  const labDir = path.join(labsRoot, name)
  fs.mkdirSync(labsRoot, { recursive: true })
  const lock = path.join(labDir, "lock")
  fs.mkdirSync(labDir, { recursive: true })
  try {
    fs.writeFileSync(lock, `${process.pid}\n`, { flag: "wx" })
    return labDir
  } catch {
    // Held: in use, or left over from a lab that died.
  }
  const statePath = path.join(labDir, "state.json")
  if (fs.existsSync(statePath)) {
    const stale = readState(statePath)
    if (isInUse(stale)) {
      throw new Error(`lab "${name}" is already up (namespaces ${stale.prefix}*); run \`npm run lab -- down --name ${name}\` first`)
    }
  } else {
    const owner = Number(fs.readFileSync(lock, "utf8").trim())
    if (Number.isInteger(owner) && owner > 0 && fs.existsSync(`/proc/${owner}`)) {
      throw new Error(`lab "${name}" is being started by pid ${owner}`)
    }
  }
  log(`lab "${name}" was left over by an earlier run and holds nothing: reusing its name`)
  fs.rmSync(labDir, { recursive: true, force: true })
  fs.mkdirSync(labDir, { recursive: true })
  fs.writeFileSync(lock, `${process.pid}\n`, { flag: "wx" })
  return labDir
}

function initialState(name: string, labDir: string, options: UpOptions, miniupnpd: string): LabStateFile {
  const prefix = `eccm-${process.pid}-`
  const nodeCount = options.nodes ?? 1
  const namespaces: LabNamespaces = {
    wan: `${prefix}wan`,
    gw: `${prefix}gw`,
    lan: `${prefix}lan`,
    peer: `${prefix}peer`,
    lan2: nodeCount >= 2 ? `${prefix}lan2` : null
  }
  const nodes: Array<LabNode> = [{ name: "node-1", namespace: namespaces.lan, ip: LAB.nodeIps[0], ip6: LAB.nodeIps6[0], bridgePort: "lan0" }]
  if (namespaces.lan2 !== null) {
    nodes.push({ name: "node-2", namespace: namespaces.lan2, ip: LAB.nodeIps[1], ip6: LAB.nodeIps6[1], bridgePort: "lan1" })
  }
  const gatewayLanIp = LAB.gatewayLanCidr.split("/")[0] ?? ""
  const gatewayLanIp6 = LAB.gatewayLanCidr6.split("/")[0] ?? ""
  const logDir = path.join(labDir, "logs")
  return {
    version: 1,
    name,
    labDir,
    statePath: path.join(labDir, "state.json"),
    logDir,
    prefix,
    createdAt: new Date().toISOString(),
    status: "starting",
    namespaces,
    interfaces: IFACES,
    wanClientIp: LAB.wanClientCidr.split("/")[0] ?? "",
    wanClientCidr: LAB.wanClientCidr,
    gatewayWanIp: LAB.gatewayWanCidr.split("/")[0] ?? "",
    gatewayWanCidr: LAB.gatewayWanCidr,
    gatewayLanIp,
    gatewayLanCidr: LAB.gatewayLanCidr,
    nodeIp: LAB.nodeIps[0],
    peerIp: LAB.peerIp,
    wanClientIp6: LAB.wanClientCidr6.split("/")[0] ?? "",
    gatewayWanIp6: LAB.gatewayWanCidr6.split("/")[0] ?? "",
    gatewayLanIp6,
    nodeIp6: LAB.nodeIps6[0],
    peerIp6: LAB.peerIp6,
    nodes,
    rootDescUrl: `http://${gatewayLanIp}:${LAB.upnpPort}/rootDesc.xml`,
    controlUrl: `http://${gatewayLanIp}:${LAB.upnpPort}/ctl/IPConn`,
    rootDescUrl6: `http://[${gatewayLanIp6}]:${LAB.upnpPort}/rootDesc.xml`,
    firewallControlUrl: `http://[${gatewayLanIp6}]:${LAB.upnpPort}/ctl/IP6FCtl`,
    gateway: {
      binary: miniupnpd,
      confPath: path.join(labDir, "miniupnpd.conf"),
      pidFile: path.join(labDir, "miniupnpd.pid"),
      settings: {
        secureMode: options.gateway?.secureMode ?? false,
        enableUpnp: options.gateway?.enableUpnp ?? true,
        enableNatpmp: options.gateway?.enableNatpmp ?? true
      },
      process: null,
      starts: 0,
      wanHostRoute: null
    },
    controlPlane: null,
    realNode: null,
    owner: options.ownerPid === undefined ? null : recordProcess(options.ownerPid, "lab owner", null) ?? null,
    timings: {}
  }
}

async function createTopology(state: LabStateFile): Promise<void> {
  const ns = state.namespaces
  for (const name of namespaceList(state)) {
    if (namespaceExists(name)) throw new Error(`namespace ${name} already exists`)
  }
  // gw first: deleting it later removes every veth.
  for (const name of [ns.gw, ns.wan, ns.lan, ns.peer, ns.lan2]) {
    if (name === null) continue
    await runOk(["ip", "netns", "add", name])
    await runOk(["ip", "-n", name, "link", "set", "lo", "up"])
  }
  const ipn = (name: string, ...args: Array<string>) => runOk(["ip", "-n", name, ...args])
  // IPv6 addresses are added with `nodad`: usable at once, no duplicate detection to wait for.
  const addIpv6 = (name: string, cidr: string, dev: string) => ipn(name, "addr", "add", cidr, "dev", dev, "nodad")
  // WAN side.
  await ipn(ns.gw, "link", "add", IFACES.gatewayWan, "type", "veth", "peer", "name", IFACES.wanClient, "netns", ns.wan)
  await ipn(ns.wan, "addr", "add", state.wanClientCidr, "dev", IFACES.wanClient)
  await addIpv6(ns.wan, LAB.wanClientCidr6, IFACES.wanClient)
  await ipn(ns.wan, "link", "set", IFACES.wanClient, "up")
  await ipn(ns.gw, "addr", "add", state.gatewayWanCidr, "dev", IFACES.gatewayWan)
  await addIpv6(ns.gw, LAB.gatewayWanCidr6, IFACES.gatewayWan)
  await ipn(ns.gw, "link", "set", IFACES.gatewayWan, "up")
  await ipn(ns.gw, "route", "add", "default", "via", state.wanClientIp, "dev", IFACES.gatewayWan)
  // The Internet host reaches the LAN /64 through the gateway (its ISP's route, in effect).
  await ipn(ns.wan, "-6", "route", "add", "default", "via", state.gatewayWanIp6, "dev", IFACES.wanClient)
  // LAN side: a bridge with the gateway's LAN addresses; every LAN host is a port of it.
  await ipn(ns.gw, "link", "add", IFACES.gatewayLan, "type", "bridge", "mcast_snooping", "0")
  await ipn(ns.gw, "addr", "add", state.gatewayLanCidr, "dev", IFACES.gatewayLan)
  await addIpv6(ns.gw, LAB.gatewayLanCidr6, IFACES.gatewayLan)
  await ipn(ns.gw, "link", "set", IFACES.gatewayLan, "up")
  const hosts = [
    ...state.nodes.map((n) => ({ namespace: n.namespace, ip: n.ip, ip6: n.ip6, port: n.bridgePort })),
    { namespace: ns.peer, ip: state.peerIp, ip6: state.peerIp6, port: "peer0" }
  ]
  for (const host of hosts) {
    await ipn(ns.gw, "link", "add", host.port, "type", "veth", "peer", "name", IFACES.node, "netns", host.namespace)
    await ipn(ns.gw, "link", "set", host.port, "master", IFACES.gatewayLan)
    await ipn(ns.gw, "link", "set", host.port, "up")
    await ipn(host.namespace, "addr", "add", `${host.ip}/${LAB.lanPrefix}`, "dev", IFACES.node)
    await addIpv6(host.namespace, `${host.ip6}/${LAB.lanPrefix6}`, IFACES.node)
    await ipn(host.namespace, "link", "set", IFACES.node, "up")
    await ipn(host.namespace, "route", "add", "default", "via", state.gatewayLanIp)
    await ipn(host.namespace, "-6", "route", "add", "default", "via", state.gatewayLanIp6, "dev", IFACES.node)
    await ipn(host.namespace, "route", "add", "239.0.0.0/8", "dev", IFACES.node)
  }
  await runOk(["ip", "netns", "exec", ns.gw, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"])
  await runOk(["ip", "netns", "exec", ns.gw, "sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=1"])
}

async function timed<T>(state: LabStateFile, key: string, fn: () => Promise<T>): Promise<T> {
  const started = performance.now()
  const result = await fn()
  state.timings[key] = Math.round(performance.now() - started)
  return result
}

/**
 * Brings a lab up. On any failure it reports the failed step (a LabStepError carrying the tail
 * of the component's log), tears down whatever it had started, and rethrows.
 */
export async function up(options: UpOptions): Promise<LabStateFile> {
  const log = options.log ?? defaultLogger
  const signal = options.signal
  const wantControlPlane = options.controlPlane ?? true
  const miniupnpd = await which("miniupnpd")
  const missing = (
    await Promise.all(["ip", "nft", "curl", "openssl", "upnpc", "natpmpc", "ss"].map(async (t) => ((await which(t)) === undefined ? t : null)))
  ).filter((t): t is string => t !== null)
  if (miniupnpd === undefined) missing.unshift("miniupnpd")
  if (missing.length > 0) {
    throw new LabStepError("check host commands", `missing ${missing.join(", ")}: run \`bash scripts/lab/install-deps.sh\``)
  }
  const realNode = options.realNode === true
  if (realNode && !wantControlPlane) throw new LabStepError("check options", "a real node needs the control plane")
  let binDir = ""
  if (wantControlPlane) {
    binDir = await controlPlaneBinDir()
    if (!controlPlaneBinariesPresent(binDir, realNode)) {
      const buildFlags = realNode ? ["--real-node"] : []
      if (options.build === false) {
        throw new LabStepError("check control-plane binaries", `none in ${binDir}: run \`bash scripts/lab/build-control-plane.sh ${buildFlags.join(" ")}\``)
      }
      log(`Kubernetes binaries missing: building them (${realNode ? "about 25" : "about 15"} minutes the first time)`)
      const built = spawnSync("bash", [path.join(repoRoot, "scripts/lab/build-control-plane.sh"), ...buildFlags], { stdio: ["ignore", "ignore", "inherit"] })
      if (built.status !== 0 || !controlPlaneBinariesPresent(binDir, realNode)) {
        throw new LabStepError("build control plane", "scripts/lab/build-control-plane.sh failed (its output is above)")
      }
    }
  }
  let images: ImageSet | undefined
  const imagesStarted = performance.now()
  if (realNode) {
    const missing = (await Promise.all(["containerd", "ctr", "runc", "nsenter", "podman", "mmdebstrap"].map(async (t) => ((await which(t)) === undefined ? t : null))))
      .filter((t): t is string => t !== null)
    if (missing.length > 0 || !fs.existsSync("/usr/lib/cni/bridge")) {
      throw new LabStepError("check host commands", `missing ${[...missing, ...(fs.existsSync("/usr/lib/cni/bridge") ? [] : ["the CNI plugins"])].join(", ")}: run \`bash scripts/lab/install-deps.sh --real-node\``)
    }
    try {
      images = await buildImages({ repoRoot, cacheRoot: path.dirname(binDir), arch: options.arch ?? "amd64", kubectl: path.join(binDir, "kubectl"), log })
    } catch (error) {
      throw new LabStepError("build images", (error as Error).message)
    }
  }

  const labDir = acquire(options.name, log)
  const state = initialState(options.name, labDir, options, miniupnpd ?? "miniupnpd")
  fs.mkdirSync(state.logDir, { recursive: true })
  if (images !== undefined) {
    state.timings["images"] = Math.round(performance.now() - imagesStarted)
    try {
      const lock = await takeRealNodeLock(options.name, state.statePath, options, log)
      state.realNode = initialRealNodeState(realNodeView(state, binDir), binDir, lock)
    } catch (error) {
      fs.rmSync(labDir, { recursive: true, force: true })
      throw new LabStepError("take the real-node lock", (error as Error).message)
    }
  }
  writeState(state)
  const started = performance.now()
  let current = "create namespaces"
  try {
    signal?.throwIfAborted()
    log(`namespaces ${state.prefix}{${namespaceList(state).map((n) => n.slice(state.prefix.length)).join(",")}}`)
    await timed(state, "topology", () => createTopology(state))
    current = "load the nftables ruleset in gw"
    signal?.throwIfAborted()
    await timed(state, "nftables", () => runOk(["ip", "netns", "exec", state.namespaces.gw, "nft", "-f", "-"], { input: nftRuleset() }))
    current = "start miniupnpd"
    signal?.throwIfAborted()
    await timed(state, "miniupnpd", () => startGateway(state, log))
    state.timings["gateway"] = Math.round(performance.now() - started)
    writeState(state)

    if (wantControlPlane) {
      const pki = path.join(labDir, "pki")
      const cp: ControlPlaneState = {
        binDir,
        kubectlPath: path.join(binDir, "kubectl"),
        kubeApiserverPath: path.join(binDir, "kube-apiserver"),
        etcdPath: path.join(binDir, "etcd"),
        apiserverUrl: `https://${state.nodeIp}:${LAB.apiserverPort}`,
        etcdUrl: `http://127.0.0.1:${LAB.etcdClientPort}`,
        adminToken: randomBytes(24).toString("hex"),
        caFile: path.join(pki, "ca.crt"),
        kubeconfig: path.join(labDir, "kubeconfig"),
        tokenFile: path.join(pki, "tokens.csv"),
        serviceAccountKeyFile: path.join(pki, "sa.key"),
        etcdDataDir: path.join(labDir, "etcd-data"),
        auditLog: path.join(labDir, "logs", "audit.log"),
        auditPolicyFile: path.join(labDir, "audit-policy.yaml"),
        etcd: null,
        apiserver: null
      }
      state.controlPlane = cp
      writeState(state)
      current = "make the CA, serving certificate, service-account key and admin token"
      signal?.throwIfAborted()
      await timed(state, "pki", () => makePki(state, cp))
      current = "start etcd"
      signal?.throwIfAborted()
      log("starting etcd")
      await timed(state, "etcd", () => startEtcd(state, cp, signal))
      current = "start kube-apiserver"
      signal?.throwIfAborted()
      log("starting kube-apiserver, waiting for /readyz")
      await timed(state, "apiserver", () => startApiserver(state, cp, options.apiserverArgs ?? envArgs("EDGE_CCM_LAB_APISERVER_ARGS"), log, signal))
      current = "write the kubeconfig"
      writeKubeconfig(cp, cp.adminToken, cp.kubeconfig)
      current = "create Node objects"
      await timed(state, "nodes", () => createNodes(state, signal))
      if (images !== undefined) {
        current = "start the real node"
        signal?.throwIfAborted()
        Object.assign(state.timings, await startRealNode(realNodeView(state, binDir), images, log, signal))
      }
    }
    state.timings["total"] = Math.round(performance.now() - started)
    state.status = "up"
    writeState(state)
    return state
  } catch (error) {
    const failure = error instanceof LabStepError
      ? error
      : signal?.aborted === true
      ? new LabStepError(current, "interrupted")
      : new LabStepError(current, error instanceof Error ? error.message : String(error))
    // A failure is always reported, even when progress is silenced.
    const report = options.failureLog ?? defaultLogger
    report(`FAILED: ${failure.message}`)
    if (failure.logTail !== "") {
      report(`--- last lines of the ${failure.component ?? "component"} log ---\n${failure.logTail}\n--- end of log ---`)
    }
    report("tearing down what was started")
    const problems = await teardown(state, { keepLogs: options.keepLogs ?? false, log: report })
    for (const p of problems) report(`teardown: ${p}`)
    failure.reported = true
    throw failure
  }
}

// ---------------------------------------------------------------------------------------------
// Down

/**
 * Stops every recorded process by PID (and any other process still inside the lab's
 * namespaces), deletes the namespaces and removes the lab directory. Returns problems it could
 * not fix (empty when all is clean).
 */
export async function teardown(state: LabStateFile, options: { keepLogs?: boolean; log?: Logger } = {}): Promise<Array<string>> {
  const log = options.log ?? defaultLogger
  const problems: Array<string> = []
  state.status = "stopping"
  writeState(state)
  if (state.realNode !== null) {
    try {
      problems.push(...await stopRealNode(realNodeView(state, state.realNode.binDir), log))
    } catch (error) {
      problems.push(`real node: ${error instanceof Error ? error.message : String(error)}`)
    }
  }
  const records: Array<ProcessRecord> = []
  if (state.controlPlane?.apiserver) records.push(state.controlPlane.apiserver)
  if (state.controlPlane?.etcd) records.push(state.controlPlane.etcd)
  if (state.gateway.process) records.push(state.gateway.process)
  for (const record of records) {
    try {
      await stopProcess(record)
    } catch (error) {
      problems.push(error instanceof Error ? error.message : String(error))
    }
  }
  // Anything else still running inside the lab's namespaces (a controller a test left, a
  // miniupnpd started by a reboot whose PID was not yet recorded) is stopped by its PID too.
  const names = namespaceList(state)
  for (const stray of processesInNamespaces(names)) {
    log(`stopping pid ${stray.pid} left in ${stray.namespace}: ${stray.command.slice(0, 120)}`)
    const record = recordProcess(stray.pid, stray.command, null)
    if (record === undefined) continue
    try {
      await stopProcess(record, 5000)
    } catch (error) {
      problems.push(error instanceof Error ? error.message : String(error))
    }
  }
  for (const name of names) {
    if (!namespaceExists(name)) continue
    const r = await run(["ip", "netns", "del", name])
    if (r.code !== 0) problems.push(`ip netns del ${name}: ${r.stderr.trim()}`)
  }
  if (options.keepLogs === true) {
    for (const entry of fs.existsSync(state.labDir) ? fs.readdirSync(state.labDir) : []) {
      if (entry !== "logs") fs.rmSync(path.join(state.labDir, entry), { recursive: true, force: true })
    }
    log(`logs kept in ${state.logDir}`)
  } else {
    fs.rmSync(state.labDir, { recursive: true, force: true })
  }
  return problems
}

export async function down(name: string, options: { keepLogs?: boolean; log?: Logger } = {}): Promise<Array<string>> {
  const labDir = path.join(labsRoot, name)
  const statePath = path.join(labDir, "state.json")
  if (!fs.existsSync(statePath)) {
    if (fs.existsSync(labDir) && !fs.existsSync(path.join(labDir, "logs"))) fs.rmSync(labDir, { recursive: true, force: true })
    return []
  }
  return teardown(readState(statePath), options)
}

/** Names of labs with a state file under `.lab/`. */
export function listLabs(): Array<string> {
  if (!fs.existsSync(labsRoot)) return []
  return fs.readdirSync(labsRoot).filter((n) => fs.existsSync(path.join(labsRoot, n, "state.json"))).sort()
}

/** `eccm-*` namespaces on the machine that no lab under `.lab/` accounts for. */
export function unknownLabNamespaces(): Array<string> {
  const known = new Set(listLabs().flatMap((n) => namespaceList(readState(statePathFor(n)))))
  const all = fs.existsSync("/run/netns") ? fs.readdirSync("/run/netns") : []
  return all.filter((n) => n.startsWith("eccm-") && !known.has(n)).sort()
}

export interface LabStatus {
  readonly name: string
  readonly status: string
  readonly statePath: string
  readonly namespaces: Record<string, boolean>
  readonly processes: Record<string, { pid: number; alive: boolean } | null>
  readonly gatewaySettings: GatewaySettings
  readonly gatewayWanIp: string
  readonly apiserverUrl: string | null
}

export function labStatus(name: string): LabStatus {
  const state = readState(statePathFor(name))
  const proc = (r: ProcessRecord | null | undefined) => (r ? { pid: r.pid, alive: isAlive(r) } : null)
  return {
    name,
    status: state.status,
    statePath: state.statePath,
    namespaces: Object.fromEntries(namespaceList(state).map((n) => [n, namespaceExists(n)])),
    processes: {
      miniupnpd: proc(state.gateway.process),
      etcd: proc(state.controlPlane?.etcd),
      "kube-apiserver": proc(state.controlPlane?.apiserver),
      ...Object.fromEntries(realNodeProcesses(state).map(([name, record]) => [name, proc(record)]))
    },
    gatewaySettings: state.gateway.settings,
    gatewayWanIp: state.gatewayWanIp,
    apiserverUrl: state.controlPlane?.apiserverUrl ?? null
  }
}
