/**
 * One pass over a live Service, as plain data: `planEnsure` says everything the pass will do
 * before it does anything (the metadata write with the record and the finalizer, then the
 * router steps, and which recorded entries of another router go), `recordAfter` and `conclude`
 * say what the step results mean (the record left, the status to write, the Events to send, the
 * requeue). Pure: the reconciler (apply.ts) only carries the plan out.
 */
import { Duration } from "effect"
import type { Announcement } from "./Announcer.ts"
import { describePorts, doubleNatNote, portConditions } from "./conditions.ts"
import { PortsNotMapped } from "./errorPolicy.ts"
import type { StepResults } from "./executor.ts"
import { portKey, type ReadRecord, type RecordedMapping } from "./MappingRecord.ts"
import {
  type Claims,
  type GatewayView,
  type ObservedTable,
  type Ownership,
  planService,
  sameRecord,
  type ServicePlan,
  type Step
} from "./planner.ts"
import type { DesiredService } from "./ServiceSpec.ts"
import type { PinholeResult } from "./pinholes.ts"
import { type LoadBalancerStatus, type PortOutcome, sameStatus, serviceStatus } from "./status.ts"
import type { LoadBalancerStatus as KubeLoadBalancerStatus } from "../kube/objects.ts"

/** What a pass over a live Service knows before it changes anything. */
export interface EnsureInputs {
  readonly desired: DesiredService
  readonly gateway: GatewayView
  /** The router's backend: the record's entries of other backends are removed through theirs. */
  readonly backend: string
  readonly record: ReadRecord
  /** The Service carries our finalizer. */
  readonly finalized: boolean
  readonly claims: Claims
  readonly observed: ObservedTable
  readonly ownership: Ownership
  /** The namespace's quota, for the over-quota ports' message. */
  readonly quota: number
  /** Where the router deletes by internal port: another Service forwarding to it, if any. */
  readonly internalPortHolder: ((internalPortKey: string) => string | undefined) | undefined
}

/** Everything a pass over a live Service will do, before it does it. */
export interface EnsurePlan {
  readonly inputs: EnsureInputs
  readonly service: ServicePlan
  /** This router's part of the record once the metadata write is done (PCP nonces drawn). */
  readonly record: ReadonlyArray<RecordedMapping>
  /** Recorded entries of another router (the Service's type changed): removed through that one. */
  readonly elsewhere: ReadonlyArray<RecordedMapping>
  /** Written before any router call: the record, with our finalizer. Undefined when the Service holds both. */
  readonly metadata: { readonly record: ReadonlyArray<RecordedMapping>; readonly announce: Announcement | undefined } | undefined
  readonly steps: ReadonlyArray<Step>
}

/** Plans a pass over a live Service. PCP nonces are drawn afterwards (`withRecord`), by the router. */
export const planEnsure = (inputs: EnsureInputs): EnsurePlan => {
  const full = inputs.record.trusted
  const record = full.filter((mapping) => mapping.backend === inputs.backend)
  const service = planService({
    service: inputs.desired,
    claims: inputs.claims,
    record,
    observed: inputs.observed,
    gateway: inputs.gateway,
    ownership: inputs.ownership,
    quota: inputs.quota,
    internalPortHolder: inputs.internalPortHolder
  })
  const elsewhere = full.filter((mapping) => mapping.backend !== inputs.backend)
  return withRecord({ inputs, service, record: [], elsewhere, metadata: undefined, steps: service.steps }, service.recordBefore ?? record)
}

/** The plan with this router's part of the record as it will be written (nonces drawn). */
export const withRecord = (plan: EnsurePlan, record: ReadonlyArray<RecordedMapping>): EnsurePlan => {
  const { inputs } = plan
  const written = [...record, ...plan.elsewhere]
  // The record and finalizer go first: whatever happens next, cleanup knows what to undo.
  const needed = !sameRecord(written, inputs.record.trusted) || !inputs.finalized || inputs.record.stale
  return {
    ...plan,
    record,
    metadata: needed
      ? {
        record: written,
        announce: inputs.finalized ? undefined : {
          type: "Normal",
          reason: "EnsuringLoadBalancer",
          action: "Ensure",
          note: `mapping ${describePorts(inputs.claims.granted)} on ${inputs.gateway.router}`
        }
      }
      : undefined
  }
}

/**
 * The record once the steps are done: it keeps what is, or may be, ours on the router (a failed
 * add may have landed); only what was deleted, or found gone, leaves it. Undefined when it is
 * the record already written.
 */
export const recordAfter = (plan: EnsurePlan, results: StepResults): ReadonlyArray<RecordedMapping> | undefined => {
  const removed = new Set([...plan.service.forgotten, ...results.removed].map((m) => `${m.backend}:${portKey(m)}`))
  const now = [...plan.record, ...plan.elsewhere]
  const after = now.filter((m) => !removed.has(`${m.backend}:${portKey(m)}`))
  return sameRecord(after, now) ? undefined : after
}

/** What the step results mean for the Service. */
export interface Conclusion {
  /** The status to write; undefined when the Service shows it already, or must keep what it shows. */
  readonly status: LoadBalancerStatus | undefined
  /** Standing conditions, announced on transitions. */
  readonly conditions: ReadonlyArray<Announcement>
  /** One-off Events, sent once the status is written. */
  readonly events: ReadonlyArray<Announcement>
  /** Why the pass must be tried again, if it must. */
  readonly failure: PortsNotMapped | undefined
  /** When to renew the mappings, if sooner than the next resync. */
  readonly renewAfter: Duration.Duration | undefined
}

/** Concludes a pass from its results and the Service as it now stands. */
export const conclude = (
  plan: EnsurePlan,
  results: StepResults,
  current: { readonly status: KubeLoadBalancerStatus | undefined; readonly localTrafficWarning: string | undefined },
  options: { readonly ipMode: "VIP" | "Proxy" | undefined; readonly resyncInterval: Duration.Duration },
  noticed: ReadonlyArray<Announcement>,
  ipv6?: PinholeResult | undefined
): Conclusion => {
  const { desired, gateway } = plan.inputs
  const outcomes: ReadonlyArray<PortOutcome> = [
    ...plan.service.inPlace.map((port): PortOutcome => ({ _tag: "Mapped", port })),
    ...results.outcomes,
    ...plan.service.blocked.map((port): PortOutcome => ({ _tag: "Failed", port, reason: "DoubleNAT", message: doubleNatNote(gateway) }))
  ]
  const conditions: Array<Announcement> = [...noticed, ...portConditions(outcomes, desired), ...(ipv6?.conditions ?? [])]
  if (current.localTrafficWarning !== undefined) {
    conditions.push({ type: "Warning", reason: "NoLocalEndpoints", action: "Ensure", note: current.localTrafficWarning })
  }
  const repaired: Array<Announcement> = results.repaired.length === 0 ? [...(ipv6?.events ?? [])] : [...(ipv6?.events ?? []), {
    type: "Normal",
    reason: "MappingRepaired",
    action: "Map",
    note: `${describePorts(results.repaired)} ${results.repaired.length === 1 ? "was" : "were"} missing on ${gateway.router} ` +
      `and ${results.repaired.length === 1 ? "has" : "have"} been mapped again`
  }]
  const unreachable = outcomes.find((o) => o._tag === "Failed" && o.reason === "GatewayUnreachable")
  if (unreachable !== undefined && unreachable._tag === "Failed") {
    // The mappings may well still work: keep the published status and try again soon.
    return {
      status: undefined,
      conditions,
      events: repaired,
      failure: new PortsNotMapped({ reason: unreachable.message, retryable: true }),
      renewAfter: undefined
    }
  }

  const ipv4Status = serviceStatus(outcomes, desired.unmappable, gateway.externalAddress, options.ipMode)
  // The node's IPv6 address after the router's IPv4 one: kube-proxy serves the Service on both.
  const status = ipv6?.ingress === undefined ? ipv4Status : {
    ingress: [...ipv4Status.ingress, { ip: ipv6.ingress.ip, ...(options.ipMode === undefined ? {} : { ipMode: options.ipMode }), ports: ipv6.ingress.ports }]
  }
  const changed = !sameStatus(current.status, status)
  const events = [...repaired]
  const ip = ipv4Status.ingress[0]?.ip
  const previousIp = current.status?.ingress?.find((ingress) => !(ingress.ip ?? "").includes(":"))?.ip
  if (changed && ip !== undefined && previousIp !== undefined && ip !== previousIp) {
    events.push({
      type: "Normal",
      reason: "ExternalIPChanged",
      action: "Ensure",
      note: `the router's external address changed from ${previousIp} to ${ip}`
    })
  }
  const ipv6Open = ipv6?.ingress !== undefined && ipv6.ingress.ports.every((port) => port.error === undefined)
  const published = ip ?? (ipv6Open ? ipv6?.ingress?.ip : undefined)
  if (
    changed && published !== undefined && !outcomes.some((o) => o._tag === "Failed") && desired.unmappable.length === 0 &&
    (ipv6?.ingress === undefined || ipv6Open)
  ) {
    const opened = ipv6?.ingress === undefined ? "" : `; ${ipv6.ingress.ip}: ${
      ipv6.ingress.ports.map((port) => `${port.protocol} ${port.port} (IPv6)`).join(", ")
    } opened in its firewall`
    events.push({
      type: "Normal",
      reason: "EnsuredLoadBalancer",
      action: "Ensure",
      note: `${ip === undefined ? "" : `${ip}: ${describePorts(outcomes.map((o) => o.port))} mapped on ${gateway.router}`}${
        ip === undefined ? opened.slice(2) : opened
      }`
    })
  }

  // A double NAT and a full quota end by a change the controller hears of (the router's
  // address, a Service of the namespace going): no retry until then.
  const failed = outcomes.find((o) => o._tag === "Failed" && o.reason !== "DoubleNAT" && o.reason !== "QuotaExceeded")
  return {
    status: changed ? status : undefined,
    conditions,
    events,
    failure: failed !== undefined && failed._tag === "Failed"
      ? new PortsNotMapped({
        reason: failed.message,
        retryable: failed.retryable ?? true,
        ...(failed.retryAfterSeconds === undefined ? {} : { retryAfterSeconds: failed.retryAfterSeconds })
      })
      : ipv6?.failure !== undefined
      ? new PortsNotMapped({ reason: ipv6.failure, retryable: true })
      : undefined,
    renewAfter: sooner(renewal(desired, options.resyncInterval), ipv6?.renewAfter, options.resyncInterval)
  }
}

/** The sooner of two renewals, if sooner than the next resync. */
const sooner = (
  a: Duration.Duration | undefined,
  b: Duration.Duration | undefined,
  resync: Duration.Duration
): Duration.Duration | undefined => {
  const earliest = a === undefined ? b : b === undefined ? a : Duration.min(a, b)
  return earliest !== undefined && Duration.isLessThan(earliest, resync) ? earliest : undefined
}

/** Renews at half the lease when that is sooner than the next resync. */
const renewal = (desired: DesiredService, resync: Duration.Duration): Duration.Duration | undefined => {
  if (desired.leaseSeconds === 0 || desired.ports.length === 0) return undefined
  const half = Duration.seconds(desired.leaseSeconds / 2)
  return Duration.isLessThan(half, resync) ? half : undefined
}
