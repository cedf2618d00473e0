/**
 * The executor: reads one Service's world (its spec, its record, the router's entries for
 * its ports), asks the planner what to do, and does it — record first, router second, status
 * and events last. Every failure ends in a typed outcome, an event and a retry, never a crash.
 */
import type { LoadBalancerIngress, LoadBalancerStatus as KubeLoadBalancerStatus, Service } from "../kube/objects.ts"
import { randomBytes } from "node:crypto"
import { Duration, Effect } from "effect"
import type { GatewayError } from "../gateway/GatewayError.ts"
import type { Backend, LoadBalancerType } from "../gateway/Gateways.ts"
import type { MappingEntry, Protocol } from "../gateway/Mapping.ts"
import type { PortMapper } from "../gateway/PortMapper.ts"
import type { Kube, ObjectRef } from "../kube/Kube.ts"
import type { Announcement, Announcer } from "./Announcer.ts"
import type { EventSink } from "./EventSink.ts"
import type { LeaseRange } from "./DurationString.ts"
import { portKey, readRecord, type ReadRecord, type RecordCheck, recordAnnotations, type RecordedMapping } from "./MappingRecord.ts"
import * as metrics from "./metrics.ts"
import {
  type GatewayView,
  isOwned,
  type LoadBalancerStatus,
  type ObservedTable,
  type Ownership,
  planCleanup,
  planService,
  type PortErrorReason,
  type PortOutcome,
  resolveClaims,
  resolveQuota,
  sameRecord,
  serviceStatus,
  type Step,
  withQuota
} from "./planner.ts"
import {
  ABANDON_MAPPINGS_ANNOTATION,
  type DesiredPort,
  type DesiredService,
  desiredService,
  FINALIZER,
  liveDesired,
  MAPPINGS_ANNOTATION,
  MAPPINGS_SIGNATURE_ANNOTATION,
  mappingDescription,
  portNameOf,
  selectService,
  serviceKey
} from "./ServiceSpec.ts"
import type { TableCache } from "./TableCache.ts"

export interface ExecutorOptions {
  readonly clusterName: string
  readonly loadBalancerClass: string
  readonly defaultLease: Duration.Duration
  /** The leases the mapping-lease annotation may ask for (besides 0). */
  readonly leaseRange: LeaseRange
  /** Router mappings one namespace's Services may hold together; 0: no limit. */
  readonly maxMappingsPerNamespace: number
  readonly ipMode: "VIP" | "Proxy" | undefined
  readonly resyncInterval: Duration.Duration
}

/** One router protocol as the executor uses it: the mapper, what we know of its table, its state. */
export interface GatewayHandle {
  readonly backend: Backend
  readonly mapper: PortMapper["Service"]
  readonly table: TableCache
  readonly view: Effect.Effect<GatewayView, GatewayError>
  /** Called when the router fails or contradicts our view of it, so the next pass asks afresh. */
  readonly failed: (error: GatewayError) => Effect.Effect<void>
  /** Why `auto` chose this backend. */
  readonly reason?: string | undefined
}

export interface ExecutorContext {
  readonly options: ExecutorOptions
  readonly kube: Kube["Service"]
  /** The router protocol for a Service's load-balancer type (or a record's backend). */
  readonly gatewayFor: (type: LoadBalancerType) => Effect.Effect<GatewayHandle, GatewayError>
  readonly announcer: Announcer
  /** Sends Events in the background. */
  readonly events: EventSink
  /** The latest Services seen by the watch, by namespace/name. */
  readonly services: () => ReadonlyMap<string, Service>
  /** Keys of the live Services that ask for an external port (by port key). */
  readonly claimants: (port: string) => ReadonlySet<string>
  /** Keys of the live Services that ask for an internal port (`TCP/30080`). */
  readonly internalClaimants: (port: string) => ReadonlySet<string>
  /** Keys of the live Services of a namespace (for its quota). */
  readonly namespaceMembers: (namespace: string) => ReadonlySet<string>
  /** How records are checked: the signing key and the cluster's name. */
  readonly recordCheck: RecordCheck
  readonly ownership: () => Ownership
  /** Called with every Service version this controller wrote, so the watch's echo is not a new pass. */
  readonly wrote: (service: Service) => void
  /** A Warning about traffic not reaching this node (externalTrafficPolicy Local), if any. */
  readonly localTrafficWarning: (service: Service) => string | undefined
}

export type ReconcileResult =
  | { readonly _tag: "Done"; readonly renewAfter?: Duration.Duration }
  /** Something failed that a later pass can repair: retry with backoff, or at `after` when known. */
  | { readonly _tag: "Retry"; readonly reason: string; readonly after?: Duration.Duration }

const done: ReconcileResult = { _tag: "Done" }

/** Reconciles one Service key. Never fails: every error becomes a result, an event or a log line. */
export const reconcileService = Effect.fn("Controller.reconcile")(function*(
  context: ExecutorContext,
  key: string,
  verify: boolean
) {
  const service = context.services().get(key)
  if (service === undefined) {
    yield* context.announcer.forget(key)
    return done
  }
  const selection = selectService(service, context.options)
  const finalized = service.metadata?.finalizers?.includes(FINALIZER) ?? false
  const deleting = service.metadata?.deletionTimestamp !== undefined
  if (selection._tag === "Invalid" && !deleting) {
    yield* context.announcer.conditions(key, [{
      type: "Warning",
      reason: "InvalidAnnotation",
      action: "Validate",
      note: `${selection.reason}; the Service's mappings are left as they are`
    }], emitFor(context, service))
    return done
  }
  if (deleting || selection._tag !== "Ours") {
    return finalized ? yield* cleanup(context, service) : done
  }
  return yield* ensure(context, service, desiredService(service, selection.backend, context.options), verify)
}, (effect, _context, key) =>
  effect.pipe(
    // A defect in one Service's pass must not stop the worker: log it and retry with backoff.
    Effect.catchCause((cause) =>
      Effect.logError("reconcile failed unexpectedly", cause).pipe(
        Effect.as<ReconcileResult>({ _tag: "Retry", reason: "unexpected failure" })
      )
    ),
    Effect.annotateLogs({ service: key })
  ))

// ---------------------------------------------------------------------------------------------
// A live Service: make the router hold what it asks for.

const ensure = Effect.fnUntraced(function*(
  context: ExecutorContext,
  service: Service,
  desired: DesiredService,
  verify: boolean
) {
  const emit = emitFor(context, service)
  const chosen = yield* Effect.result(context.gatewayFor(desired.backend))
  if (chosen._tag === "Failure") {
    yield* context.announcer.conditions(desired.key, [...warningsOf(desired), gatewayDown(chosen.failure)], emit)
    return retry(chosen.failure.message)
  }
  const handle = chosen.success
  const view = yield* Effect.result(handle.view)
  const noticed = [...warningsOf(desired), ...(yield* selectionOf(desired, handle))]
  if (view._tag === "Failure") {
    yield* context.announcer.conditions(desired.key, [...noticed, gatewayDown(view.failure)], emit)
    return retry(view.failure.message)
  }
  const gateway = view.success
  const recordRead = readRecord(service, context.recordCheck)
  const fullRecord = recordRead.trusted
  noticed.push(...invalidRecord(recordRead))
  // Mappings made through another protocol (the type changed) are removed through that one.
  const record = fullRecord.filter((mapping) => mapping.backend === handle.backend)
  const elsewhere = fullRecord.filter((mapping) => mapping.backend !== handle.backend)
  const claims = withQuota(
    resolveClaims(rivalsOf(context, desired), holdingOf(context)).get(desired.key) ??
      { granted: desired.ports, contested: [], overQuota: [] },
    quotaDenied(context, desired)
  )
  const observed = yield* observe(handle, [...claims.granted, ...record], verify, record)
  if (observed._tag === "Failure") {
    yield* handle.failed(observed.failure)
    yield* context.announcer.conditions(desired.key, [...noticed, gatewayDown(observed.failure)], emit)
    return retry(observed.failure.message)
  }
  const ownership = context.ownership()
  const plan = planService({
    service: desired,
    claims,
    record,
    observed: observed.success,
    gateway,
    ownership,
    quota: context.options.maxMappingsPerNamespace,
    internalPortHolder: internalPortHolder(context, desired.key)
  })
  // A PCP mapping is owned by its nonce: drawn here, and recorded before the router sees it.
  const recordHere = withNonces(plan.recordBefore ?? record)

  // The record and finalizer go first: whatever happens next, cleanup knows what to undo.
  let current = service
  const finalized = service.metadata?.finalizers?.includes(FINALIZER) ?? false
  if (!sameRecord([...recordHere, ...elsewhere], fullRecord) || !finalized || recordRead.stale) {
    const written = yield* patchMetadata(context, current, {
      finalizers: withFinalizer(current),
      annotations: recordAnnotations(current, [...recordHere, ...elsewhere], context.recordCheck.key)
    })
    if (written._tag === "Failure") return retry(written.failure)
    current = written.success
    if (!finalized) {
      yield* emit({
        type: "Normal",
        reason: "EnsuringLoadBalancer",
        action: "Ensure",
        note: `mapping ${describePorts(claims.granted)} on ${gateway.router}`
      })
    }
  }

  const outcomes: Array<PortOutcome> = plan.inPlace.map((port) => ({ _tag: "Mapped", port }))
  const removed: Array<RecordedMapping> = [...plan.forgotten]
  const oneShot: Array<Announcement> = []
  const repaired: Array<DesiredPort> = []
  const nonces = new Map(recordHere.flatMap((m) => m.nonce === undefined ? [] : [[portKey(m), m.nonce] as const]))
  for (const step of plan.steps) {
    const outcome = yield* runStep(handle, gateway, desired, step, nonces)
    if (outcome === undefined) continue
    if ("removed" in outcome) {
      if (outcome.removed) removed.push(outcome.mapping)
      continue
    }
    outcomes.push(outcome)
    if (step._tag === "Add" && step.repair && outcome._tag === "Mapped") {
      repaired.push(step.port)
      yield* metrics.count(metrics.driftRepairs)
    }
  }
  if (repaired.length > 0) {
    oneShot.push({
      type: "Normal",
      reason: "MappingRepaired",
      action: "Map",
      note: `${describePorts(repaired)} ${repaired.length === 1 ? "was" : "were"} missing on ${gateway.router} and ` +
        `${repaired.length === 1 ? "has" : "have"} been mapped again`
    })
  }
  for (const port of plan.blocked) {
    outcomes.push({ _tag: "Failed", port, reason: "DoubleNAT", message: doubleNatNote(gateway) })
  }

  if (elsewhere.length > 0) {
    const other = yield* removeRecorded(context, elsewhere, desired.key)
    removed.push(...other.deleted, ...other.gone)
  }

  // The record keeps what is, or may be, ours on the router (a failed add may have landed);
  // only what was deleted, or found gone, leaves it.
  const removedKeys = new Set(removed.map((m) => `${m.backend}:${portKey(m)}`))
  const recordNow = [...recordHere, ...elsewhere]
  const recordAfter = recordNow.filter((m) => !removedKeys.has(`${m.backend}:${portKey(m)}`))
  if (!sameRecord(recordAfter, recordNow)) {
    const written = yield* patchMetadata(context, current, {
      annotations: recordAnnotations(current, recordAfter, context.recordCheck.key)
    })
    if (written._tag === "Success") current = written.success
  }

  const unreachable = outcomes.find((o) => o._tag === "Failed" && o.reason === "GatewayUnreachable")
  const conditions = [...noticed, ...portConditions(outcomes, desired)]
  const trafficWarning = context.localTrafficWarning(current)
  if (trafficWarning !== undefined) {
    conditions.push({ type: "Warning", reason: "NoLocalEndpoints", action: "Ensure", note: trafficWarning })
  }
  if (unreachable !== undefined) {
    // The mappings may well still work: keep the published status and try again soon.
    yield* context.announcer.conditions(desired.key, conditions, emit)
    yield* Effect.forEach(oneShot, emit, { discard: true })
    return retry(unreachable._tag === "Failed" ? unreachable.message : "gateway unreachable")
  }

  const status = serviceStatus(outcomes, desired.unmappable, gateway.externalAddress, context.options.ipMode)
  const previousIp = current.status?.loadBalancer?.ingress?.[0]?.ip
  if (!sameStatus(current.status?.loadBalancer, status)) {
    const applied = yield* Effect.result(
      context.kube.applyServiceStatus(refOf(current), { loadBalancer: toV1Status(status) }).pipe(
        // An apply has no resourceVersion precondition: its answer may carry someone else's
        // change made since this pass read the Service, whose echo must not be skipped.
        Effect.tap((written) => Effect.sync(() => sameInputs(written, current) ? context.wrote(written) : undefined))
      )
    )
    if (applied._tag === "Failure") {
      const note = `cannot write the Service's status: ${applied.failure.message}`
      yield* Effect.logWarning(note)
      yield* context.announcer.conditions(
        desired.key,
        [...conditions, { type: "Warning", reason: "SyncLoadBalancerFailed", action: "Ensure", note }],
        emit
      )
      return retry(applied.failure.message)
    }
    const ip = status.ingress[0]?.ip
    if (ip !== undefined && previousIp !== undefined && ip !== previousIp) {
      oneShot.push({
        type: "Normal",
        reason: "ExternalIPChanged",
        action: "Ensure",
        note: `the router's external address changed from ${previousIp} to ${ip}`
      })
    }
    if (ip !== undefined && !outcomes.some((o) => o._tag === "Failed") && desired.unmappable.length === 0) {
      oneShot.push({
        type: "Normal",
        reason: "EnsuredLoadBalancer",
        action: "Ensure",
        note: `${ip}: ${describePorts(outcomes.map((o) => o.port))} mapped on ${gateway.router}`
      })
    }
  }
  yield* context.announcer.conditions(desired.key, conditions, emit)
  yield* Effect.forEach(oneShot, emit, { discard: true })

  // A double NAT and a full quota end by a change the controller hears of (the router's
  // address, a Service of the namespace going): no retry until then.
  const failed = outcomes.find((o) => o._tag === "Failed" && o.reason !== "DoubleNAT" && o.reason !== "QuotaExceeded")
  if (failed !== undefined && failed._tag === "Failed") {
    return failed.retryAfterSeconds === undefined
      ? retry(failed.message)
      : { _tag: "Retry" as const, reason: failed.message, after: Duration.seconds(failed.retryAfterSeconds) }
  }
  return renewal(desired, context.options.resyncInterval)
})

/** Renews at half the lease even when that is sooner than the next resync. */
const renewal = (desired: DesiredService, resync: Duration.Duration): ReconcileResult => {
  if (desired.leaseSeconds === 0 || desired.ports.length === 0) return done
  const half = Duration.seconds(desired.leaseSeconds / 2)
  return Duration.isLessThan(half, resync) ? { _tag: "Done", renewAfter: half } : done
}

type StepOutcome = PortOutcome | { readonly removed: boolean; readonly mapping: RecordedMapping } | undefined

const runStep = (
  handle: GatewayHandle,
  gateway: GatewayView,
  desired: DesiredService,
  step: Step,
  nonces: ReadonlyMap<string, string>
): Effect.Effect<StepOutcome> => {
  switch (step._tag) {
    case "Add":
    case "Renew":
      return mapPort(handle, gateway, desired, step.port, nonces.get(portKey(step.port)))
    case "Replace": {
      // Another node's mapping must go first; our own is overwritten in place by the add.
      const add = mapPort(handle, gateway, desired, step.port, nonces.get(portKey(step.port)))
      if (step.previous.internalClient === gateway.localAddress) return add
      return unmap(handle, step.previous).pipe(
        Effect.matchEffect({ onFailure: (error) => Effect.succeed(replaceRefused(step, error)), onSuccess: () => add })
      )
    }
    case "Conflict":
      return Effect.succeed({ _tag: "Failed", port: step.port, reason: "PortConflict", message: step.reason })
    case "OverQuota":
      return Effect.succeed({ _tag: "Failed", port: step.port, reason: "QuotaExceeded", message: step.reason })
    case "Delete":
      return unmap(handle, step.mapping).pipe(
        Effect.as<StepOutcome>({ removed: true, mapping: step.mapping }),
        Effect.catch((error) =>
          Effect.logWarning(`could not delete ${describePort(step.mapping)}: ${error.message}`).pipe(
            Effect.as<StepOutcome>({ removed: false, mapping: step.mapping })
          )
        )
      )
    case "Orphan":
      return Effect.succeed(undefined)
  }
}

const mapPort = (
  handle: GatewayHandle,
  gateway: GatewayView,
  desired: DesiredService,
  port: DesiredPort,
  nonce: string | undefined
): Effect.Effect<PortOutcome> =>
  Effect.gen(function*() {
    // A first add is confirmed by the next listing rather than read back at once (one router
    // call per port less); a port that listing lacked is read back after every add.
    const readBack = handle.mapper.capabilities.readsTable && (yield* handle.table.suspect(port))
    const granted = yield* handle.mapper.map({
      externalPort: port.externalPort,
      protocol: port.protocol,
      internalPort: port.internalPort,
      internalClient: gateway.localAddress,
      description: port.description,
      leaseSeconds: desired.leaseSeconds,
      ownershipVerified: true,
      readBack,
      ...(nonce === undefined ? {} : { nonce })
    })
    yield* handle.table.set(port, entryOf(granted, granted.leaseSeconds), {
      unconfirmed: handle.mapper.capabilities.readsTable && !readBack
    })
  }).pipe(
    Effect.as<PortOutcome>({ _tag: "Mapped", port }),
    Effect.catch((error) => {
      const outcome = failedPort(port, error)
      // Unreachable, or behind a double NAT: either way the router's state must be read afresh.
      const stale = outcome.reason === "GatewayUnreachable" || outcome.reason === "DoubleNAT"
      return (stale ? handle.failed(error) : Effect.void).pipe(
        Effect.andThen(Effect.logWarning(`${describePort(port)}: ${error.message}`)),
        Effect.as(outcome)
      )
    }),
    Effect.annotateLogs({ port: describePort(port), action: "map" })
  )

const unmap = (
  handle: GatewayHandle,
  mapping: {
    readonly externalPort: number
    readonly protocol: Protocol
    readonly internalPort?: number | undefined
    readonly nonce?: string | undefined
  }
) =>
  handle.mapper.unmap({
    externalPort: mapping.externalPort,
    protocol: mapping.protocol,
    internalPort: mapping.internalPort,
    nonce: mapping.nonce
  }).pipe(
    Effect.tap(() => handle.table.set(mapping, null)),
    Effect.annotateLogs({ port: describePort(mapping), action: "unmap" })
  )

/**
 * A secure-mode router lets only the node that made a mapping delete it (606): after a
 * failover, the old leader's mapping is re-pointed once its lease runs out.
 */
const replaceRefused = (step: Extract<Step, { _tag: "Replace" }>, error: GatewayError): PortOutcome =>
  (error._tag === "UpnpError" && error.code === 606) || error._tag === "PortConflict"
    ? {
      _tag: "Failed",
      port: step.port,
      reason: "PortConflict",
      ...(step.previous.leaseDuration === undefined || step.previous.leaseDuration === 0
        ? {}
        : { retryAfterSeconds: step.previous.leaseDuration + 1 }),
      message: `the mapping still points at ${step.previous.internalClient}, the previous leader's node, and the ` +
        `router lets only that node change it; waiting for its lease to expire (${
          step.previous.leaseDuration === undefined || step.previous.leaseDuration === 0
            ? "a permanent mapping never does: remove it on the router"
            : `in ${step.previous.leaseDuration} s`
        })`
    }
    : failedPort(step.port, error)

const failedPort = (port: DesiredPort, error: GatewayError): Extract<PortOutcome, { _tag: "Failed" }> => ({
  _tag: "Failed",
  port,
  reason: portErrorReason(error),
  message: error.message
})

export const portErrorReason = (error: GatewayError): PortErrorReason => {
  switch (error._tag) {
    case "PortConflict":
      return "PortConflict"
    case "DoubleNat":
      return "DoubleNAT"
    case "GatewayUnreachable":
    case "GatewayNotFound":
      return "GatewayUnreachable"
    case "UpnpError":
      return error.code === 718 || error.code === 606 ? "PortConflict" : "MappingFailed"
    case "PortControlError":
      return "MappingFailed"
    case "GatewayProtocolError":
    case "InvalidMapping":
    case "PortControlError":
      return "MappingFailed"
  }
}

// ---------------------------------------------------------------------------------------------
// Cleanup: deleted, no longer a LoadBalancer, or opted out — with our finalizer still on.

const cleanup = Effect.fnUntraced(function*(context: ExecutorContext, service: Service) {
  const key = serviceKey(service)
  const emit = emitFor(context, service)
  const recordRead = readRecord(service, context.recordCheck)
  if (service.metadata?.annotations?.[ABANDON_MAPPINGS_ANNOTATION] === "true") {
    const left = recordRead.trusted.length > 0 ? recordRead.trusted.map(describePort).join(", ") : "nothing recorded"
    const released = yield* releaseFinalizer(context, service)
    if (released._tag === "Failure") return retry(released.failure)
    yield* emit({
      type: "Warning",
      reason: "MappingsAbandoned",
      action: "Delete",
      note: `${ABANDON_MAPPINGS_ANNOTATION} is "true": finalizer removed without router cleanup; left behind: ${left}`
    })
    yield* context.announcer.forget(key)
    return done
  }

  let record = recordRead.trusted
  if (recordRead.refused.length > 0) {
    yield* context.announcer.conditions(key, invalidRecord(recordRead), emit)
    // Part of the record could not be believed: the router's table still shows, by the
    // descriptions this Service's own ports derive, what is provably its own.
    const fromTable = yield* Effect.result(recordFromTable(context, service))
    if (fromTable._tag === "Failure") return yield* cleanupFailed(context, service, fromTable.failure.message)
    const known = new Set(record.map((mapping) => `${mapping.backend}:${portKey(mapping)}`))
    record = [...record, ...fromTable.success.filter((mapping) => !known.has(`${mapping.backend}:${portKey(mapping)}`))]
  }
  const removal = yield* removeRecorded(context, record, key)
  if (removal.failures.length > 0) return yield* cleanupFailed(context, service, removal.failures.join("; "))

  if (service.metadata?.deletionTimestamp === undefined && (service.status?.loadBalancer?.ingress?.length ?? 0) > 0) {
    const cleared = yield* Effect.result(context.kube.applyServiceStatus(refOf(service), { loadBalancer: {} }))
    if (cleared._tag === "Failure") return retry(cleared.failure.message)
  }
  const released = yield* releaseFinalizer(context, service)
  if (released._tag === "Failure") return retry(released.failure)
  yield* emit({
    type: "Normal",
    reason: "DeletedLoadBalancer",
    action: "Delete",
    note: removal.deleted.length === 0
      ? "no router mappings were left to remove"
      : `removed ${removal.deleted.map(describePort).join(", ")}`
  })
  yield* context.announcer.forget(key)
  return done
})

const cleanupFailed = (context: ExecutorContext, service: Service, reason: string) =>
  context.announcer.conditions(serviceKey(service), [{
    type: "Warning",
    reason: "SyncLoadBalancerFailed",
    action: "Delete",
    note: `cannot remove the router mappings yet (${reason}); retrying with backoff. ` +
      `To give up and leave them, annotate the Service ${ABANDON_MAPPINGS_ANNOTATION}="true"`
  }], emitFor(context, service)).pipe(Effect.as(retry(reason)))

/**
 * Deletes exactly the recorded mappings the router still holds as ours, each through the
 * protocol that made it; reports what was deleted, what was already gone, and what failed.
 */
const removeRecorded = Effect.fnUntraced(function*(
  context: ExecutorContext,
  record: ReadonlyArray<RecordedMapping>,
  /** The Service the record belongs to. */
  owner: string
) {
  const deleted: Array<RecordedMapping> = []
  const gone: Array<RecordedMapping> = []
  const failures: Array<string> = []
  for (const backend of new Set(record.map((mapping) => mapping.backend))) {
    const mappings = record.filter((mapping) => mapping.backend === backend)
    const handle = yield* Effect.result(context.gatewayFor(asBackend(backend)))
    if (handle._tag === "Failure") {
      failures.push(`${backend}: ${handle.failure.message}`)
      continue
    }
    const observed = yield* observe(handle.success, mappings, true, mappings)
    if (observed._tag === "Failure") {
      yield* handle.success.failed(observed.failure)
      failures.push(observed.failure.message)
      continue
    }
    const plan = planCleanup(mappings, observed.success, context.ownership(), internalPortHolder(context, owner))
    gone.push(...plan.alreadyGone)
    for (const step of plan.steps) {
      const result = yield* Effect.result(unmap(handle.success, step.mapping))
      if (result._tag === "Success") deleted.push(step.mapping)
      else failures.push(`${describePort(step.mapping)}: ${result.failure.message}`)
    }
  }
  return { deleted, gone, failures }
})

/** A record written by an older version (or by hand) may lack a backend: it was UPnP. */
export const asBackend = (backend: string): Backend =>
  backend === "nat-pmp" || backend === "pcp" ? backend : "upnp-igd"

/** The UPnP mappings on the router under a description this Service's own ports derive. */
const recordFromTable = (context: ExecutorContext, service: Service) =>
  context.gatewayFor("upnp-igd").pipe(
    Effect.flatMap((handle) => handle.mapper.list),
    Effect.map((table) => {
      const namespace = service.metadata?.namespace ?? "default"
      const name = service.metadata?.name ?? ""
      const own = new Set(
        (service.spec?.ports ?? []).map((port) =>
          mappingDescription(context.options.clusterName, namespace, name, portNameOf(port))
        )
      )
      const ownership = context.ownership()
      return (table ?? [])
        .filter((entry) => own.has(entry.description) && isOwned(entry, ownership))
        .map((entry): RecordedMapping => ({
          backend: "upnp-igd",
          gateway: "",
          protocol: entry.protocol,
          externalPort: entry.externalPort,
          internalClient: entry.internalClient,
          internalPort: entry.internalPort,
          description: entry.description
        }))
    })
  )

const releaseFinalizer = (context: ExecutorContext, service: Service) =>
  patchMetadata(context, service, {
    finalizers: (service.metadata?.finalizers ?? []).filter((f) => f !== FINALIZER),
    annotations: { [MAPPINGS_ANNOTATION]: null, [MAPPINGS_SIGNATURE_ANNOTATION]: null }
  })

// ---------------------------------------------------------------------------------------------
// Helpers

/**
 * The router's entries for these ports: from the cached table, or read afresh when asked to
 * verify. A router that cannot be read (NAT-PMP, PCP) is taken to hold what we mapped, or else
 * what the record says we mapped (with an unknown lease, so it is renewed).
 */
const observe = (
  handle: GatewayHandle,
  ports: ReadonlyArray<{ readonly protocol: Protocol; readonly externalPort: number }>,
  verify: boolean,
  record: ReadonlyArray<RecordedMapping>
) =>
  Effect.result(
    Effect.gen(function*() {
      const unique = [...new Map(ports.map((p) => [portKey(p), p])).values()]
      if (!handle.mapper.capabilities.readsTable) {
        const recorded = new Map(record.map((m) => [portKey(m), m]))
        const entries = yield* Effect.forEach(unique, (p) =>
          Effect.map(handle.table.known(p), (known) => {
            const fromRecord = recorded.get(portKey(p))
            return [
              portKey(p),
              known !== undefined ? known : fromRecord === undefined ? null : entryOf(fromRecord, undefined)
            ] as const
          }))
        return new Map<string, MappingEntry | null>(entries) as ObservedTable
      }
      const cached = verify ? undefined : yield* handle.table.lookup(unique)
      if (cached !== undefined) return cached
      const entries = yield* Effect.forEach(unique, (p) =>
        handle.mapper.get(p.externalPort, p.protocol).pipe(
          Effect.tap((entry) => handle.table.seen(p, entry ?? null)),
          Effect.map((entry) => [portKey(p), entry ?? null] as const)
        ), { concurrency: "unbounded" })
      return new Map<string, MappingEntry | null>(entries) as ObservedTable
    })
  )

/** The router entry a mapping we made (or recorded) stands for. */
const entryOf = (
  mapping: Pick<MappingEntry, "externalPort" | "protocol" | "internalClient" | "internalPort" | "description">,
  leaseDuration: number | undefined
): MappingEntry => ({
  externalPort: mapping.externalPort,
  protocol: mapping.protocol,
  internalClient: mapping.internalClient,
  internalPort: mapping.internalPort,
  description: mapping.description,
  leaseDuration,
  enabled: true,
  remoteHost: ""
})

/** Draws a nonce for every PCP mapping that has none yet. */
const withNonces = (record: ReadonlyArray<RecordedMapping>): ReadonlyArray<RecordedMapping> =>
  record.some((mapping) => mapping.backend === "pcp" && mapping.nonce === undefined)
    ? record.map((mapping) =>
      mapping.backend === "pcp" && mapping.nonce === undefined
        ? { ...mapping, nonce: randomBytes(12).toString("hex") }
        : mapping
    )
    : record

/**
 * Says once which router the Service uses and why (the node's default gateway, the address or
 * URL the operator gave), and again when that changes; `auto` also says which protocol it chose.
 */
const selectionOf = (desired: DesiredService, handle: GatewayHandle): Effect.Effect<Array<Announcement>> =>
  Effect.map(handle.mapper.selection ?? Effect.succeed(undefined), (router): Array<Announcement> => {
    const protocol = desired.backend === "auto" && handle.reason !== undefined
      ? `auto uses ${handle.backend}: ${handle.reason}`
      : undefined
    const gateway = router === undefined ? undefined : `${handle.backend} router ${router}`
    const note = [protocol, gateway].filter((part) => part !== undefined).join("; ")
    return note === "" ? [] : [{ type: "Normal", reason: "GatewaySelected", action: "Ensure", note }]
  })

/** The ports each Service's record holds: the incumbent keeps a port against an equally old rival. */
const holdingOf = (context: ExecutorContext) => (key: string): ReadonlySet<string> => {
  const service = context.services().get(key)
  return new Set(service === undefined ? [] : readRecord(service, context.recordCheck).trusted.map(portKey))
}

/** The ports of this Service past its namespace's quota, or undefined when the namespace is within it. */
const quotaDenied = (context: ExecutorContext, desired: DesiredService): ReadonlySet<string> | undefined => {
  const limit = context.options.maxMappingsPerNamespace
  if (limit <= 0) return undefined
  const members: Array<DesiredService> = []
  let wanted = 0
  for (const key of context.namespaceMembers(desired.namespace)) {
    const service = key === desired.key ? undefined : context.services().get(key)
    const member = key === desired.key ? desired : service === undefined ? undefined : liveDesired(service, context.options)
    if (member === undefined) continue
    members.push(member)
    wanted += member.ports.length
  }
  if (!members.includes(desired)) {
    members.push(desired)
    wanted += desired.ports.length
  }
  return wanted <= limit ? undefined : resolveQuota(members, limit).get(desired.key)
}

/** Another live Service asking for an internal port (a nodePort), if any. */
const internalPortHolder = (context: ExecutorContext, self: string) => (port: string): string | undefined => {
  for (const key of context.internalClaimants(port)) if (key !== self) return key
  return undefined
}

/** The InvalidRecord Warning for what a record held that was not believed. */
const invalidRecord = (read: ReadRecord): Array<Announcement> =>
  read.refused.length === 0 ? [] : [{
    type: "Warning",
    reason: "InvalidRecord",
    action: "Validate",
    note: `annotation ${MAPPINGS_ANNOTATION}: ignoring what this controller did not record for this Service, and ` +
      `dropping it from the record: ${read.refused.slice(0, 3).join("; ")}` +
      (read.refused.length > 3 ? `; and ${read.refused.length - 3} more` : "")
  }]

/** This Service and every live one that asks for one of its external ports. */
const rivalsOf = (context: ExecutorContext, desired: DesiredService): ReadonlyArray<DesiredService> => {
  const keys = new Set(desired.ports.flatMap((port) => [...context.claimants(portKey(port))]))
  keys.delete(desired.key)
  const result: Array<DesiredService> = [desired]
  for (const key of keys) {
    const service = context.services().get(key)
    const other = service === undefined ? undefined : liveDesired(service, context.options)
    if (other !== undefined) result.push(other)
  }
  return result
}

const patchMetadata = (
  context: ExecutorContext,
  service: Service,
  change: {
    readonly finalizers?: ReadonlyArray<string>
    readonly annotations?: Readonly<Record<string, string | null>>
  }
) =>
  Effect.result(
    context.kube.patchServiceMetadata({ ...refOf(service), resourceVersion: service.metadata?.resourceVersion ?? "" }, change)
      .pipe(Effect.tap((written) => Effect.sync(() => context.wrote(written))))
  ).pipe(
    Effect.map((result) =>
      result._tag === "Success"
        ? { _tag: "Success" as const, success: result.success }
        : { _tag: "Failure" as const, failure: result.failure.message }
    )
  )

/** Whether two versions of a Service ask for the same thing (what a pass reads, status aside). */
const sameInputs = (a: Service, b: Service): boolean =>
  JSON.stringify([a.spec, a.metadata?.annotations, a.metadata?.labels, a.metadata?.deletionTimestamp, a.metadata?.finalizers]) ===
    JSON.stringify([b.spec, b.metadata?.annotations, b.metadata?.labels, b.metadata?.deletionTimestamp, b.metadata?.finalizers])

const withFinalizer = (service: Service): ReadonlyArray<string> => {
  const finalizers = service.metadata?.finalizers ?? []
  return finalizers.includes(FINALIZER) ? finalizers : [...finalizers, FINALIZER]
}

export const refOf = (service: Service): ObjectRef => ({
  namespace: service.metadata?.namespace ?? "default",
  name: service.metadata?.name ?? "",
  uid: service.metadata?.uid,
  resourceVersion: service.metadata?.resourceVersion
})

const emitFor = (context: ExecutorContext, service: Service) => (announcement: Announcement) =>
  countEvent(announcement).pipe(Effect.andThen(context.events.record({
    regarding: { ...refOf(service), kind: "Service", apiVersion: "v1" },
    ...announcement
  }, serviceKey(service))))

const countEvent = (announcement: Announcement) =>
  announcement.reason === "PortConflict" ? metrics.count(metrics.portConflicts) : Effect.void

const warningsOf = (desired: DesiredService): Array<Announcement> => [
  ...desired.warnings.map((warning): Announcement => ({
    type: "Warning",
    reason: warning.reason === "IPv6Only" ? "UnsupportedIPFamily" : warning.reason,
    action: "Validate",
    note: warning.message
  })),
  ...desired.unmappable.map((port): Announcement => ({
    type: "Warning",
    reason: port.reason === "UnsupportedProtocol" ? "UnsupportedProtocol" : "NoNodePort",
    action: "Validate",
    note: port.message
  }))
]

const portConditions = (outcomes: ReadonlyArray<PortOutcome>, desired: DesiredService): Array<Announcement> => {
  const conditions: Array<Announcement> = []
  for (const outcome of outcomes) {
    if (outcome._tag !== "Failed") continue
    const reason = outcome.reason === "PortConflict" || outcome.reason === "DoubleNAT" ||
        outcome.reason === "QuotaExceeded"
      ? outcome.reason
      : "SyncLoadBalancerFailed"
    conditions.push({ type: "Warning", reason, action: "Ensure", note: `${describePort(outcome.port)}: ${outcome.message}` })
  }
  // One DoubleNAT event per Service, not one per port.
  const doubleNat = conditions.filter((c) => c.reason === "DoubleNAT")
  return doubleNat.length > 1
    ? [
      ...conditions.filter((c) => c.reason !== "DoubleNAT"),
      { ...doubleNat[0]!, note: `${desired.ports.length} ports not published: ${outcomesNote(doubleNat[0]!.note)}` }
    ]
    : conditions
}

const outcomesNote = (note: string) => note.slice(note.indexOf(": ") + 2)

const gatewayDown = (error: GatewayError): Announcement => ({
  type: "Warning",
  reason: error._tag === "GatewayNotFound" ? "GatewayNotFound" : "SyncLoadBalancerFailed",
  action: "Ensure",
  note: error.message
})

const doubleNatNote = (gateway: GatewayView): string =>
  gateway.externalAddress.class === "missing"
    ? `${gateway.router} reports no usable external address (its WAN link is down, or it hides a private ` +
      "address behind a double NAT): nothing can be published"
    : `${gateway.router} has the external address ${gateway.externalAddress.ip}, which is private or reserved ` +
      "(double NAT or CGNAT): the Service would not be reachable from the Internet, so no address is published"

const retry = (reason: string): ReconcileResult => ({ _tag: "Retry", reason })

export const describePort = (port: { readonly protocol: string; readonly externalPort: number }): string =>
  `${port.protocol} ${port.externalPort}`

const describePorts = (ports: ReadonlyArray<{ readonly protocol: string; readonly externalPort: number }>) =>
  ports.length === 0 ? "no ports" : ports.map(describePort).join(", ")

const toV1Status = (status: LoadBalancerStatus) => ({
  ingress: status.ingress.map((ingress) => ({
    ip: ingress.ip,
    ...(ingress.ipMode === undefined ? {} : { ipMode: ingress.ipMode }),
    ports: ingress.ports.map((port) => ({ ...port }))
  }))
})

/** Compares what the Service shows with what it should show, ignoring fields we never write. */
const sameStatus = (current: KubeLoadBalancerStatus | undefined, next: LoadBalancerStatus): boolean => {
  const normalize = (ingress: ReadonlyArray<LoadBalancerIngress | LoadBalancerStatus["ingress"][number]>) =>
    JSON.stringify(ingress.map((i) => ({
      ip: i.ip,
      // The apiserver fills in VIP when we leave ipMode unset.
      ipMode: i.ipMode ?? "VIP",
      ports: (i.ports ?? []).map((p) => ({ port: p.port, protocol: p.protocol, error: p.error }))
    })))
  return normalize(current?.ingress ?? []) === normalize(next.ingress)
}
