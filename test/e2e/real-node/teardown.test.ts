// e2e lab: --no-control-plane
/**
 * `npm run lab -- down` of a lab with two real nodes leaves the machine as it was: no network
 * namespace, mount, link, nftables rule, cgroup, fixed host path, kernel setting or process of
 * it is left. The test brings that lab up itself (`npm run lab -- up --real-node --nodes 2`),
 * runs the walkthrough's workloads on it so that there is something to clean, and compares the
 * machine before and after. It runs in a gateway-only lab of its own (nothing here needs that
 * one but its namespace to run in), and reads the machine's own network and mount namespaces
 * through an ancestor process that lives in them. Then: a real-node lab whose runner was killed
 * before it could tear down is taken down by the next real-node lab, which then starts.
 */
import { spawn } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { type LabStateFile, readState, statePathFor } from "../../../scripts/lab/driver.ts"
import { run, runOk, type RunResult } from "../../../scripts/lab/proc.ts"
import { HOST_PATHS, KUBELET_SYSCTLS, REAL_NODE_LOCK } from "../../../scripts/lab/real-node.ts"
import { waitFor } from "../support/lab.ts"

const root = path.resolve(import.meta.dirname, "../../..")
const NAME = `teardown-${process.pid}`
/** How long another test run's real-node lab is waited for. */
const WAIT_FOR_OTHER_MS = 1_800_000
/** What a real node runs, by executable name. */
const REAL_NODE_PROGRAMS = ["containerd", "containerd-shim-runc-v2", "kubelet", "kube-proxy", "kube-scheduler", "kube-controller-manager", "nginx", "catatonit", "pause"]

/** `npm run lab -- …` as from the machine's own shell (its network and mount namespaces). */
const lab = (args: ReadonlyArray<string>, options: { readonly timeoutMs?: number; readonly env?: Record<string, string> } = {}) => {
  const host = hostProcess()
  return run([
    "nsenter", `--net=/proc/${host}/ns/net`, `--mount=/proc/${host}/ns/mnt`, `--wd=${root}`, "--",
    process.execPath, path.join(root, "scripts/lab/cli.ts"), ...args
  ], { cwd: root, timeoutMs: options.timeoutMs ?? 600_000, env: options.env })
}

/** The nearest ancestor in the machine's own network (and mount) namespace, to look through. */
function hostProcess(): number {
  const own = fs.readlinkSync("/proc/self/ns/net")
  let pid = process.ppid
  while (pid > 1) {
    if (fs.readlinkSync(`/proc/${pid}/ns/net`) !== own) return pid
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    pid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1])
  }
  throw new Error("no ancestor outside the lab's namespace")
}

interface MachineView {
  readonly netns: Array<string>
  readonly mounts: Array<string>
  readonly links: string
  readonly nftables: string
  readonly hostPaths: Record<string, Array<string> | null>
  readonly cgroups: Array<string>
  readonly sysctls: Record<string, string>
  readonly processes: Array<string>
  readonly lock: boolean
}

function listTree(dir: string): Array<string> | null {
  if (!fs.existsSync(dir)) return null
  return (fs.readdirSync(dir, { recursive: true }) as Array<string>).sort()
}

/**
 * The machine as a real node touches it. Other labs (a test run beside this one) come and go
 * meanwhile: their `eccm-*` namespaces and the mounts of those are left out, all else counts.
 */
async function machine(otherLabs: (netns: string) => boolean): Promise<MachineView> {
  const host = hostProcess()
  const hostRoot = `/proc/${host}/root`
  const inHost = (argv: ReadonlyArray<string>) => runOk(["nsenter", `--net=/proc/${host}/ns/net`, "--", ...argv])
  const cgroupRoot = path.join(hostRoot, "sys/fs/cgroup")
  const processes: Array<string> = []
  for (const entry of fs.readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue
    try {
      const exe = path.basename(fs.readlinkSync(`/proc/${entry}/exe`))
      if (REAL_NODE_PROGRAMS.includes(exe)) processes.push(`${exe} ${entry}`)
    } catch {
      // gone, or a kernel thread
    }
  }
  return {
    netns: fs.readdirSync("/run/netns").filter((n) => !otherLabs(n)).sort(),
    mounts: fs.readFileSync(`/proc/${host}/mountinfo`, "utf8").split("\n").map((l) => l.split(" ")[4] ?? "")
      .filter((m) => m !== "" && !(m.startsWith("/run/netns/") && otherLabs(path.basename(m)))).sort(),
    links: (await inHost(["ip", "-o", "link", "show"])).replace(/\\\s+link\/.*$/gm, ""),
    nftables: await inHost(["nft", "list", "ruleset"]),
    hostPaths: Object.fromEntries([...HOST_PATHS, "/etc/cni/net.d"].map((p) => [p, listTree(path.join(hostRoot, p))])),
    cgroups: fs.readdirSync(cgroupRoot).flatMap((h) => {
      const dir = path.join(cgroupRoot, h)
      return fs.statSync(dir).isDirectory() ? fs.readdirSync(dir, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => `${h}/${e.name}`) : []
    }).sort(),
    sysctls: Object.fromEntries(KUBELET_SYSCTLS.map((s) => [s, fs.readFileSync(`/proc/sys/${s}`, "utf8").trim()])),
    processes: processes.sort(),
    lock: fs.existsSync(REAL_NODE_LOCK)
  }
}

describe("teardown of a lab with real nodes", () => {
  it("leaves the machine as it was: namespaces, mounts, links, cgroups, host paths, kernel settings, processes", async () => {
    let prefix = ""
    const otherLabs = (netns: string) => netns.startsWith("eccm-") && (prefix === "" || !netns.startsWith(prefix))
    // A test run beside this one may hold the real node: its lab comes and goes whole, so wait
    // for the machine without one before looking at it.
    await waitFor(() => !fs.existsSync(REAL_NODE_LOCK), {
      description: "no other lab running a real node (the real-node lock free)",
      timeoutMs: WAIT_FOR_OTHER_MS,
      intervalMs: 2_000
    })
    const before = await machine(otherLabs)
    expect(before.processes, "a real node already runs on this machine").toEqual([])

    const upResult = await lab(["up", "--real-node", "--nodes", "2", "--name", NAME, "--json", "--wait-real-node", String(WAIT_FOR_OTHER_MS / 1000)])
    expect(upResult.code, upResult.stderr.slice(-3000)).toBe(0)
    let state: LabStateFile = JSON.parse(upResult.stdout) as LabStateFile
    prefix = state.prefix
    let downResult: RunResult
    try {
      const kubectl = (args: ReadonlyArray<string>) => lab(["exec", "--name", NAME, "--", "kubectl", ...args])
      for (const args of [["apply", "-k", path.join(root, "manifests")], ["create", "-f", path.join(root, "examples/loadbalancers/upnp-igd-http-nginx.yaml")]]) {
        const r = await kubectl(args)
        expect(r.code, r.stderr).toBe(0)
      }
      for (const args of [["rollout", "status", "deployment/http-nginx-deployment", "--timeout=180s"], ["rollout", "status", "-n", "edge-ccm-system", "daemonset/edge-cloud-controller-manager", "--timeout=180s"]]) {
        const r = await kubectl(args)
        expect(r.code, r.stderr).toBe(0)
      }
      state = readState(statePathFor(NAME))
      const during = await machine(otherLabs)
      // What teardown must undo is there: pod namespaces, the lab's own, kubelet's mounts and
      // cgroups, the kernel settings kubelet sets, containerd's shims, the lock.
      expect(during.netns.filter((n) => n.startsWith("cni-")).length).toBeGreaterThanOrEqual(2)
      expect(during.netns.filter((n) => n.startsWith(prefix)).length).toBe(5)
      expect(during.mounts.filter((m) => m.startsWith(`${state.labDir}/`)).length).toBeGreaterThan(0)
      expect(during.cgroups).toContain(`memory/eccm-${NAME}-node-2`)
      expect(during.sysctls["vm/overcommit_memory"]).toBe("1")
      expect(during.processes.filter((p) => p.startsWith("kubelet ")).length).toBe(2)
      expect(during.processes.filter((p) => p.startsWith("containerd-shim-runc-v2 ")).length).toBeGreaterThanOrEqual(4)
      expect(during.hostPaths["/var/log/containers"]?.length).toBeGreaterThan(0)
      expect(during.lock).toBe(true)
    } finally {
      downResult = await lab(["down", "--name", NAME])
    }
    expect(downResult.code, downResult.stderr).toBe(0)
    expect(downResult.stderr).toMatch(/real node down in [\d.]+ s: .*containers on node-1/)
    const after = await machine(otherLabs)
    expect(after).toEqual(before)
    expect(fs.existsSync(state.labDir)).toBe(false)
  }, 900_000 + 2 * WAIT_FOR_OTHER_MS)

  it("a real-node lab whose runner was killed is taken down by the next one, which then starts", async () => {
    await waitFor(() => !fs.existsSync(REAL_NODE_LOCK), {
      description: "no other lab running a real node (the real-node lock free)",
      timeoutMs: WAIT_FOR_OTHER_MS,
      intervalMs: 2_000
    })
    // The runner stands in for in-lab.sh: the lab is its, and it dies without tearing down.
    const runner = spawn("sleep", ["600"], { stdio: "ignore" })
    const orphan = `${NAME}-orphan`
    const taker = `${NAME}-taker`
    try {
      const left = await lab(["up", "--real-node", "--name", orphan, "--json"], {
        env: { EDGE_CCM_LAB_OWNER_PID: String(runner.pid) }
      })
      expect(left.code, left.stderr.slice(-3000)).toBe(0)
      const orphanState = JSON.parse(left.stdout) as LabStateFile
      expect(orphanState.owner?.pid).toBe(runner.pid)
      runner.kill("SIGKILL")
      await waitFor(() => runner.exitCode !== null || runner.signalCode !== null, { description: "the runner gone", timeoutMs: 10_000 })

      const next = await lab(["up", "--real-node", "--name", taker, "--json"])
      expect(next.code, next.stderr.slice(-3000)).toBe(0)
      expect(next.stderr).toContain(`lab "${orphan}" was left up by a run that is gone (pid ${runner.pid}): taking it down`)
      expect(fs.readdirSync("/run/netns").filter((n) => n.startsWith(orphanState.prefix))).toEqual([])
      expect(fs.existsSync(orphanState.labDir)).toBe(false)
      expect(JSON.parse(fs.readFileSync(REAL_NODE_LOCK, "utf8"))).toMatchObject({ lab: taker })
    } finally {
      runner.kill("SIGKILL")
      for (const name of [taker, orphan]) await lab(["down", "--name", name])
    }
    expect(fs.existsSync(REAL_NODE_LOCK)).toBe(false)
  }, 900_000 + WAIT_FOR_OTHER_MS)
})
