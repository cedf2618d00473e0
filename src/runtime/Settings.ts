/**
 * Every setting of `edge-ccm run`: a flag, or the environment variable EDGE_CCM_<FLAG> (the
 * flag wins), or the default. Durations read as `30s`, `1h`, `1h30m`.
 */
import { Config, Duration, Option, Result, Schema } from "effect"
import { Flag } from "effect/cli"
import { NetAddress } from "effect/net"
import {
  defaultLeaseRange,
  describeLeaseRange,
  DurationString,
  formatDuration,
  type LeaseRange,
  leaseOutOfRange
} from "../controller/DurationString.ts"

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

/** An optional address flag of one family, refused with an example when it is not one. */
const address = (name: string, description: string, family: "IPv4" | "IPv6") =>
  text(name, description).pipe(
    Flag.withSchema(Schema.String.check(Schema.makeFilter((value: string) =>
      (family === "IPv4" ? Result.isSuccess(NetAddress.ipv4FromString(value)) : Result.isSuccess(NetAddress.ipv6FromString(value)))
        ? undefined
        : `an ${family} address, e.g. ${family === "IPv4" ? "192.168.1.1" : "2001:db8:2::1"}`
    ))),
    Flag.optional
  )

const boolean = (name: string, description: string, fallback = false) =>
  Flag.Boolean(name).pipe(
    Flag.withDescription(`${description} (default ${fallback}) [env ${environmentName(name)}]`),
    Flag.withFallbackConfig(Config.Boolean(environmentName(name))),
    Flag.withDefault(fallback)
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

/** The flags of `edge-ccm run`. */
export const runFlags = {
  kubeconfig: optionalText("kubeconfig", "kubeconfig file; default: in-cluster, then $KUBECONFIG / ~/.kube/config"),
  clusterName: text("cluster-name", "first part of every mapping description (default kubernetes)").pipe(
    Flag.withDefault("kubernetes"),
    Flag.withSchema(Schema.String.check(Schema.isPattern(/^[A-Za-z0-9][A-Za-z0-9._-]{0,30}$/, {
      message: "a cluster name is 1-31 letters, digits, '.', '_' or '-'"
    })))
  ),
  gatewayUrl: optionalText("gateway-url", "the router's root description URL; skips SSDP discovery"),
  gatewayAddress: address(
    "gateway-address",
    "IPv4 address of the router to use (UPnP IGD, NAT-PMP, PCP); default: the node's default gateway, and no other LAN host",
    "IPv4"
  ),
  firewallUrl: optionalText(
    "firewall-url",
    "the router's WANIPv6FirewallControl:1 control URL on its IPv6 address, e.g. http://[2001:db8:2::1]:49536/ctl/IP6FCtl; " +
      "default: the firewall service of the --gateway-url description"
  ),
  gatewayAddress6: address(
    "gateway-address6",
    "the router's IPv6 address, when --gateway-url is an IPv4 URL: pinholes are asked for over IPv6",
    "IPv6"
  ),
  pinholeLease: duration("pinhole-lease", "lease of each IPv6 pinhole, 1s to 1d, renewed at half", "10m"),
  pinholeProtocol: choice(
    "pinhole-protocol",
    ["auto", "upnp-igd", "pcp"],
    "what opens IPv6 pinholes: auto is UPnP IGD:2, and PCP over IPv6 for the ports below 1024 or when UPnP has no firewall",
    "auto"
  ),
  ipv6AllowLinkLocal: boolean("ipv6-allow-link-local", "publish a link-local node address when it is the only one toward the router"),
  ipv6AllowUniqueLocal: boolean(
    "ipv6-allow-unique-local",
    "publish a unique-local (fc00::/7) node address when it is the only one toward the router"
  ),
  mappingLease: duration("mapping-lease", "lease of each router mapping; 0 asks for a permanent one", "1h"),
  minMappingLease: duration(
    "min-mapping-lease",
    "shortest lease the midokura.com/mapping-lease annotation may ask for",
    formatDuration(defaultLeaseRange.min)
  ),
  maxMappingLease: duration(
    "max-mapping-lease",
    "longest lease the midokura.com/mapping-lease annotation may ask for",
    formatDuration(defaultLeaseRange.max)
  ),
  maxMappingsPerNamespace: Flag.Int("max-mappings-per-namespace").pipe(
    Flag.withDescription(
      `router entries (IPv4 mappings and IPv6 pinholes) the Services of one namespace may hold together; 0: no limit (default 256) [env ${
        environmentName("max-mappings-per-namespace")
      }]`
    ),
    Flag.withFallbackConfig(Config.Int(environmentName("max-mappings-per-namespace"))),
    Flag.withDefault(256),
    Flag.withSchema(Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 131_070 })))
  ),
  resyncInterval: duration("resync-interval", "how often every mapping is verified against the router", "30s"),
  gatewayProbeInterval: duration("gateway-probe-interval", "how often the router's uptime is read to notice a reboot", "2s"),
  gatewayProbeIntervalSubscribed: duration(
    "gateway-probe-interval-subscribed",
    "the probe interval while the router's UPnP events are heard (its NOTIFYs then tell of a new address)",
    "30s"
  ),
  upnpEvents: boolean(
    "upnp-events",
    "subscribe to the UPnP router's events (GENA) to hear of a new external address at once; --upnp-events=false: probe only",
    true
  ),
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
  leaderElect: boolean("leader-elect", "run only while holding the leader Lease, so one of several replicas maps"),
  leaderElectNamespace: text("leader-elect-namespace", "namespace of the leader Lease [or env POD_NAMESPACE]").pipe(
    Flag.withFallbackConfig(Config.String("POD_NAMESPACE")),
    Flag.withDefault("edge-ccm-system")
  ),
  leaderElectLeaseDuration: duration("leader-elect-lease-duration", "how long a leader's Lease stays valid", "15s"),
  leaderElectRenewDeadline: duration("leader-elect-renew-deadline", "how long a leader retries renewing before it stops", "10s"),
  leaderElectRetryPeriod: duration("leader-elect-retry-period", "pause between attempts to acquire or renew", "2s")
}

/** What `edge-ccm run` runs with, once its flags are read. */
export interface RunSettings {
  readonly kubeconfig: string | undefined
  readonly clusterName: string
  readonly gatewayUrl: string | undefined
  /** The only router used (`--gateway-address`); undefined: the node's default gateway. */
  readonly gatewayAddress: string | undefined
  readonly mappingLease: Duration.Duration
  /** IPv6 pinholes: where the firewall is, their lease, which node addresses may be published. */
  readonly ipv6: {
    readonly firewallUrl: string | undefined
    readonly routerAddress: string | undefined
    readonly pinholeLease: Duration.Duration
    readonly pinholeProtocol: "auto" | "upnp-igd" | "pcp"
    readonly allowLinkLocal: boolean
    readonly allowUniqueLocal: boolean
  }
  /** The leases an annotation may ask for (besides 0). */
  readonly leaseRange: LeaseRange
  readonly maxMappingsPerNamespace: number
  /** The controller's own namespace: the leader Lease and the record key Secret live there. */
  readonly controllerNamespace: string
  readonly resyncInterval: Duration.Duration
  readonly gatewayProbeInterval: Duration.Duration
  /** The probe interval while the router's events are heard. */
  readonly gatewayProbeIntervalSubscribed: Duration.Duration
  /** Whether to subscribe to the UPnP router's events. */
  readonly upnpEvents: boolean
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

/** The settings the parsed flags say. */
export const toRunSettings = (flags: ParsedFlags): RunSettings => ({
  kubeconfig: Option.getOrUndefined(flags.kubeconfig),
  clusterName: flags.clusterName,
  gatewayUrl: Option.getOrUndefined(flags.gatewayUrl),
  gatewayAddress: Option.getOrUndefined(flags.gatewayAddress),
  mappingLease: flags.mappingLease,
  ipv6: {
    firewallUrl: Option.getOrUndefined(flags.firewallUrl),
    routerAddress: Option.getOrUndefined(flags.gatewayAddress6),
    pinholeLease: flags.pinholeLease,
    pinholeProtocol: flags.pinholeProtocol,
    allowLinkLocal: flags.ipv6AllowLinkLocal,
    allowUniqueLocal: flags.ipv6AllowUniqueLocal
  },
  leaseRange: { min: flags.minMappingLease, max: flags.maxMappingLease },
  maxMappingsPerNamespace: flags.maxMappingsPerNamespace,
  controllerNamespace: flags.leaderElectNamespace,
  resyncInterval: flags.resyncInterval,
  gatewayProbeInterval: flags.gatewayProbeInterval,
  gatewayProbeIntervalSubscribed: flags.gatewayProbeIntervalSubscribed,
  upnpEvents: flags.upnpEvents,
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

/** What is wrong with settings that each read well alone, or undefined. */
export const settingsProblem = (settings: RunSettings): string | undefined => {
  const { leaseRange, mappingLease } = settings
  if (Duration.isGreaterThan(leaseRange.min, leaseRange.max)) {
    return `--min-mapping-lease ${formatDuration(leaseRange.min)} is longer than --max-mapping-lease ${
      formatDuration(leaseRange.max)
    }`
  }
  const pinholeSeconds = Duration.toSeconds(settings.ipv6.pinholeLease)
  if (!Number.isInteger(pinholeSeconds) || pinholeSeconds < 1 || pinholeSeconds > 86_400) {
    return `--pinhole-lease ${formatDuration(settings.ipv6.pinholeLease)} is not 1s to 1d in whole seconds (the router's bounds)`
  }
  const outOfRange = leaseOutOfRange(mappingLease, leaseRange)
  return outOfRange === undefined
    ? undefined
    : `--mapping-lease ${formatDuration(mappingLease)} is ${outOfRange}: a lease is ${describeLeaseRange(leaseRange)}`
}

/** Splits `host:port` (host may be empty, meaning every interface). */
export const parseBindAddress = (address: string): BindAddress => {
  const separator = address.lastIndexOf(":")
  const host = address.slice(0, separator).replace(/^\[|\]$/g, "")
  return { host: host === "" ? "0.0.0.0" : host, port: Number(address.slice(separator + 1)) }
}
