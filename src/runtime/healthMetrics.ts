/**
 * What /readyz and /healthz no longer say, as gauges on the authenticated /metrics: set from
 * the health report at each scrape, so they are never older than the scrape itself.
 */
import { Effect, Metric } from "effect"
import type { HealthReport } from "./HealthServer.ts"

const gauge = (name: string, description: string) => Metric.gauge(name, { description })

const gauges = {
  ready: gauge("edge_ccm_ready", "1 while /readyz answers 200"),
  healthy: gauge("edge_ccm_healthy", "1 while /healthz answers 200"),
  servicesSynced: gauge("edge_ccm_services_synced", "1 once the Service list has synced (0 while standing by)"),
  initialPassDone: gauge("edge_ccm_initial_pass_done", "1 once the first full pass has run (0 while standing by)"),
  gatewayReachable: gauge("edge_ccm_gateway_reachable", "1 while every router in use answers (0 while standing by)"),
  excludedNode: gauge("edge_ccm_excluded_node", "1 when this node is excluded from external load balancers"),
  queueDepth: gauge("edge_ccm_queue_depth", "Services waiting in the work queue"),
  eventsQueued: gauge("edge_ccm_events_queued", "Events waiting to be sent (they yield to the work)"),
  lastProbe: gauge("edge_ccm_last_gateway_probe_timestamp_seconds", "When the router was last probed (0 while standing by)"),
  lastResync: gauge("edge_ccm_last_resync_timestamp_seconds", "When the last full pass ended (0 while standing by)")
}

const flag = (value: boolean) => (value ? 1 : 0)

/** Sets every health gauge from one report. */
export const publishHealth = (report: HealthReport): Effect.Effect<void> => {
  const { figures } = report
  return Effect.all([
    Metric.update(gauges.ready, flag(report.ready.ok)),
    Metric.update(gauges.healthy, flag(report.live.ok)),
    Metric.update(gauges.servicesSynced, flag(figures.servicesSynced)),
    Metric.update(gauges.initialPassDone, flag(figures.initialPassDone)),
    Metric.update(gauges.gatewayReachable, flag(figures.gatewayReachable)),
    Metric.update(gauges.excludedNode, flag(figures.excludedNode)),
    Metric.update(gauges.queueDepth, figures.queueDepth),
    Metric.update(gauges.eventsQueued, figures.eventsQueued),
    Metric.update(gauges.lastProbe, figures.lastProbeAt / 1000),
    Metric.update(gauges.lastResync, figures.lastResyncAt / 1000)
  ], { discard: true })
}
