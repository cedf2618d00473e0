/**
 * What the end-to-end tests use to act on the lab (scripts/lab/README.md).
 *
 * The e2e vitest project runs *inside* the lab's node namespace (`lan`, 192.168.77.10), started
 * by `npm run test:e2e` (scripts/lab/run-e2e.sh), which passes the lab's state file in
 * `EDGE_CCM_LAB_STATE`. In-process network code (node:http, @kubernetes/client-node, the
 * controller's own layers) therefore talks from the node's address; anything that must happen
 * elsewhere (a curl from the Internet side, nft in the gateway) goes through `ip netns exec`.
 *
 * Every function is Promise-based and reads the state file afresh, so reboots and WAN address
 * changes made by one helper are seen by the next. Nothing here sleeps in place of waiting for a
 * condition: use `waitFor`.
 */
import * as k8s from "@kubernetes/client-node"
import { spawn } from "node:child_process"
import { createHash } from "node:crypto"
import * as fs from "node:fs"
import * as http from "node:http"
import * as path from "node:path"
import * as driver from "../../../scripts/lab/driver.ts"
import { delay, netnsId, run, type RunResult } from "../../../scripts/lab/proc.ts"

export type { RunResult }
export type { GatewaySettings, LabStateFile, NamespaceKey } from "../../../scripts/lab/driver.ts"

/** The gateway's settings after `up` (and what `restoreGateway` returns to). */
export const DEFAULT_GATEWAY: driver.GatewaySettings = { secureMode: false, enableUpnp: true, enableNatpmp: true, enableIpv6: true }
/** The gateway's WAN address after `up`. */
export const DEFAULT_WAN_CIDR: string = driver.LAB.gatewayWanCidr

export interface LabState {
  readonly name: string
  readonly labDir: string
  readonly statePath: string
  readonly namespaces: { readonly wan: string; readonly gw: string; readonly lan: string; readonly peer: string; readonly lan2: string | null }
  /** The Internet client, `122.112.219.1`. */
  readonly wanClientIp: string
  /** The gateway's current WAN address (`122.112.219.229` unless changed). */
  readonly gatewayWanIp: string
  readonly gatewayWanCidr: string
  /** `192.168.77.1`. */
  readonly gatewayLanIp: string
  /** The node the tests run on, `192.168.77.10`. */
  readonly nodeIp: string
  /** Another LAN host (namespace `peer`), `192.168.77.50`: owner of "foreign" mappings. */
  readonly peerIp: string
  readonly nodes: ReadonlyArray<{ readonly name: string; readonly namespace: string; readonly ip: string }>
  /** miniupnpd's root description, `http://192.168.77.1:49536/rootDesc.xml`. */
  readonly rootDescUrl: string
  /** miniupnpd's WANIPConnection control URL. */
  readonly controlUrl: string
  /** IPv6 (documentation prefixes, routed, no NAT66): the Internet client, `2001:db8:1::2`. */
  readonly wanClientIp6: string
  /** The gateway's WAN IPv6 address, `2001:db8:1::1`. */
  readonly gatewayWanIp6: string
  /** The gateway's LAN IPv6 address, `2001:db8:2::1`. */
  readonly gatewayLanIp6: string
  /** The node's global IPv6 address, `2001:db8:2::10`, where kube-proxy would serve over IPv6. */
  readonly nodeIp6: string
  /** The other LAN host's IPv6 address, `2001:db8:2::50`. */
  readonly peerIp6: string
  /** The root description over IPv6, `http://[2001:db8:2::1]:49536/rootDesc.xml`. */
  readonly rootDescUrl6: string
  /** miniupnpd's WANIPv6FirewallControl:1 control URL, `http://[2001:db8:2::1]:49536/ctl/IP6FCtl`. */
  readonly firewallControlUrl: string
  readonly gateway: { readonly pid: number | null; readonly settings: driver.GatewaySettings; readonly starts: number; readonly confPath: string }
  /** False when the lab was started with --no-control-plane: the fields below then throw. */
  readonly hasControlPlane: boolean
  readonly kubeconfig: string
  readonly kubectlPath: string
  readonly apiserverUrl: string
  readonly adminToken: string
  readonly caFile: string
  /** The apiserver's audit log: requests of ServiceAccounts in edge-ccm-system (see scripts/lab/README.md). */
  readonly auditLog: string
  /** The raw state file. */
  readonly raw: driver.LabStateFile
}

const runHint = "run the e2e tests with `npm run test:e2e` (scripts/lab/run-e2e.sh), which brings the lab up and sets EDGE_CCM_LAB_STATE"

function rawState(): driver.LabStateFile {
  const file = process.env["EDGE_CCM_LAB_STATE"]
  if (file === undefined || file === "") throw new Error(`EDGE_CCM_LAB_STATE is not set: ${runHint}`)
  if (!fs.existsSync(file)) throw new Error(`EDGE_CCM_LAB_STATE=${file} does not exist (is the lab down?): ${runHint}`)
  return driver.readState(file)
}

let checkedNamespace: string | undefined

/** The e2e tests must run in the node namespace: never send lab traffic from the machine's own. */
function assertInsideNodeNamespace(state: driver.LabStateFile): void {
  if (checkedNamespace === state.namespaces.lan) return
  const self = netnsId("/proc/self/ns/net")
  const lan = netnsId(`/run/netns/${state.namespaces.lan}`)
  if (self === undefined || lan === undefined || self !== lan) {
    throw new Error(`the e2e tests must run inside the lab's node namespace ${state.namespaces.lan}: ${runHint}`)
  }
  checkedNamespace = state.namespaces.lan
}

/**
 * The lab, from `EDGE_CCM_LAB_STATE`. Throws a clear error outside `npm run test:e2e`. Call it
 * again after `setGatewayWanAddress` or a reboot to see the new values.
 */
export function loadLab(): LabState {
  const s = rawState()
  assertInsideNodeNamespace(s)
  const cp = s.controlPlane
  const lab: Record<string, unknown> = {
    name: s.name,
    labDir: s.labDir,
    statePath: s.statePath,
    namespaces: s.namespaces,
    wanClientIp: s.wanClientIp,
    gatewayWanIp: s.gatewayWanIp,
    gatewayWanCidr: s.gatewayWanCidr,
    gatewayLanIp: s.gatewayLanIp,
    nodeIp: s.nodeIp,
    peerIp: s.peerIp,
    nodes: s.nodes.map((n) => ({ name: n.name, namespace: n.namespace, ip: n.ip })),
    rootDescUrl: s.rootDescUrl,
    controlUrl: s.controlUrl,
    wanClientIp6: s.wanClientIp6,
    gatewayWanIp6: s.gatewayWanIp6,
    gatewayLanIp6: s.gatewayLanIp6,
    nodeIp6: s.nodeIp6,
    peerIp6: s.peerIp6,
    rootDescUrl6: s.rootDescUrl6,
    firewallControlUrl: s.firewallControlUrl,
    gateway: { pid: s.gateway.process?.pid ?? null, settings: s.gateway.settings, starts: s.gateway.starts, confPath: s.gateway.confPath },
    hasControlPlane: cp !== null,
    raw: s
  }
  const cpFields = {
    kubeconfig: cp?.kubeconfig,
    kubectlPath: cp?.kubectlPath,
    apiserverUrl: cp?.apiserverUrl,
    adminToken: cp?.adminToken,
    caFile: cp?.caFile,
    auditLog: cp?.auditLog
  }
  for (const [key, value] of Object.entries(cpFields)) {
    if (value !== undefined) lab[key] = value
    else {
      Object.defineProperty(lab, key, {
        enumerable: false,
        get: () => {
          throw new Error(`lab "${s.name}" was started without the control plane, so it has no ${key}`)
        }
      })
    }
  }
  return lab as unknown as LabState
}

// ---------------------------------------------------------------------------------------------
// Commands in namespaces

export interface ExecOptions {
  readonly input?: string
  readonly timeoutMs?: number
  readonly env?: Readonly<Record<string, string>>
}

/**
 * Runs argv inside a lab namespace: `ns` is a key (`"wan" | "gw" | "lan" | "lan2" | "peer"`) or
 * a namespace's full name. Never rejects; look at `code`. Default timeout 30 s.
 */
export function inNamespace(ns: driver.NamespaceKey | string, argv: ReadonlyArray<string>, options: ExecOptions = {}): Promise<RunResult> {
  const s = rawState()
  return run(["ip", "netns", "exec", driver.namespaceOf(s, ns), ...argv], {
    input: options.input,
    timeoutMs: options.timeoutMs ?? 30_000,
    env: options.env
  })
}

/** A long-running process started in a lab namespace (e.g. the controller). */
export interface LabProcess {
  readonly pid: number
  /** stdout and stderr so far, interleaved as they arrived. */
  output(): string
  stdout(): string
  stderr(): string
  /** Resolves when the process exits. */
  readonly exited: Promise<{ code: number | null; signal: string | null }>
  /** SIGTERM (or `signal`) by PID; SIGKILL after `timeoutMs` (default 10 s); resolves once gone. */
  stop(options?: { signal?: NodeJS.Signals; timeoutMs?: number }): Promise<{ code: number | null; signal: string | null }>
}

const started = new Set<LabProcess>()

/**
 * Starts argv in a lab namespace as a child of the test process, capturing its output. Stop it
 * with `stop()`; `stopAllProcesses()` (e.g. in afterAll) stops any left. The lab's teardown
 * also stops anything still running in its namespaces.
 */
export function spawnInNamespace(
  ns: driver.NamespaceKey | string,
  argv: ReadonlyArray<string>,
  options: { env?: Readonly<Record<string, string>>; cwd?: string } = {}
): LabProcess {
  const s = rawState()
  const child = spawn("ip", ["netns", "exec", driver.namespaceOf(s, ns), ...argv], {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, ...options.env },
    ...(options.cwd === undefined ? {} : { cwd: options.cwd })
  })
  const pid = child.pid
  if (pid === undefined) throw new Error(`could not start ${argv.join(" ")}`)
  let all = ""
  let out = ""
  let err = ""
  child.stdout.on("data", (chunk: Buffer) => {
    out += chunk.toString("utf8")
    all += chunk.toString("utf8")
  })
  child.stderr.on("data", (chunk: Buffer) => {
    err += chunk.toString("utf8")
    all += chunk.toString("utf8")
  })
  let exitInfo: { code: number | null; signal: string | null } | undefined
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => {
    child.on("close", (code, signal) => {
      exitInfo = { code, signal }
      started.delete(proc)
      resolve(exitInfo)
    })
    child.on("error", () => {
      exitInfo = { code: 127, signal: null }
      started.delete(proc)
      resolve(exitInfo)
    })
  })
  const proc: LabProcess = {
    pid,
    output: () => all,
    stdout: () => out,
    stderr: () => err,
    exited,
    stop: async (opts = {}) => {
      if (exitInfo !== undefined) return exitInfo
      try {
        process.kill(pid, opts.signal ?? "SIGTERM")
      } catch {
        // already gone
      }
      const timeout = delay(opts.timeoutMs ?? 10_000).then(() => "timeout" as const)
      if ((await Promise.race([exited, timeout])) === "timeout") {
        try {
          process.kill(pid, "SIGKILL")
        } catch {
          // already gone
        }
      }
      return exited
    }
  }
  started.add(proc)
  return proc
}

/** Stops every process started with spawnInNamespace that still runs. */
export async function stopAllProcesses(): Promise<void> {
  await Promise.all([...started].map((p) => p.stop()))
}

// ---------------------------------------------------------------------------------------------
// The Internet side

export interface CurlResult {
  /** An HTTP answer with status 200–399 arrived. */
  readonly ok: boolean
  /** The HTTP status, 0 when no HTTP answer came (refused, timed out, no route). */
  readonly status: number
  readonly body: string
  /** curl's exit code and message when it failed. */
  readonly curlExitCode: number
  readonly error: string
}

/** An HTTP GET (or `method`) from the `wan` namespace, 122.112.219.1. Default timeout 5 s. */
export async function curlFromWan(url: string, options: { timeoutMs?: number; method?: string; from?: driver.NamespaceKey } = {}): Promise<CurlResult> {
  const seconds = Math.max(0.2, (options.timeoutMs ?? 5000) / 1000).toFixed(1)
  const r = await inNamespace(options.from ?? "wan", [
    "curl", "-sS", "-g", "-m", seconds, "--connect-timeout", seconds, "-X", options.method ?? "GET", "-o", "-", "-w", "\n%{http_code}", url
  ], { timeoutMs: (options.timeoutMs ?? 5000) + 5000 })
  const cut = r.stdout.lastIndexOf("\n")
  const status = cut < 0 ? 0 : Number(r.stdout.slice(cut + 1)) || 0
  const body = cut < 0 ? r.stdout : r.stdout.slice(0, cut)
  return { ok: r.code === 0 && status >= 200 && status < 400, status, body, curlExitCode: r.code, error: r.code === 0 ? "" : r.stderr.trim() }
}

// ---------------------------------------------------------------------------------------------
// The gateway, as a LAN host sees it

export interface UpnpcMapping {
  readonly index: number
  readonly protocol: "TCP" | "UDP"
  readonly externalPort: number
  readonly internalClient: string
  readonly internalPort: number
  readonly description: string
  readonly remoteHost: string
  readonly leaseDuration: number
}

/**
 * The parsed `upnpc -l` table; `raw` is upnpc's whole output and `externalIpAddress` its
 * `ExternalIPAddress = …` line (null when upnpc printed none: no IGD answered, or
 * GetExternalIPAddress failed as with a private WAN address). Both are non-enumerable.
 */
export type UpnpcListing = Array<UpnpcMapping> & { readonly raw: string; readonly externalIpAddress: string | null }

export interface UpnpcOptions {
  /** Namespace upnpc runs in (default `lan`). */
  readonly from?: driver.NamespaceKey
  /** Find the gateway by SSDP (multicast inside the lab) instead of `-u rootDescUrl`. */
  readonly discover?: boolean
  readonly timeoutMs?: number
}

/** Runs upnpc with `args` (after `-u rootDescUrl` unless `discover`). */
export function upnpc(args: ReadonlyArray<string>, options: UpnpcOptions = {}): Promise<RunResult> {
  const s = rawState()
  const target = options.discover === true ? [] : ["-u", s.rootDescUrl]
  return inNamespace(options.from ?? "lan", ["upnpc", ...target, ...args], { timeoutMs: options.timeoutMs ?? 20_000 })
}

const mappingLine = /^\s*(\d+)\s+(TCP|UDP)\s+(\d+)->(\d{1,3}(?:\.\d{1,3}){3}):(\d+)\s+'(.*)'\s+'([^']*)'\s+(\d+)\s*$/

/** Parses `upnpc -l` output, e.g. ` 0 TCP  8080->192.168.77.10:30000 'desc' '' 3600`. */
export function parseUpnpcList(raw: string): UpnpcListing {
  const mappings: Array<UpnpcMapping> = []
  for (const line of raw.split("\n")) {
    const m = mappingLine.exec(line)
    if (m === null) continue
    mappings.push({
      index: Number(m[1]),
      protocol: m[2] as "TCP" | "UDP",
      externalPort: Number(m[3]),
      internalClient: m[4] ?? "",
      internalPort: Number(m[5]),
      description: m[6] ?? "",
      remoteHost: m[7] ?? "",
      leaseDuration: Number(m[8])
    })
  }
  const ext = /^ExternalIPAddress = (.*)$/m.exec(raw)
  const externalIpAddress = ext === null ? null : (ext[1] ?? "").trim()
  // Not enumerable, so that `expect(listing).toEqual([])` compares the mappings only.
  return Object.defineProperties(mappings, {
    raw: { value: raw, enumerable: false },
    externalIpAddress: { value: externalIpAddress, enumerable: false }
  }) as UpnpcListing
}

/** `upnpc -l` from the node: the gateway's whole table. */
export async function upnpcList(options: UpnpcOptions = {}): Promise<UpnpcListing> {
  const r = await upnpc(["-l"], options)
  return parseUpnpcList(`${r.stdout}${r.stderr === "" ? "" : `\n${r.stderr}`}`)
}

export interface UpnpcResult {
  readonly ok: boolean
  /** The UPnP error code upnpc reported (718, 606, 501, …), or null. */
  readonly errorCode: number | null
  readonly raw: string
}

function upnpcResult(r: RunResult): UpnpcResult {
  const raw = `${r.stdout}${r.stderr}`
  const code = /failed with code\s*:?\s*(\d+)/.exec(raw)
  const errorCode = code === null ? null : Number(code[1])
  const noIgd = /No valid UPNP Internet Gateway Device found|No IGD UPnP Device found/.test(raw)
  return { ok: r.code === 0 && errorCode === null && !noIgd, errorCode, raw }
}

export interface UpnpcAddOptions extends UpnpcOptions {
  readonly externalPort: number
  readonly internalPort: number
  readonly protocol?: "TCP" | "UDP"
  /** Default: the address of the namespace upnpc runs in (`from`). */
  readonly internalClient?: string
  readonly description?: string
  /** Seconds; 0 or absent lets miniupnpd choose (604800). */
  readonly leaseDuration?: number
}

/**
 * AddPortMapping with upnpc. For a mapping owned by another LAN host, run it `from: "peer"`
 * (192.168.77.50): that works with secure_mode yes and no. With secure_mode=no a mapping to
 * another host can also be made from `lan` by passing `internalClient` (miniupnpd answers 718
 * to that when secure_mode=yes).
 */
export async function upnpcAdd(options: UpnpcAddOptions): Promise<UpnpcResult> {
  const s = rawState()
  const from = options.from ?? "lan"
  const ownIp = from === "peer" ? s.peerIp : from === "lan2" ? (s.nodes[1]?.ip ?? s.nodeIp) : s.nodeIp
  const args = [
    "-e", options.description ?? "edge-ccm-lab",
    "-a", options.internalClient ?? ownIp, String(options.internalPort), String(options.externalPort), options.protocol ?? "TCP"
  ]
  if (options.leaseDuration !== undefined) args.push(String(options.leaseDuration))
  return upnpcResult(await upnpc(args, options))
}

/** DeletePortMapping with upnpc (from `lan` unless `from`). */
export async function upnpcDelete(options: UpnpcOptions & { externalPort: number; protocol?: "TCP" | "UDP" }): Promise<UpnpcResult> {
  return upnpcResult(await upnpc(["-d", String(options.externalPort), options.protocol ?? "TCP"], options))
}

/** One raw SOAP action on the gateway's WANIPConnection service (curl from `lan` unless `from`). */
export function soap(action: string, args: Readonly<Record<string, string>> = {}, options: { from?: driver.NamespaceKey; timeoutMs?: number } = {}) {
  const s = rawState()
  return driver.gatewaySoap(s, action, args, {
    fromNs: driver.namespaceOf(s, options.from ?? "lan"),
    ...(options.timeoutMs === undefined ? {} : { timeoutMs: options.timeoutMs })
  })
}

/** natpmpc against the gateway (from `lan` unless `from`), e.g. `["-a", "9090", "30001", "tcp", "3600"]`. */
export function natpmpc(args: ReadonlyArray<string>, options: { from?: driver.NamespaceKey; timeoutMs?: number } = {}): Promise<RunResult> {
  const s = rawState()
  return inNamespace(options.from ?? "lan", ["natpmpc", "-g", s.gatewayLanIp, ...args], { timeoutMs: options.timeoutMs ?? 20_000 })
}

// ---------------------------------------------------------------------------------------------
// The gateway, as the router's owner sees it

/** `nft list chain inet nat prerouting_miniupnpd` in gw: the DNAT rules, whatever protocol made them. */
export async function nftNatRules(): Promise<string> {
  const r = await inNamespace("gw", ["nft", "list", "chain", "inet", "nat", "prerouting_miniupnpd"])
  if (r.code !== 0) throw new Error(`nft list chain failed: ${r.stderr.trim()}`)
  return r.stdout
}

export interface NftMapping {
  readonly protocol: "TCP" | "UDP"
  readonly externalPort: number
  readonly internalClient: string
  readonly internalPort: number
}

/** Parses nftNatRules(): lines like `iif "wan0" @nh,72,8 0x6 th dport 8080 dnat ip to 192.168.77.10:30000`. */
export function parseNftNatRules(text: string): Array<NftMapping> {
  const out: Array<NftMapping> = []
  for (const line of text.split("\n")) {
    const m = /@nh,72,8 (0x6|0x11) th dport (\d+) dnat ip to (\d{1,3}(?:\.\d{1,3}){3}):(\d+)/.exec(line)
    if (m === null) continue
    out.push({ protocol: m[1] === "0x6" ? "TCP" : "UDP", externalPort: Number(m[2]), internalClient: m[3] ?? "", internalPort: Number(m[4]) })
  }
  return out
}

/** The gateway's DNAT table read from nftables (works with enable_upnp=no too). */
export async function nftMappings(): Promise<Array<NftMapping>> {
  return parseNftNatRules(await nftNatRules())
}

/** The gateway's DNAT rule for one external port (of either protocol unless given), or undefined. */
export async function nftMappingOn(externalPort: number, protocol?: "TCP" | "UDP"): Promise<NftMapping | undefined> {
  return (await nftMappings()).find((m) => m.externalPort === externalPort && (protocol === undefined || m.protocol === protocol))
}

/** One IPv6 pinhole in miniupnpd's forward chain (`inet filter miniupnpd`), as nftables holds it. */
export interface NftPinhole {
  /** miniupnpd's UniqueID, from the rule's userdata `pinhole-<id>`. */
  readonly uniqueId: number
  /** When miniupnpd removes it, in seconds of the kernel's uptime (`ts-<n>`; /proc/uptime is the clock). */
  readonly expiresAt: number
  /** The description after `ts-<n>:` (`IGD2 pinhole`, empty after an UpdatePinhole, `PCP MAP …`). */
  readonly description: string
  readonly protocol: "TCP" | "UDP"
  readonly port: number
  /** The destination (the node's address), canonical. */
  readonly internalClient: string
  /** The nft handle: a new one means miniupnpd re-created the rule. */
  readonly handle: number
}

/**
 * Parses `nft --debug=netlink -a list chain inet filter miniupnpd`: the netlink blocks (whose
 * userdata carries `pinhole-<id> ts-<expiry>: <description>`) come first, then the rules, in
 * the same order.
 */
export function parseNftPinholes(text: string): Array<NftPinhole> {
  const blocks = text.split(/^inet filter miniupnpd /m).slice(1).map((block) => /userdata = \{ (.*) \}/.exec(block)?.[1] ?? "")
  // Every rule of the chain (a mapping's accept rule as well as a pinhole) has its block.
  const rules = text.split("\n").filter((line) => /^\t\t[^}\s]/.test(line))
  const out: Array<NftPinhole> = []
  rules.forEach((rule, index) => {
    const data = /^pinhole-(\d+) ts-(\d+):\s?(.*)$/.exec((blocks[index] ?? "").trim())
    const match = /th dport (\d+) @nh,192,128 0x([0-9a-f]{32}) @nh,48,8 (0x6|0x11) accept # handle (\d+)/.exec(rule)
    if (data === null || match === null) return
    const hex = match[2] ?? ""
    const groups = (hex.match(/..../g) ?? []).map((group) => group.replace(/^0+(?=.)/, "")).join(":")
    const canonical = new URL(`http://[${groups}]/`).hostname.slice(1, -1)
    out.push({
      uniqueId: Number(data[1]),
      expiresAt: Number(data[2]),
      description: (data[3] ?? "").trim(),
      protocol: match[3] === "0x6" ? "TCP" : "UDP",
      port: Number(match[1]),
      internalClient: canonical,
      handle: Number(match[4])
    })
  })
  return out
}

/** The pinholes in the gateway's nftables, read in gw. */
export async function nftPinholes(): Promise<Array<NftPinhole>> {
  const r = await inNamespace("gw", ["nft", "--debug=netlink", "-a", "list", "chain", "inet", "filter", "miniupnpd"])
  if (r.code !== 0) throw new Error(`nft list chain inet filter miniupnpd failed: ${r.stderr.trim()}`)
  return parseNftPinholes(r.stdout)
}

/** The gateway's pinholes on one port. */
export async function pinholesOn(port: number): Promise<Array<NftPinhole>> {
  return (await nftPinholes()).filter((pinhole) => pinhole.port === port)
}

/** The kernel's uptime in seconds: the clock of a pinhole's `expiresAt` (all namespaces share it). */
export function kernelUptime(): number {
  return Number(fs.readFileSync("/proc/uptime", "utf8").split(" ")[0])
}

/** Waits for a curl from `wan` to the gateway's external port to reach the stand-in on `internalPort`. */
export function curlReaches(externalPort: number, internalPort: number): Promise<CurlResult> {
  return waitFor(async () => {
    const r = await curlFromWan(`http://${loadLab().gatewayWanIp}:${externalPort}/`, { timeoutMs: 2000 })
    return r.ok && r.body === `edge-ccm-lab nodePort ${internalPort}\n` ? r : undefined
  }, { description: `curl from wan to :${externalPort} reaching nodePort ${internalPort}`, timeoutMs: 10_000 })
}

/** The miniupnpd PID from the lab's state file (it changes with every reboot). */
export function gatewayPid(): number | undefined {
  return loadLab().gateway.pid ?? undefined
}

/**
 * Whether the recorded miniupnpd process still runs. A crashed daemon can linger as a zombie
 * (nothing reaps it in a container without an init), so its state is read, not just its entry.
 */
export function gatewayAlive(): boolean {
  const pid = gatewayPid()
  if (pid === undefined) return false
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    const state = stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3)
    return state !== "Z" && state !== "X"
  } catch {
    return false
  }
}

/**
 * A router reboot: stop miniupnpd by PID, flush its three chains, start it, wait until it
 * answers (SOAP, and the NAT-PMP socket). Every mapping is gone afterwards; uptime and the
 * NAT-PMP/PCP epoch start again.
 */
export async function rebootGateway(): Promise<void> {
  await driver.rebootGateway(rawState())
}

/**
 * Restarts miniupnpd with changed settings (stop, flush, start: a reconfiguration reboots the
 * router and loses its mappings). Settings persist until changed again; `restoreGateway()`
 * puts the defaults back.
 */
export async function reconfigureGateway(settings: Partial<driver.GatewaySettings>): Promise<void> {
  await driver.rebootGateway(rawState(), settings)
}

/** Stops miniupnpd (its rules stay in nftables, as when the daemon crashes). */
export async function stopGateway(): Promise<void> {
  await driver.stopGateway(rawState())
}

/** Flushes miniupnpd's three chains. */
export async function flushGatewayChains(): Promise<void> {
  await driver.flushGatewayChains(rawState())
}

/** Starts miniupnpd again after stopGateway() and waits until it answers. */
export async function startGateway(): Promise<void> {
  await driver.startGateway(rawState())
}

/**
 * Replaces the gateway's WAN address, e.g. `10.0.0.2/24` (double NAT: AddPortMapping → 501,
 * GetExternalIPAddress → empty) or `122.112.219.230/24` (the ISP renumbered). The `wan` client
 * keeps a route to it. miniupnpd needs no restart.
 */
export async function setGatewayWanAddress(
  cidr: string,
  options: { readonly afterRemoval?: () => Promise<void> } = {}
): Promise<void> {
  await driver.setGatewayWanAddress(rawState(), cidr, options)
}

/** Puts the default gateway settings and WAN address back, restarting miniupnpd only if needed. */
export async function restoreGateway(): Promise<void> {
  const s = rawState()
  if (s.gatewayWanCidr !== DEFAULT_WAN_CIDR) await driver.setGatewayWanAddress(s, DEFAULT_WAN_CIDR)
  const now = s.gateway.settings
  const same = now.secureMode === DEFAULT_GATEWAY.secureMode && now.enableUpnp === DEFAULT_GATEWAY.enableUpnp &&
    now.enableNatpmp === DEFAULT_GATEWAY.enableNatpmp && now.enableIpv6 !== false
  if (!same || s.gateway.process === null) await driver.rebootGateway(s, DEFAULT_GATEWAY)
}

// ---------------------------------------------------------------------------------------------
// Standing in for kube-proxy

export interface NodePortServer {
  readonly ip: string
  readonly port: number
  /** What every request gets back: `edge-ccm-lab nodePort <port>\n` unless given. */
  readonly body: string
  /** Requests served so far. */
  requests(): number
  close(): Promise<void>
}

/**
 * An HTTP server on `<ip>:<port>` (default the node address) in the test process, standing in
 * for kube-proxy on a Service's nodePort.
 */
export function serveNodePort(port: number, options: { ip?: string; body?: string } = {}): Promise<NodePortServer> {
  const lab = loadLab()
  const ip = options.ip ?? lab.nodeIp
  const body = options.body ?? `edge-ccm-lab nodePort ${port}\n`
  let count = 0
  const server = http.createServer((_req, res) => {
    count += 1
    res.writeHead(200, { "content-type": "text/plain", connection: "close" })
    res.end(body)
  })
  return new Promise((resolve, reject) => {
    server.once("error", reject)
    server.listen(port, ip, () => {
      server.off("error", reject)
      resolve({
        ip,
        port,
        body,
        requests: () => count,
        close: () =>
          new Promise<void>((done) => {
            server.closeAllConnections()
            server.close(() => done())
          })
      })
    })
  })
}

// ---------------------------------------------------------------------------------------------
// The API server

/** kubectl (v1.34, from the lab's cache) with the admin kubeconfig unless `kubeconfig`. */
export function kubectl(args: ReadonlyArray<string>, options: { input?: string; kubeconfig?: string; timeoutMs?: number } = {}): Promise<RunResult> {
  const lab = loadLab()
  return inNamespace("lan", [lab.kubectlPath, "--kubeconfig", options.kubeconfig ?? lab.kubeconfig, ...args], {
    ...(options.input === undefined ? {} : { input: options.input }),
    timeoutMs: options.timeoutMs ?? 60_000
  })
}

/** kubectl `args` with `-o json`, parsed; throws with kubectl's stderr when it fails. */
export async function kubectlJson<T = unknown>(args: ReadonlyArray<string>, options: { kubeconfig?: string } = {}): Promise<T> {
  const r = await kubectl([...args, "-o", "json"], options)
  if (r.code !== 0) throw new Error(`kubectl ${args.join(" ")} failed: ${r.stderr.trim()}`)
  return JSON.parse(r.stdout) as T
}

/**
 * A token for ServiceAccount `namespace/name` through the TokenRequest API (`kubectl create
 * token`). The ServiceAccount must exist: no controller-manager runs in the lab, so create it
 * (and any RBAC) yourself. `expirationSeconds` must be at least 600.
 */
export async function createServiceAccountToken(
  namespace: string,
  name: string,
  options: { expirationSeconds?: number; audiences?: ReadonlyArray<string> } = {}
): Promise<string> {
  const args = ["create", "token", name, "-n", namespace]
  if (options.expirationSeconds !== undefined) args.push(`--duration=${options.expirationSeconds}s`)
  for (const audience of options.audiences ?? []) args.push(`--audience=${audience}`)
  const r = await kubectl(args)
  if (r.code !== 0) throw new Error(`TokenRequest for ${namespace}/${name} failed: ${r.stderr.trim()}`)
  return r.stdout.trim()
}

/**
 * Creates the namespace unless it exists. No controller-manager runs in the lab, so a deleted
 * namespace stays Terminating for good (its `kubernetes` finalizer is never removed) and
 * refuses new objects: such a namespace is finalized first, as the namespace controller would
 * once the objects in it are deleted, and created again.
 */
export async function ensureNamespace(name: string): Promise<void> {
  const current = await kubectl(["get", "namespace", name, "-o", "jsonpath={.status.phase}"])
  if (current.code === 0 && current.stdout === "Active") return
  if (current.code === 0) {
    const finalized = await kubectl(["replace", "--raw", `/api/v1/namespaces/${name}/finalize`, "-f", "-"], {
      input: JSON.stringify({ apiVersion: "v1", kind: "Namespace", metadata: { name }, spec: { finalizers: [] } })
    })
    if (finalized.code !== 0) throw new Error(`cannot finalize namespace ${name}: ${finalized.stderr.trim()}`)
    await waitFor(async () => (await kubectl(["get", "namespace", name])).code !== 0, { description: `namespace ${name} to be gone` })
  }
  const created = await kubectl(["create", "namespace", name])
  if (created.code !== 0) throw new Error(`cannot create namespace ${name}: ${created.stderr.trim()}`)
}

/** Writes a kubeconfig for `token` against the lab's apiserver and returns its path. */
export function kubeconfigForToken(token: string, options: { user?: string } = {}): string {
  const s = rawState()
  const cp = driver.requireControlPlane(s)
  const id = createHash("sha256").update(token).digest("hex").slice(0, 16)
  return driver.writeKubeconfig(cp, token, path.join(s.labDir, "kubeconfigs", `${id}.yaml`), options.user ?? `token-${id.slice(0, 8)}`)
}

/**
 * Compacts etcd up to its current revision and returns that revision: a watch from an older
 * resourceVersion then gets 410 Gone (once the apiserver's watch cache has moved past it).
 */
export function compactEtcd(): Promise<number> {
  return driver.compactEtcd(rawState())
}

/** A @kubernetes/client-node KubeConfig for the admin (or for `token`). */
export function kubeConfig(token?: string): k8s.KubeConfig {
  const kc = new k8s.KubeConfig()
  kc.loadFromFile(token === undefined ? loadLab().kubeconfig : kubeconfigForToken(token))
  return kc
}

// ---------------------------------------------------------------------------------------------
// Waiting

export interface WaitForOptions {
  readonly description: string
  /** Default 10 s. */
  readonly timeoutMs?: number
  /** Default 100 ms. */
  readonly intervalMs?: number
}

function show(value: unknown): string {
  if (value instanceof Error) return `${value.name}: ${value.message}`
  try {
    const text = typeof value === "string" ? value : JSON.stringify(value)
    return text === undefined ? String(value) : text.length > 2000 ? `${text.slice(0, 2000)}…` : text
  } catch {
    return String(value)
  }
}

/**
 * Polls `condition` until it returns a truthy value (which is returned). A throw counts as
 * "not yet". On timeout, fails with `description` and the last value or error seen.
 */
export async function waitFor<T>(condition: () => T | Promise<T>, options: WaitForOptions): Promise<NonNullable<T>> {
  const timeoutMs = options.timeoutMs ?? 10_000
  const intervalMs = options.intervalMs ?? 100
  const deadline = Date.now() + timeoutMs
  let last: unknown = undefined
  let attempts = 0
  while (true) {
    attempts += 1
    try {
      const value = await condition()
      if (value) return value as NonNullable<T>
      last = value
    } catch (error) {
      last = error
    }
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeoutMs} ms (${attempts} attempts) waiting for ${options.description}; last: ${show(last)}`)
    }
    await delay(Math.min(intervalMs, Math.max(0, deadline - Date.now())))
  }
}

/** A name unlikely to collide with another test's objects, e.g. `lab-3f9a1c`. */
export function uniqueName(prefix = "lab"): string {
  return `${prefix}-${createHash("sha256").update(`${process.pid}-${Date.now()}-${Math.random()}`).digest("hex").slice(0, 6)}`
}
