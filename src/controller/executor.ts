/**
 * The executor: reads a router's entries for some ports, and runs a plan's router steps, in
 * order, serially for one Service. It decides nothing: what to do is the planner's, what the
 * results mean for the status and the Events is `conclude`'s (passPlan.ts). Every router
 * failure becomes a port's outcome; one that says the router itself is gone or hides behind a
 * double NAT also makes `Routers` ask it afresh next time.
 */
import { Effect } from "effect"
import type { GatewayError } from "../gateway/GatewayError.ts"
import type { MappingEntry, Protocol } from "../gateway/Mapping.ts"
import { describePort } from "./conditions.ts"
import { portKey, type RecordedMapping, recordedBackend } from "./MappingRecord.ts"
import * as metrics from "./metrics.ts"
import { type GatewayView, type ObservedTable, type Ownership, planCleanup, type Step } from "./planner.ts"
import type { Router, Routers } from "./Routers.ts"
import type { DesiredPort, DesiredService } from "./ServiceSpec.ts"
import type { PortErrorReason, PortOutcome } from "./status.ts"

/** What the router steps of one pass did. */
export interface StepResults {
  /** Each port's outcome, in step order (a delete has none). */
  readonly outcomes: ReadonlyArray<PortOutcome>
  /** Recorded mappings deleted, or found gone: they leave the record. */
  readonly removed: ReadonlyArray<RecordedMapping>
  /** Ports the record says were mapped, found missing and mapped again. */
  readonly repaired: ReadonlyArray<DesiredPort>
}

/**
 * The router's entries for these ports: from the cached table, or read afresh when asked to
 * verify. A router that cannot be read (NAT-PMP, PCP) is taken to hold what we mapped, or else
 * what the record says we mapped (with an unknown lease, so it is renewed).
 */
export const observe = Effect.fnUntraced(function*(
  router: Router,
  ports: ReadonlyArray<{ readonly protocol: Protocol; readonly externalPort: number }>,
  verify: boolean,
  record: ReadonlyArray<RecordedMapping>
) {
  const unique = [...new Map(ports.map((p) => [portKey(p), p])).values()]
  if (!router.mapper.capabilities.readsTable) {
    const recorded = new Map(record.map((m) => [portKey(m), m]))
    const entries = yield* Effect.forEach(unique, (p) =>
      Effect.map(router.table.known(p), (known) => {
        const fromRecord = recorded.get(portKey(p))
        return [portKey(p), known !== undefined ? known : fromRecord === undefined ? null : entryOf(fromRecord, undefined)] as const
      }))
    return new Map<string, MappingEntry | null>(entries) as ObservedTable
  }
  const cached = verify ? undefined : yield* router.table.lookup(unique)
  if (cached !== undefined) return cached
  const entries = yield* Effect.forEach(unique, (p) =>
    router.mapper.get(p.externalPort, p.protocol).pipe(
      Effect.tap((entry) => router.table.seen(p, entry ?? null)),
      Effect.map((entry) => [portKey(p), entry ?? null] as const)
    ), { concurrency: "unbounded" })
  return new Map<string, MappingEntry | null>(entries) as ObservedTable
})

/** Runs one Service's router steps, one after the other. */
export const runSteps = Effect.fnUntraced(function*(
  routers: Routers["Service"],
  router: Router,
  gateway: GatewayView,
  desired: DesiredService,
  steps: ReadonlyArray<Step>,
  /** The nonce recorded for each port (PCP), by `TCP/8080`. */
  nonces: ReadonlyMap<string, string>
) {
  const outcomes: Array<PortOutcome> = []
  const removed: Array<RecordedMapping> = []
  const repaired: Array<DesiredPort> = []
  for (const step of steps) {
    switch (step._tag) {
      case "Add":
      case "Renew":
      case "Replace": {
        const outcome = yield* mapStep(routers, router, gateway, desired, step, nonces.get(portKey(step.port)))
        outcomes.push(outcome)
        if (step._tag === "Add" && step.repair && outcome._tag === "Mapped") {
          repaired.push(step.port)
          yield* metrics.count(metrics.driftRepairs, { family: "ipv4" })
        }
        break
      }
      case "Conflict":
        outcomes.push({ _tag: "Failed", port: step.port, reason: "PortConflict", message: step.reason })
        break
      case "OverQuota":
        outcomes.push({ _tag: "Failed", port: step.port, reason: "QuotaExceeded", message: step.reason })
        break
      case "Delete": {
        const deleted = yield* Effect.result(unmap(router, step.mapping))
        if (deleted._tag === "Success") removed.push(step.mapping)
        else yield* Effect.logWarning(`could not delete ${describePort(step.mapping)}: ${deleted.failure.message}`)
        break
      }
      case "Orphan":
        break
    }
  }
  return { outcomes, removed, repaired } satisfies StepResults
})

const mapStep = (
  routers: Routers["Service"],
  router: Router,
  gateway: GatewayView,
  desired: DesiredService,
  step: Extract<Step, { _tag: "Add" | "Renew" | "Replace" }>,
  nonce: string | undefined
): Effect.Effect<PortOutcome> => {
  const add = mapPort(routers, router, gateway, desired, step.port, nonce)
  // Another node's mapping must go first; our own is overwritten in place by the add.
  if (step._tag !== "Replace" || step.previous.internalClient === gateway.localAddress) return add
  return unmap(router, step.previous).pipe(
    Effect.matchEffect({ onFailure: (error) => Effect.succeed(replaceRefused(step, error)), onSuccess: () => add })
  )
}

const mapPort = (
  routers: Routers["Service"],
  router: Router,
  gateway: GatewayView,
  desired: DesiredService,
  port: DesiredPort,
  nonce: string | undefined
): Effect.Effect<PortOutcome> =>
  Effect.gen(function*() {
    // A first add is confirmed by the next listing rather than read back at once (one router
    // call per port less); a port that listing lacked is read back after every add.
    const readsTable = router.mapper.capabilities.readsTable
    const readBack = readsTable && (yield* router.table.suspect(port))
    const granted = yield* router.mapper.map({
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
    yield* router.table.set(port, entryOf(granted, granted.leaseSeconds), { unconfirmed: readsTable && !readBack })
  }).pipe(
    Effect.as<PortOutcome>({ _tag: "Mapped", port }),
    Effect.catch((error) => {
      const outcome = failedPort(port, error)
      // Unreachable, or behind a double NAT: either way the router's state must be read afresh.
      const stale = outcome.reason === "GatewayUnreachable" || outcome.reason === "DoubleNAT"
      return (stale ? routers.failed(router, error) : Effect.void).pipe(
        Effect.andThen(Effect.logWarning(`${describePort(port)}: ${error.message}`)),
        Effect.as(outcome)
      )
    }),
    Effect.annotateLogs({ port: describePort(port), action: "map" })
  )

/** Deletes one mapping, through the protocol's own way (by nonce, by internal port). */
export const unmap = (
  router: Router,
  mapping: {
    readonly externalPort: number
    readonly protocol: Protocol
    readonly internalPort?: number | undefined
    readonly nonce?: string | undefined
  }
) =>
  router.mapper.unmap({
    externalPort: mapping.externalPort,
    protocol: mapping.protocol,
    internalPort: mapping.internalPort,
    nonce: mapping.nonce
  }).pipe(
    Effect.tap(() => router.table.set(mapping, null)),
    Effect.annotateLogs({ port: describePort(mapping), action: "unmap" })
  )

/**
 * Deletes exactly the recorded mappings the router still holds as ours, each through the
 * router that made it; reports what was deleted, what was already gone, and what failed.
 */
export const removeRecorded = Effect.fnUntraced(function*(
  routers: Routers["Service"],
  record: ReadonlyArray<RecordedMapping>,
  ownership: Ownership,
  /** Another live Service that forwards to this internal port, if any (the record's owner excluded). */
  internalPortHolder: (internalPortKey: string) => string | undefined
) {
  const deleted: Array<RecordedMapping> = []
  const gone: Array<RecordedMapping> = []
  const failures: Array<string> = []
  for (const backend of new Set(record.map((mapping) => mapping.backend))) {
    const mappings = record.filter((mapping) => mapping.backend === backend)
    const chosen = yield* Effect.result(routers.forType(recordedBackend(mappings[0]!)))
    if (chosen._tag === "Failure") {
      failures.push(`${backend}: ${chosen.failure.message}`)
      continue
    }
    const router = chosen.success.router
    const observed = yield* Effect.result(observe(router, mappings, true, mappings))
    if (observed._tag === "Failure") {
      yield* routers.failed(router, observed.failure)
      failures.push(observed.failure.message)
      continue
    }
    const plan = planCleanup(
      mappings,
      observed.success,
      ownership,
      router.mapper.capabilities.deletesByInternalPort ? internalPortHolder : undefined
    )
    gone.push(...plan.alreadyGone)
    for (const step of plan.steps) {
      const result = yield* Effect.result(unmap(router, step.mapping))
      if (result._tag === "Success") deleted.push(step.mapping)
      else failures.push(`${describePort(step.mapping)}: ${result.failure.message}`)
    }
  }
  return { deleted, gone, failures }
})

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
  message: error.message,
  retryable: error.retryable
})

/** The status error a router failure shows on its port. */
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
    case "GatewayProtocolError":
    case "InvalidMapping":
    case "PortControlError":
      return "MappingFailed"
  }
}
