/**
 * The health report from what the controller says of itself: pure, so each verdict and the
 * words that name it are tested with plain data.
 */
import type { ControllerHealth } from "../controller/Controller.ts"
import type { HealthFigures, HealthReport, ProbeVerdict } from "./HealthServer.ts"

const idle: HealthFigures = {
  servicesSynced: false,
  initialPassDone: false,
  gatewayReachable: false,
  excludedNode: false,
  queueDepth: 0,
  eventsQueued: 0,
  lastProbeAt: 0,
  lastResyncAt: 0
}

const alive: ProbeVerdict = { ok: true, because: [], detail: "" }

/**
 * No controller runs: it is being built (`leading`), the Lease has not been read yet (`holder`
 * undefined), or another replica holds it. A standby is ready: it is doing its job, which is
 * waiting.
 */
export const waitingReport = (options: { readonly leading: boolean; readonly holder: string | undefined }): HealthReport => ({
  live: alive,
  ready: options.leading || options.holder === undefined
    ? { ok: false, because: ["starting"], detail: options.leading ? "starting" : "starting (the leader Lease not read yet)" }
    : { ok: true, because: ["standby"], detail: `standing by (leader: ${options.holder === "" ? "none" : options.holder})` },
  figures: idle
})

/**
 * Live while the probe loop and the full passes have made progress within `stuckAfter` ms;
 * ready once the Services are synced, the first pass done and every router in use answers, on
 * a node not excluded from external load balancers.
 */
export const controllerReport = (
  health: ControllerHealth,
  options: { readonly now: number; readonly stuckAfter: number }
): HealthReport => {
  const silentFor = (since: number) => options.now - since
  const stalled = [
    ...(silentFor(health.lastProbeAt) >= options.stuckAfter
      ? [`no router probe for ${Math.round(silentFor(health.lastProbeAt) / 1000)} s`]
      : []),
    ...(silentFor(health.lastResyncAt) >= options.stuckAfter
      ? [`no full pass for ${Math.round(silentFor(health.lastResyncAt) / 1000)} s`]
      : [])
  ]
  const waiting: ReadonlyArray<{ readonly word: string; readonly detail: string }> = [
    ...(health.servicesSynced ? [] : [{ word: "Services not synced", detail: "Services not synced" }]),
    ...(health.initialPassDone ? [] : [{ word: "first pass not done", detail: "first pass not done" }]),
    ...(health.gatewayReachable
      ? []
      : [{ word: "gateway unreachable", detail: `gateway unreachable (${health.gatewayError ?? "no answer"})` }]),
    ...(health.excluded ? [{ word: "node excluded", detail: "this node is excluded from external load balancers" }] : [])
  ]
  return {
    live: stalled.length === 0
      ? alive
      : { ok: false, because: ["loops stalled"], detail: `loops stalled: ${stalled.join(", ")}` },
    ready: {
      ok: waiting.length === 0,
      because: waiting.map((reason) => reason.word),
      detail: waiting.map((reason) => reason.detail).join(", ")
    },
    figures: {
      servicesSynced: health.servicesSynced,
      initialPassDone: health.initialPassDone,
      gatewayReachable: health.gatewayReachable,
      excludedNode: health.excluded,
      queueDepth: health.queueDepth,
      eventsQueued: health.eventsQueued,
      lastProbeAt: health.lastProbeAt,
      lastResyncAt: health.lastResyncAt
    }
  }
}
