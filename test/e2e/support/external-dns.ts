/**
 * external-dns (built by scripts/lab/build-external-dns.sh) as a real process in the lab's node
 * namespace, watching the lab's apiserver with the least-privilege RBAC of
 * examples/external-dns/rbac.yaml, and the DNS records it holds.
 *
 * Its in-memory provider keeps the zone inside the process; the only view of it from outside is
 * the line the provider logs for every change it applies ("CREATE: <endpoint>", "UPDATE (old)",
 * "UPDATE (new)", "DELETE"). `records()` replays those lines in order, and refuses to answer
 * once external-dns has logged an error, since an apply that failed is logged all the same.
 */
import * as path from "node:path"
import { run } from "../../../scripts/lab/proc.ts"
import {
  createServiceAccountToken,
  ensureNamespace,
  kubeconfigForToken,
  kubectl,
  type LabProcess,
  spawnInNamespace,
  waitFor
} from "./lab.ts"

const root = path.resolve(import.meta.dirname, "../../..")

/** The RBAC external-dns runs under: the same file the documentation shows. */
export const EXTERNAL_DNS_RBAC = path.join(root, "examples/external-dns/rbac.yaml")
/** The namespace of external-dns's ServiceAccount in that file. */
export const EXTERNAL_DNS_NAMESPACE = "external-dns"
/** The ServiceAccount external-dns authenticates as. */
export const EXTERNAL_DNS_SERVICE_ACCOUNT = "external-dns"

/** The cached external-dns binary; throws, saying how to build it, when there is none. */
export async function externalDnsBinary(): Promise<string> {
  const printed = await run(["bash", path.join(root, "scripts/lab/build-external-dns.sh"), "--print-dir"], { cwd: root })
  const binary = path.join(printed.stdout.trim(), "external-dns")
  const version = await run([binary, "--version"], { timeoutMs: 10_000 }).catch(() => undefined)
  if (version?.code !== 0) throw new Error(`no external-dns at ${binary}: run \`bash scripts/lab/build-external-dns.sh\``)
  return binary
}

/** One DNS record as the in-memory provider holds it. */
export interface DnsRecord {
  readonly name: string
  readonly type: string
  readonly ttl: number
  readonly targets: ReadonlyArray<string>
}

/** external-dns running, and the records its in-memory zone holds now. */
export type ExternalDnsProcess = LabProcess & {
  readonly zone: string
  records(): Map<string, DnsRecord>
  /** The record `name`/`type` (e.g. "web.home.example", "A"), or undefined while there is none. */
  record(name: string, type: string): DnsRecord | undefined
}

/** One applied change as the in-memory provider logs it: `<kind>: <name> <ttl> IN <type> <set id> <targets> <provider-specific>`. */
const CHANGE = /^(CREATE|UPDATE \(old\)|UPDATE \(new\)|DELETE): (\S+) (-?\d+) IN (\S+) \S* ?(\S+) /

/** The zone after the provider's logged changes (external-dns --log-format=json), in order. */
export function replayChanges(log: string): Map<string, DnsRecord> {
  const zone = new Map<string, DnsRecord>()
  // The last piece is empty, or a line still being written.
  for (const line of log.split("\n").slice(0, -1)) {
    if (!line.startsWith("{")) continue
    const entry = JSON.parse(line) as { level?: string; msg?: string }
    if (entry.level === "error" || entry.level === "fatal") {
      throw new Error(`external-dns logged an error, its zone is unknown: ${entry.msg}`)
    }
    const change = CHANGE.exec(entry.msg ?? "")
    if (change === null) continue
    const [, kind, name, ttl, type, targets] = change
    const key = `${name} ${type}`
    if (kind === "DELETE" || kind === "UPDATE (old)") zone.delete(key)
    else zone.set(key, { name: name!, type: type!, ttl: Number(ttl), targets: targets!.split(";") })
  }
  return zone
}

/**
 * Applies examples/external-dns/rbac.yaml, then starts external-dns with the `service` source
 * (LoadBalancer Services only) and the in-memory provider for `zone`, authenticated as that
 * ServiceAccount, synchronizing every `interval` and 5 s after a Service change it hears of
 * (--events), and waits until its first synchronization has run.
 */
export async function startExternalDns(options: {
  readonly zone: string
  readonly interval?: string
  readonly flags?: ReadonlyArray<string>
}): Promise<ExternalDnsProcess> {
  const binary = await externalDnsBinary()
  await ensureNamespace(EXTERNAL_DNS_NAMESPACE)
  const applied = await kubectl(["apply", "-f", EXTERNAL_DNS_RBAC])
  if (applied.code !== 0) throw new Error(`kubectl apply ${EXTERNAL_DNS_RBAC}: ${applied.stderr}`)
  const token = await createServiceAccountToken(EXTERNAL_DNS_NAMESPACE, EXTERNAL_DNS_SERVICE_ACCOUNT, {
    expirationSeconds: 3600
  })
  const proc = spawnInNamespace("lan", [
    binary,
    "--kubeconfig", kubeconfigForToken(token, { user: "external-dns" }),
    "--source=service",
    "--service-type-filter=LoadBalancer",
    "--provider=inmemory",
    `--inmemory-zone=${options.zone}`,
    `--domain-filter=${options.zone}`,
    "--policy=sync",
    "--registry=txt",
    "--txt-owner-id=edge-lab",
    `--interval=${options.interval ?? "1m"}`,
    "--events",
    "--metrics-address=127.0.0.1:7979",
    "--log-format=json",
    ...(options.flags ?? [])
  ])
  let exited = false
  void proc.exited.then(() => {
    exited = true
  })
  try {
    // Its first pass reads every Service and the (empty) zone, and says what it found.
    await waitFor(() => {
      if (exited) throw new Error("external-dns exited")
      return /All records are already up to date|CREATE: /.test(proc.stderr())
    }, { description: "external-dns's first synchronization", timeoutMs: 30_000 })
  } catch (error) {
    await proc.stop({ signal: "SIGKILL" })
    throw new Error(`${(error as Error).message}\nexternal-dns output:\n${proc.output().slice(-3000)}`)
  }
  // logrus writes every line to stderr.
  const records = () => replayChanges(proc.stderr())
  return Object.assign(proc, {
    zone: options.zone,
    records,
    record: (name: string, type: string) => records().get(`${name} ${type}`)
  })
}
