/**
 * Every setting of `edge-ccm run`: a flag, or the environment variable EDGE_CCM_<FLAG> (the
 * flag wins), or the default. Durations read as `30s`, `1h`, `1h30m`.
 */
import { Config, Duration, Option, Schema } from "effect"
import { Flag } from "effect/cli"
import { DurationString } from "../controller/DurationString.ts"

/** `--gateway-probe-interval` reads `EDGE_CCM_GATEWAY_PROBE_INTERVAL` from the environment. */
export const environmentName = (flag: string): string => `EDGE_CCM_${flag.toUpperCase().replace(/-/g, "_")}`

const text = (name: string, description: string) =>
  Flag.String(name).pipe(
    Flag.withDescription(`${description} [env ${environmentName(name)}]`),
    Flag.withFallbackConfig(Config.String(environmentName(name)))
  )

const optionalText = (name: string, description: string) => text(name, description).pipe(Flag.optional)

const duration = (name: string, description: string, fallback: string) =>
  text(name, `${description} (default ${fallback})`).pipe(
    Flag.withDefault(fallback),
    Flag.withSchema(DurationString)
  )

const integer = (name: string, description: string, fallback: number) =>
  Flag.Int(name).pipe(
    Flag.withDescription(`${description} (default ${fallback}) [env ${environmentName(name)}]`),
    Flag.withFallbackConfig(Config.Int(environmentName(name))),
    Flag.withDefault(fallback),
    Flag.withSchema(Schema.Int.check(Schema.isBetween({ minimum: 1, maximum: 1000 })))
  )

const choice = <const Values extends ReadonlyArray<string>>(
  name: string,
  values: Values,
  description: string,
  fallback: Values[number]
) =>
  Flag.Literals(name, values).pipe(
    Flag.withDescription(`${description} (default ${fallback}) [env ${environmentName(name)}]`),
    Flag.withFallbackConfig(Config.Literals(values, environmentName(name))),
    Flag.withDefault(fallback)
  )

/** Where a server listens. */
export interface BindAddress {
  readonly host: string
  readonly port: number
}

const bindAddressPattern = /^(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]|[a-z0-9.-]*):\d{1,5}$/

/** host:port, e.g. `0.0.0.0:10258` or `:10258`. */
const BindAddressText = Schema.String.check(
  Schema.isPattern(bindAddressPattern, { message: "a bind address is host:port, e.g. 0.0.0.0:10258" })
)

/** host:port, or `0` for "do not serve" (controller-runtime's convention for its metrics). */
const OptionalBindAddressText = Schema.String.check(
  Schema.isPattern(new RegExp(`^0$|${bindAddressPattern.source}`), {
    message: "a bind address is host:port, e.g. 0.0.0.0:10259, or 0 to serve nothing"
  })
)

export const runFlags = {
  kubeconfig: optionalText("kubeconfig", "kubeconfig file; default: in-cluster, then $KUBECONFIG / ~/.kube/config"),
  clusterName: text("cluster-name", "first part of every mapping description (default kubernetes)").pipe(
    Flag.withDefault("kubernetes"),
    Flag.withSchema(Schema.String.check(Schema.isPattern(/^[A-Za-z0-9][A-Za-z0-9._-]{0,30}$/, {
      message: "a cluster name is 1-31 letters, digits, '.', '_' or '-'"
    })))
  ),
  gatewayUrl: optionalText("gateway-url", "the router's root description URL; skips SSDP discovery"),
  mappingLease: duration("mapping-lease", "lease of each router mapping; 0 asks for a permanent one", "1h"),
  resyncInterval: duration("resync-interval", "how often every mapping is verified against the router", "30s"),
  gatewayProbeInterval: duration("gateway-probe-interval", "how often the router's uptime is read to notice a reboot", "2s"),
  gatewayConcurrency: integer("gateway-concurrency", "router calls in flight at once", 4),
  loadBalancerClass: text("load-balancer-class", "spec.loadBalancerClass handled besides the annotation (default midokura.com/edge)")
    .pipe(Flag.withDefault("midokura.com/edge")),
  ipMode: choice("ip-mode", ["unset", "VIP", "Proxy"], "status.loadBalancer.ingress[].ipMode to publish", "unset"),
  nodeName: text("node-name", "the Node this runs on [or env NODE_NAME]").pipe(
    Flag.withFallbackConfig(Config.String("NODE_NAME")),
    Flag.optional
  ),
  healthBindAddress: text("health-bind-address", "where /healthz and /readyz listen (default 0.0.0.0:10258)").pipe(
    Flag.withDefault("0.0.0.0:10258"),
    Flag.withSchema(BindAddressText)
  ),
  metricsBindAddress: text(
    "metrics-bind-address",
    "where /metrics listens: HTTPS with the cluster's authentication and RBAC, plain HTTP on a loopback address, " +
      "0 for nowhere (default 0.0.0.0:10259)"
  ).pipe(
    Flag.withDefault("0.0.0.0:10259"),
    Flag.withSchema(OptionalBindAddressText)
  ),
  metricsCertDir: optionalText(
    "metrics-cert-dir",
    "directory holding tls.crt and tls.key for /metrics (re-read when they change); default: a self-signed certificate"
  ),
  logFormat: choice("log-format", ["json", "text"], "json for collectors, text for terminals", "json"),
  autoPreference: text(
    "auto-preference",
    "protocols `auto` tries, in order (default upnp-igd,pcp,nat-pmp; one entry pins it)"
  ).pipe(
    Flag.withDefault("upnp-igd,pcp,nat-pmp"),
    Flag.withSchema(Schema.String.check(Schema.isPattern(/^(upnp-igd|pcp|nat-pmp)(,(upnp-igd|pcp|nat-pmp))*$/, {
      message: "a comma-separated list of upnp-igd, pcp and nat-pmp, e.g. pcp,nat-pmp"
    })))
  ),
  leaderElect: Flag.Boolean("leader-elect").pipe(
    Flag.withDescription(
      `run only while holding the leader Lease, so one of several replicas maps (default false) [env ${
        environmentName("leader-elect")
      }]`
    ),
    Flag.withFallbackConfig(Config.Boolean(environmentName("leader-elect"))),
    Flag.withDefault(false)
  ),
  leaderElectNamespace: text("leader-elect-namespace", "namespace of the leader Lease [or env POD_NAMESPACE]").pipe(
    Flag.withFallbackConfig(Config.String("POD_NAMESPACE")),
    Flag.withDefault("edge-ccm-system")
  ),
  leaderElectLeaseDuration: duration("leader-elect-lease-duration", "how long a leader's Lease stays valid", "15s"),
  leaderElectRenewDeadline: duration("leader-elect-renew-deadline", "how long a leader retries renewing before it stops", "10s"),
  leaderElectRetryPeriod: duration("leader-elect-retry-period", "pause between attempts to acquire or renew", "2s")
}

export interface RunSettings {
  readonly kubeconfig: string | undefined
  readonly clusterName: string
  readonly gatewayUrl: string | undefined
  readonly mappingLease: Duration.Duration
  readonly resyncInterval: Duration.Duration
  readonly gatewayProbeInterval: Duration.Duration
  readonly gatewayConcurrency: number
  readonly loadBalancerClass: string
  readonly ipMode: "VIP" | "Proxy" | undefined
  readonly nodeName: string | undefined
  readonly healthBindAddress: string
  /** `undefined`: /metrics is not served. */
  readonly metricsBindAddress: string | undefined
  readonly metricsCertDir: string | undefined
  readonly logFormat: "json" | "text"
  readonly autoPreference: ReadonlyArray<"upnp-igd" | "pcp" | "nat-pmp">
  readonly leaderElection:
    | {
      readonly namespace: string
      readonly leaseDuration: Duration.Duration
      readonly renewDeadline: Duration.Duration
      readonly retryPeriod: Duration.Duration
    }
    | undefined
}

type ParsedFlags = {
  readonly [K in keyof typeof runFlags]: typeof runFlags[K] extends Flag.Flag<infer A> ? A : never
}

export const toRunSettings = (flags: ParsedFlags): RunSettings => ({
  kubeconfig: Option.getOrUndefined(flags.kubeconfig),
  clusterName: flags.clusterName,
  gatewayUrl: Option.getOrUndefined(flags.gatewayUrl),
  mappingLease: flags.mappingLease,
  resyncInterval: flags.resyncInterval,
  gatewayProbeInterval: flags.gatewayProbeInterval,
  gatewayConcurrency: flags.gatewayConcurrency,
  loadBalancerClass: flags.loadBalancerClass,
  ipMode: flags.ipMode === "unset" ? undefined : flags.ipMode,
  nodeName: Option.getOrUndefined(flags.nodeName),
  healthBindAddress: flags.healthBindAddress,
  metricsBindAddress: flags.metricsBindAddress === "0" ? undefined : flags.metricsBindAddress,
  metricsCertDir: Option.getOrUndefined(flags.metricsCertDir),
  logFormat: flags.logFormat,
  autoPreference: flags.autoPreference.split(",") as Array<"upnp-igd" | "pcp" | "nat-pmp">,
  leaderElection: flags.leaderElect
    ? {
      namespace: flags.leaderElectNamespace,
      leaseDuration: flags.leaderElectLeaseDuration,
      renewDeadline: flags.leaderElectRenewDeadline,
      retryPeriod: flags.leaderElectRetryPeriod
    }
    : undefined
})

/** Splits `host:port` (host may be empty, meaning every interface). */
export const parseBindAddress = (address: string): BindAddress => {
  const separator = address.lastIndexOf(":")
  const host = address.slice(0, separator).replace(/^\[|\]$/g, "")
  return { host: host === "" ? "0.0.0.0" : host, port: Number(address.slice(separator + 1)) }
}
