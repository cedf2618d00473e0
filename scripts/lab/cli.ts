/**
 * `npm run lab -- <command>`: the lab by hand.
 *
 *   up      [--name dev] [--no-control-plane] [--nodes 1|2] [--real-node] [--wait-real-node SECONDS]
 *           [--secure-mode yes|no] [--enable-upnp yes|no] [--enable-natpmp yes|no] [--keep-logs] [--json]
 *   images  [--arch amd64|arm64] [--run-help] [--size]   build (or find cached) the images a real node runs
 *   down    [--name dev | --all] [--keep-logs]
 *   status  [--name dev] [--json]
 *   reboot-gateway       [--name dev]
 *   reconfigure-gateway  [--name dev] [--secure-mode yes|no] [--enable-upnp yes|no] [--enable-natpmp yes|no] [--enable-ipv6 yes|no]
 *   set-wan-address CIDR [--name dev]
 *   shell   [--name dev] [--ns lan]       a shell in a lab namespace, KUBECONFIG and kubectl set up
 *   exec    [--name dev] [--ns lan] -- CMD...
 *   env     [--name dev]                  prints `export EDGE_CCM_LAB_STATE=...`
 */
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { parseArgs } from "node:util"
import {
  controlPlaneBinDir,
  down,
  type GatewaySettings,
  LabStepError,
  labStatus,
  listLabs,
  namespaceOf,
  readState,
  rebootGateway,
  repoRoot,
  setGatewayWanAddress,
  statePathFor,
  unknownLabNamespaces,
  up
} from "./driver.ts"
import type { LabStateFile } from "./driver.ts"
import { type Arch, buildImages, compressedSize, runHelp } from "./images.ts"

const usage = `usage: npm run lab -- <command> [options]

  up      [--name dev] [--no-control-plane] [--nodes 1|2] [--real-node] [--wait-real-node SECONDS]
          [--secure-mode yes|no] [--enable-upnp yes|no] [--enable-natpmp yes|no] [--keep-logs] [--json]
          --real-node: containerd, kubelet and kube-proxy on every node, the scheduler and
          controller-manager, the images built here and imported (one such lab at a time);
          --wait-real-node: while another lab runs the real node, wait for it that long (default 0)
  images  [--arch amd64|arm64] [--run-help] [--size]   the images a real node runs, built and cached;
          --run-help starts the controller image with --help (arm64: under qemu-user);
          --size: the controller image's size compressed (gzip layers in an OCI layout)
  down    [--name dev | --all] [--keep-logs]
  status  [--name NAME] [--json]
  reboot-gateway       [--name dev]   stop miniupnpd, flush its chains, start it
  reconfigure-gateway  [--name dev] [--secure-mode yes|no] [--enable-upnp yes|no] [--enable-natpmp yes|no] [--enable-ipv6 yes|no]
  set-wan-address CIDR [--name dev]   e.g. 10.0.0.2/24 (double NAT) or 122.112.219.230/24
  shell   [--name dev] [--ns lan|wan|gw|lan2|peer]
  exec    [--name dev] [--ns lan] -- COMMAND [ARGS...]
  env     [--name dev]
`

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    name: { type: "string", default: "dev" },
    all: { type: "boolean", default: false },
    "no-control-plane": { type: "boolean", default: false },
    "real-node": { type: "boolean", default: false },
    arch: { type: "string", default: "amd64" },
    "run-help": { type: "boolean", default: false },
    size: { type: "boolean", default: false },
    nodes: { type: "string", default: "1" },
    "secure-mode": { type: "string" },
    "enable-upnp": { type: "string" },
    "enable-natpmp": { type: "string" },
    "enable-ipv6": { type: "string" },
    "keep-logs": { type: "boolean", default: process.env["EDGE_CCM_LAB_KEEP_LOGS"] === "1" },
    "wait-real-node": { type: "string", default: "0" },
    json: { type: "boolean", default: false },
    quiet: { type: "boolean", default: false },
    ns: { type: "string", default: "lan" },
    help: { type: "boolean", short: "h", default: false }
  }
})

const command = positionals[0]
const rel = (p: string) => path.relative(process.cwd(), p) || "."

function yesNo(flag: string, value: string | undefined): boolean | undefined {
  if (value === undefined) return undefined
  if (value === "yes" || value === "true") return true
  if (value === "no" || value === "false") return false
  throw new Error(`--${flag} takes yes or no, not "${value}"`)
}

function gatewaySettings(): Partial<GatewaySettings> {
  const out: { secureMode?: boolean; enableUpnp?: boolean; enableNatpmp?: boolean; enableIpv6?: boolean } = {}
  const enableIpv6 = yesNo("enable-ipv6", values["enable-ipv6"])
  if (enableIpv6 !== undefined) out.enableIpv6 = enableIpv6
  const secureMode = yesNo("secure-mode", values["secure-mode"])
  const enableUpnp = yesNo("enable-upnp", values["enable-upnp"])
  const enableNatpmp = yesNo("enable-natpmp", values["enable-natpmp"])
  if (secureMode !== undefined) out.secureMode = secureMode
  if (enableUpnp !== undefined) out.enableUpnp = enableUpnp
  if (enableNatpmp !== undefined) out.enableNatpmp = enableNatpmp
  return out
}

function architecture(): Arch {
  if (values.arch === "amd64" || values.arch === "arm64") return values.arch
  throw new Error(`--arch takes amd64 or arm64, not "${values.arch}"`)
}

function waitSeconds(value: string): number {
  const seconds = Number(value)
  if (/^\d+$/.test(value) && seconds <= 86_400) return seconds
  throw new Error(`--wait-real-node takes whole seconds from 0 to 86400, not "${value}"`)
}

/** `in-lab.sh` names itself: the lab is its to end, and one it left up can be taken down. */
function ownerPid(): number | undefined {
  const pid = Number(process.env["EDGE_CCM_LAB_OWNER_PID"])
  return Number.isInteger(pid) && pid > 0 ? pid : undefined
}

function loadNamed(): LabStateFile {
  const file = statePathFor(values.name)
  if (!fs.existsSync(file)) throw new Error(`no lab named "${values.name}" is up (labs: ${listLabs().join(", ") || "none"})`)
  return readState(file)
}

function howToReach(state: LabStateFile): string {
  const ns = state.namespaces
  const cp = state.controlPlane
  const lines = [
    `lab "${state.name}" is up in ${((state.timings["total"] ?? 0) / 1000).toFixed(1)} s` +
    ` (gateway ${((state.timings["gateway"] ?? 0) / 1000).toFixed(1)} s${cp ? `, control plane ${(((state.timings["total"] ?? 0) - (state.timings["gateway"] ?? 0) - (state.timings["realNode"] ?? 0)) / 1000).toFixed(1)} s` : ", no control plane"}` +
    `${state.realNode !== null ? `, real node ${((state.timings["realNode"] ?? 0) / 1000).toFixed(1)} s, images ${((state.timings["images"] ?? 0) / 1000).toFixed(1)} s before` : ""})`,
    "",
    `  ${ns.wan.padEnd(22)} Internet client   ${state.wanClientCidr}`,
    `  ${ns.gw.padEnd(22)} gateway           WAN ${state.gatewayWanCidr}, LAN ${state.gatewayLanCidr}, miniupnpd pid ${state.gateway.process?.pid ?? "-"}`,
    ...state.nodes.map((n) => `  ${n.namespace.padEnd(22)} ${n.name.padEnd(17)} ${n.ip}`),
    `  ${ns.peer.padEnd(22)} another LAN host  ${state.peerIp}`,
    ""
  ]
  if (cp) {
    lines.push(
      `  apiserver ${cp.apiserverUrl} (pid ${cp.apiserver?.pid}), etcd pid ${cp.etcd?.pid}`,
      `  kubeconfig ${rel(cp.kubeconfig)} (admin token), state ${rel(state.statePath)}`,
      ""
    )
    const rn = state.realNode
    if (rn !== null) {
      for (const n of rn.nodes) {
        lines.push(`  real node ${n.name}: pods ${n.podCidr}, containerd pid ${n.containerd?.pid}, kubelet pid ${n.kubelet?.pid}, kube-proxy pid ${n.kubeProxy?.pid}`)
      }
      lines.push(
        `  kube-scheduler pid ${rn.scheduler?.pid}, kube-controller-manager pid ${rn.controllerManager?.pid}; images ${rn.images.map((i) => i.reference).join(", ")}`,
        `  (the only lab with a real node on this machine: ${rn.lockFile})`,
        ""
      )
    }
  } else {
    lines.push(`  state ${rel(state.statePath)}`, "")
  }
  lines.push("Reach it by hand (as root):")
  if (cp) {
    lines.push(`  ip netns exec ${ns.lan} ${cp.kubectlPath} --kubeconfig ${cp.kubeconfig} get svc,nodes`)
    if (state.realNode !== null) lines.push(`  ip netns exec ${ns.lan} ${cp.kubectlPath} --kubeconfig ${cp.kubeconfig} apply -k manifests`)
    lines.push(`  ip netns exec ${ns.lan} ${cp.kubectlPath} --kubeconfig ${cp.kubeconfig} create -f examples/loadbalancers/upnp-igd-http-nginx.yaml`)
  }
  lines.push(
    `  ip netns exec ${ns.lan} upnpc -l`,
    `  ip netns exec ${ns.lan} upnpc -u ${state.rootDescUrl} -e 'kubernetes/default/http-nginx-service/http' -a ${state.nodeIp} 30000 8080 TCP`,
    `  ip netns exec ${ns.lan} natpmpc -g ${state.gatewayLanIp}`,
    `  ip netns exec ${ns.wan} curl http://${state.gatewayWanIp}:8080/`,
    `  ip netns exec ${ns.gw} nft list chain inet nat prerouting_miniupnpd`,
    `  npm run lab -- shell${state.name === "dev" ? "" : ` --name ${state.name}`}      (a shell in ${ns.lan} with KUBECONFIG and kubectl set up)`,
    `  EDGE_CCM_LAB_STATE=${rel(state.statePath)} ...        (what test/e2e/support/lab.ts reads)`,
    `  npm run lab -- down${state.name === "dev" ? "" : ` --name ${state.name}`}`
  )
  return lines.join("\n")
}

/** Environment for a process in the lab: KUBECONFIG, kubectl on PATH, the state file. */
function labEnv(state: LabStateFile): Record<string, string> {
  const cp = state.controlPlane
  const env: Record<string, string> = {
    EDGE_CCM_LAB_STATE: state.statePath,
    PATH: [cp?.binDir, path.join(repoRoot, "node_modules/.bin"), process.env["PATH"]].filter((p) => p).join(":")
  }
  if (cp) env["KUBECONFIG"] = cp.kubeconfig
  return env
}

async function main(): Promise<number> {
  if (values.help || command === undefined) {
    process.stdout.write(usage)
    return command === undefined && !values.help ? 2 : 0
  }
  switch (command) {
    case "up": {
      const nodes = values.nodes === "2" ? 2 : values.nodes === "1" ? 1 : undefined
      if (nodes === undefined) throw new Error("--nodes takes 1 or 2")
      const controller = new AbortController()
      const onSignal = (sig: NodeJS.Signals) => {
        if (controller.signal.aborted) process.exit(130)
        process.stderr.write(`[lab] ${sig}: stopping the start-up and tearing down\n`)
        interrupted = true
        controller.abort()
      }
      process.on("SIGINT", onSignal)
      process.on("SIGTERM", onSignal)
      const state = await up({
        name: values.name,
        controlPlane: !values["no-control-plane"],
        realNode: values["real-node"],
        arch: architecture(),
        nodes,
        gateway: gatewaySettings(),
        keepLogs: values["keep-logs"],
        waitRealNodeSeconds: waitSeconds(values["wait-real-node"]),
        ownerPid: ownerPid(),
        signal: controller.signal,
        ...(values.quiet ? { log: () => {} } : {})
      })
      process.stdout.write(values.json ? `${JSON.stringify(state, null, 2)}\n` : `${howToReach(state)}\n`)
      return 0
    }
    case "images": {
      const binDir = await controlPlaneBinDir()
      const set = await buildImages({ repoRoot, cacheRoot: path.dirname(binDir), arch: architecture(), kubectl: path.join(binDir, "kubectl"), log: (m) => process.stderr.write(`[images] ${m}\n`) })
      for (const image of set.images) process.stdout.write(`${image.role.padEnd(11)} ${image.reference.padEnd(56)} ${image.archive}\n`)
      if (values.size) {
        const controller = set.images.find((i) => i.role === "controller")!
        const size = await compressedSize(set, controller.reference)
        const mb = (bytes: number) => `${(bytes / 1e6).toFixed(2)} MB`
        process.stdout.write(`\n${controller.reference} (linux/${set.arch}), gzip in an OCI layout: ${mb(size.total)} (${size.total} bytes): layers ${size.layers.map(mb).join(", ")}; config ${size.config} bytes\n`)
      }
      if (values["run-help"]) {
        const help = await runHelp(set)
        process.stdout.write(`\n$ ${help.command}\n${help.output}`)
        return help.code
      }
      return 0
    }
    case "down": {
      const names = values.all ? listLabs() : [values.name]
      let problems = 0
      for (const name of names) {
        const found = fs.existsSync(statePathFor(name))
        const left = await down(name, { keepLogs: values["keep-logs"], ...(values.quiet ? { log: () => {} } : {}) })
        for (const p of left) process.stderr.write(`[lab] ${name}: ${p}\n`)
        problems += left.length
        if (!values.quiet) process.stderr.write(`[lab] ${found ? `lab "${name}" is down` : `no lab named "${name}"`}\n`)
      }
      return problems === 0 ? 0 : 1
    }
    case "status": {
      const names = positionals[1] !== undefined ? [positionals[1]] : values.name !== "dev" ? [values.name] : listLabs()
      const statuses = names.filter((n) => fs.existsSync(statePathFor(n))).map(labStatus)
      const unknown = unknownLabNamespaces()
      if (values.json) {
        process.stdout.write(`${JSON.stringify({ labs: statuses, unknownNamespaces: unknown }, null, 2)}\n`)
        return 0
      }
      if (statuses.length === 0) process.stdout.write("no lab is up\n")
      for (const s of statuses) {
        const procs = Object.entries(s.processes).filter(([, p]) => p !== null)
          .map(([n, p]) => `${n} pid ${p?.pid} ${p?.alive ? "running" : "GONE"}`)
        const nss = Object.entries(s.namespaces).map(([n, ok]) => `${n}${ok ? "" : " (MISSING)"}`)
        const gw = s.gatewaySettings
        process.stdout.write([
          `lab "${s.name}": ${s.status}`,
          `  namespaces: ${nss.join(", ")}`,
          `  processes:  ${procs.join(", ") || "none"}`,
          `  gateway:    WAN ${s.gatewayWanIp}, secure_mode=${gw.secureMode ? "yes" : "no"}, enable_upnp=${gw.enableUpnp ? "yes" : "no"}, enable_natpmp=${gw.enableNatpmp ? "yes" : "no"}`,
          `  apiserver:  ${s.apiserverUrl ?? "not started (--no-control-plane)"}`,
          `  state:      ${rel(s.statePath)}`,
          ""
        ].join("\n"))
      }
      if (unknown.length > 0) {
        process.stdout.write(`namespaces named eccm-* that no lab here accounts for: ${unknown.join(", ")}\n`)
      }
      return 0
    }
    case "reboot-gateway": {
      const state = loadNamed()
      await rebootGateway(state)
      process.stdout.write(`miniupnpd restarted with its chains flushed: pid ${state.gateway.process?.pid}\n`)
      return 0
    }
    case "reconfigure-gateway": {
      const state = loadNamed()
      await rebootGateway(state, gatewaySettings())
      const gw = state.gateway.settings
      process.stdout.write(`miniupnpd restarted (pid ${state.gateway.process?.pid}): secure_mode=${gw.secureMode ? "yes" : "no"} enable_upnp=${gw.enableUpnp ? "yes" : "no"} enable_natpmp=${gw.enableNatpmp ? "yes" : "no"}\n`)
      return 0
    }
    case "set-wan-address": {
      const cidr = positionals[1]
      if (cidr === undefined) throw new Error("set-wan-address needs a CIDR, e.g. 10.0.0.2/24")
      const state = loadNamed()
      await setGatewayWanAddress(state, cidr)
      process.stdout.write(`gateway WAN address is now ${state.gatewayWanCidr}\n`)
      return 0
    }
    case "shell":
    case "exec": {
      const state = loadNamed()
      const ns = namespaceOf(state, values.ns)
      const argv = command === "shell" ? [process.env["SHELL"] ?? "bash"] : positionals.slice(1)
      if (argv.length === 0) throw new Error("exec needs a command after --")
      if (command === "shell") process.stderr.write(`[lab] shell in ${ns}; exit to leave\n`)
      const r = spawnSync("ip", ["netns", "exec", ns, ...argv], { stdio: "inherit", env: { ...process.env, ...labEnv(state) } })
      return r.status ?? 1
    }
    case "env": {
      const state = loadNamed()
      for (const [k, v] of Object.entries(labEnv(state))) process.stdout.write(`export ${k}=${JSON.stringify(v)}\n`)
      process.stdout.write(`# namespaces: ${Object.values(state.namespaces).filter((n) => n !== null).join(" ")}\n`)
      return 0
    }
    default:
      process.stderr.write(`unknown command "${command}"\n${usage}`)
      return 2
  }
}

let interrupted = false

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    // A failed start has already reported its step, log tail and teardown; a check before it has not.
    if (!(error instanceof LabStepError && error.reported)) process.stderr.write(`[lab] ${error instanceof Error ? error.message : String(error)}\n`)
    process.exit(interrupted ? 130 : 1)
  }
)
