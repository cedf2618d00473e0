/** The controller's Prometheus metrics (served on /metrics by the runtime). */
import { Effect, Metric } from "effect"

/** Passes by result. */
export const reconcileTotal = Metric.counter("edge_ccm_reconcile_total", {
  description: "Service reconciliations, by result (success, retry)",
  incremental: true
})

/** Failed passes by error tag. */
export const reconcileErrors = Metric.counter("edge_ccm_reconcile_errors_total", {
  description: "Failed Service reconciliations, by error (its type: GatewayUnreachable, KubeConflict, PortsNotMapped, ...) " +
    "and whether it is retryable without a change on the router or the Service",
  incremental: true
})

/** How long one pass takes. */
export const reconcileDuration = Metric.histogram("edge_ccm_reconcile_duration_seconds", {
  description: "Time to reconcile one Service, router and apiserver calls included",
  boundaries: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
})

/** The cluster's mappings on the router at the last listing (`family` "ipv4": pinholes cannot be listed). */
export const ownedMappings = Metric.gauge("edge_ccm_owned_mappings", {
  description: "Router mappings owned by this cluster, as of the last full listing"
})

/** The mappings (`family` "ipv4") and IPv6 pinholes (`family` "ipv6") the Services ask for. */
export const desiredMappings = Metric.gauge("edge_ccm_desired_mappings", {
  description: "Router mappings the selected Services ask for"
})

/** Ports found held by someone else: IPv4 mappings (`family` "ipv4"), pinholes another Service holds ("ipv6"). */
export const portConflicts = Metric.counter("edge_ccm_port_conflicts_total", {
  description: "Ports found held by someone else (announced once per conflict)",
  incremental: true
})

/** Full passes by result. */
export const fullPasses = Metric.counter("edge_ccm_full_passes_total", {
  description: "Full passes (every router table listed, every Service reconciled), by result (complete, incomplete)",
  incremental: true
})

/** Mappings (`family` "ipv4") and pinholes (`family` "ipv6") found missing and made again. */
export const driftRepairs = Metric.counter("edge_ccm_drift_repairs_total", {
  description: "Mappings found missing on the router and mapped again",
  incremental: true
})

/** Router reboots detected. */
export const gatewayReboots = Metric.counter("edge_ccm_gateway_reboots_total", {
  description: "Router reboots (or lost tables) detected",
  incremental: true
})

/** Whether the router's events are heard (a GENA subscription alive), per router (one per protocol). */
export const eventSubscription = Metric.gauge("edge_ccm_gateway_event_subscription", {
  description: "1 while a UPnP event subscription to the router is alive (its probe then relaxed), 0 while it is probed instead"
})

/** The router's external address, as a labelled gauge. */
export const externalIpInfo = Metric.gauge("edge_ccm_external_ip_info", {
  description: "1 for the router's current external address and its class (public, private, missing)"
})

/** Adds one to a counter, with attributes. */
export const count = (metric: Metric.Metric<number, unknown>, attributes?: Record<string, string>) =>
  Metric.update(attributes === undefined ? metric : Metric.withAttributes(metric, attributes), 1)

/** Moves the external-address gauge from the previous address to the next. */
export const setExternalIp = (previous: { ip: string | undefined; class: string } | undefined, next: { ip: string | undefined; class: string }) =>
  Effect.gen(function*() {
    if (previous !== undefined && (previous.ip !== next.ip || previous.class !== next.class)) {
      yield* Metric.update(Metric.withAttributes(externalIpInfo, { ip: previous.ip ?? "", class: previous.class }), 0)
    }
    yield* Metric.update(Metric.withAttributes(externalIpInfo, { ip: next.ip ?? "", class: next.class }), 1)
  })
