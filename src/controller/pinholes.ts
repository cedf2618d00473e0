/**
 * The IPv6 half of a pass, carried out: the firewall's view, the plan (pinholePlan.ts), the
 * record written before any AddPinhole, the steps, the record with the new UniqueIDs. A
 * firewall that opens nothing for us (`FirewallUnavailable`) is one `IPv6NotPublished`
 * condition, never an error: the IPv4 half is not touched either way.
 */
import { Clock, Duration, Effect } from "effect"
import type { Firewall, FirewallError, FirewallView, PinholeHandle } from "../gateway/Firewall.ts"
import type { Announcement } from "./Announcer.ts"
import {
  describePinhole,
  type PinholeClaims,
  type PinholeOutcome,
  type PinholePlan,
  type PinholePort,
  pendingEntry,
  planPinholeRemoval,
  planPinholes
} from "./pinholePlan.ts"
import * as metrics from "./metrics.ts"
import { isOpened, pinholeKey, type ReadPinholes, type RecordedPinhole, samePinholes } from "./PinholeRecord.ts"

/** The IPv6 part of a Service's status: the node's address and the pinhole ports. */
export interface Ipv6Ingress {
  readonly ip: string
  readonly ports: ReadonlyArray<{ readonly port: number; readonly protocol: string; readonly error?: string }>
}

/** What the IPv6 half means for the pass's conclusion. */
export interface PinholeResult {
  /** Undefined when nothing is published over IPv6 (no firewall, no ports). */
  readonly ingress: Ipv6Ingress | undefined
  readonly conditions: ReadonlyArray<Announcement>
  readonly events: ReadonlyArray<Announcement>
  /** A retryable failure's message: the pass is tried again. */
  readonly failure: string | undefined
  /** Half the pinhole lease: when to renew. */
  readonly renewAfter: Duration.Duration | undefined
}

/** What the IPv6 half reaches. */
export interface PinholeDeps<E> {
  readonly firewall: Firewall["Service"]
  /** Writes the Service's pinhole record (signed); called only when it changes. */
  readonly writeRecord: (record: ReadonlyArray<RecordedPinhole>) => Effect.Effect<void, E>
}

/** The step results: the record after them, and each wanted port's outcome. */
interface StepRun {
  readonly record: ReadonlyArray<RecordedPinhole>
  readonly outcomes: ReadonlyArray<PinholeOutcome>
  readonly repaired: ReadonlyArray<PinholePort>
}

const failedOutcome = (port: PinholePort, error: FirewallError): PinholeOutcome => ({
  _tag: "Failed",
  port,
  reason: "PinholeFailed",
  message: error.message,
  retryable: error._tag === "PinholeError" ? error.retryable || error.pinholeGone : error._tag === "PortControlError" ? error.retryable : true
})

const isGone = (error: FirewallError) => error._tag === "PinholeError" && error.pinholeGone

/** Runs the steps in order, one at a time; each failure becomes its port's outcome. */
export const runPinholeSteps = Effect.fnUntraced(function*(
  firewall: Firewall["Service"],
  plan: PinholePlan,
  view: FirewallView
) {
  const record = new Map(plan.recordBefore.map((entry) => [pinholeKey(entry), entry]))
  const outcomes: Array<PinholeOutcome> = [...plan.open.map((port): PinholeOutcome => ({ _tag: "Open", port })), ...plan.refused]
  const repaired: Array<PinholePort> = []
  const lease = firewall.leaseSeconds
  const opened = (port: PinholePort, router: string, handle: PinholeHandle): RecordedPinhole => {
    const bootedAt = view.routes.find((route) => route.router === router)?.bootedAt
    return {
      protocol: port.protocol,
      port: port.port,
      internalClient: view.nodeAddress,
      router,
      ...(handle.uniqueId === undefined ? {} : { uniqueId: handle.uniqueId }),
      ...(handle.nonce === undefined ? {} : { nonce: handle.nonce }),
      ...(bootedAt === undefined ? {} : { bootedAt })
    }
  }
  const add = (port: PinholePort, router: string, settle: boolean) =>
    firewall.add(router, { internalClient: view.nodeAddress, port: port.port, protocol: port.protocol, leaseSeconds: lease }).pipe(
      // The router may have held it already (an interrupted pass, a false reboot alarm): then
      // its answer carried a far-off expiry, which a renewal sets right.
      Effect.flatMap((handle) => settle ? firewall.update(opened(port, router, handle), lease) : Effect.succeed(handle)),
      Effect.map((handle) => ({ router, handle }))
    )
  for (const step of plan.steps) {
    if (step._tag === "Delete") {
      const deleted = yield* Effect.result(firewall.remove(step.entry))
      if (deleted._tag === "Success" || isGone(deleted.failure)) record.delete(pinholeKey(step.entry))
      continue
    }
    const port = step.port
    const result = step._tag === "Add"
      ? yield* Effect.result(add(port, step.router, step.settle))
      : yield* Effect.result(
        firewall.update(step.entry, lease).pipe(
          Effect.map((handle) => ({ router: step.entry.router, handle })),
          // Gone (expired, deleted by hand, a reboot not yet seen): open it again, and say so.
          Effect.catchIf(isGone, () =>
            Effect.sync(() => repaired.push(port)).pipe(
              Effect.andThen(Effect.sync(() => record.set(pinholeKey(port), pendingEntry(port, step.entry.router, view.nodeAddress)))),
              Effect.andThen(add(port, step.entry.router, true))
            ))
        )
      )
    if (result._tag === "Success") {
      record.set(pinholeKey(port), opened(port, result.success.router, result.success.handle))
      outcomes.push({ _tag: "Open", port })
    } else {
      outcomes.push(failedOutcome(port, result.failure))
    }
  }
  return { record: [...record.values()], outcomes, repaired } satisfies StepRun
})

/** The IPv6 half of a pass over a live Service: the ports its claims grant opened, the withheld ones told. */
export const ensurePinholes = Effect.fnUntraced(function*<E>(
  deps: PinholeDeps<E>,
  claims: PinholeClaims,
  read: ReadPinholes
) {
  const { firewall } = deps
  const ports = [...claims.granted, ...claims.withheld.map((outcome) => outcome.port)]
  const invalid: Array<Announcement> = read.refused === undefined
    ? []
    : [{ type: "Warning", reason: "InvalidRecord", action: "Ensure", note: read.refused }]
  if (ports.length === 0 && read.trusted.length === 0) {
    return { ingress: undefined, conditions: invalid, events: [], failure: undefined, renewAfter: undefined } satisfies PinholeResult
  }
  const viewed = yield* Effect.result(firewall.view)
  if (viewed._tag === "Failure") {
    const error = viewed.failure
    const unavailable = error._tag === "FirewallUnavailable"
    return {
      ingress: undefined,
      conditions: [...invalid, {
        type: "Warning",
        reason: "IPv6NotPublished",
        action: "Ensure",
        note: `${ports.length === 0 ? "no IPv6 ports" : ports.map(describePinhole).join(", ")} not opened: ${error.message}`
      }],
      events: [],
      // The router said it opens nothing: no retry until something changes. Unreachable: retry.
      failure: unavailable ? undefined : error.message,
      renewAfter: undefined
    } satisfies PinholeResult
  }
  const view = viewed.success
  const plan = planPinholes({
    claims,
    record: read.trusted,
    view,
    now: yield* Clock.currentTimeMillis,
    leaseSeconds: firewall.leaseSeconds,
    renewedAt: yield* renewals(firewall, read.trusted)
  })
  if (plan.forgotten.length > 0) {
    // Their IDs may name other pinholes now (a reboot, another router or node address): never touched again.
    yield* Effect.logInfo(
      `${plan.forgotten.map(describePinhole).join(", ")}: recorded pinholes not provably this router's ` +
        `since its last boot (${view.routes.map((route) => route.router).join(", ")}); opening again where still wanted`
    )
  }
  if (plan.handedOver.length > 0) {
    // The same pinhole on the router: deleting it would close the port for the Service now asking for it.
    yield* Effect.logInfo(`${plan.handedOver.map(describePinhole).join(", ")}: left to the Service that now holds the port`)
  }
  // The entries first: whatever happens next, cleanup knows what the router may hold.
  if (!samePinholes(plan.recordBefore, read.trusted) || read.refused !== undefined) yield* deps.writeRecord(plan.recordBefore)
  const run = yield* runPinholeSteps(firewall, plan, view)
  for (const _ of run.repaired) yield* metrics.count(metrics.driftRepairs, { family: "ipv6" })
  if (!samePinholes(run.record, plan.recordBefore)) yield* deps.writeRecord(run.record)

  const failed = run.outcomes.filter((o): o is PinholeOutcome & { readonly _tag: "Failed" } => o._tag === "Failed")
  const retry = failed.find((o) => o.retryable)
  return {
    ingress: ports.length === 0 ? undefined : {
      ip: view.nodeAddress,
      ports: run.outcomes.map((outcome) =>
        outcome._tag === "Open"
          ? { port: outcome.port.port, protocol: outcome.port.protocol }
          : { port: outcome.port.port, protocol: outcome.port.protocol, error: `midokura.com/${outcome.reason}` }
      ).sort((a, b) => a.port - b.port || (a.protocol < b.protocol ? -1 : a.protocol > b.protocol ? 1 : 0))
    },
    conditions: [
      ...invalid,
      ...failed.map((o): Announcement => ({
        type: "Warning",
        reason: o.reason === "LowPort"
          ? "IPv6PortRefused"
          : o.reason === "PortConflict" || o.reason === "QuotaExceeded"
          ? o.reason
          : "SyncLoadBalancerFailed",
        action: "Ensure",
        note: `${describePinhole(o.port)}: ${o.message}`,
        family: "ipv6"
      }))
    ],
    events: run.repaired.length === 0 ? [] : [{
      type: "Normal",
      reason: "MappingRepaired",
      action: "Map",
      note: `${run.repaired.map(describePinhole).join(", ")} had no pinhole on the router any more and ` +
        `${run.repaired.length === 1 ? "has" : "have"} been opened again`
    }],
    failure: retry?.message,
    renewAfter: claims.granted.length === 0 ? undefined : Duration.seconds(firewall.leaseSeconds / 2)
  } satisfies PinholeResult
})

/**
 * The cleanup of a Service that goes: what it could not delete, one line each (empty: done).
 * `heldElsewhere`: ports (`pinholeKey`) another Service asks for or records, whose pinhole is left to it.
 */
export const removePinholes = Effect.fnUntraced(function*(
  firewall: Firewall["Service"],
  record: ReadonlyArray<RecordedPinhole>,
  heldElsewhere: ReadonlySet<string>
) {
  if (record.length === 0) return { deleted: [] as ReadonlyArray<RecordedPinhole>, failures: [] as ReadonlyArray<string> }
  const viewed = yield* Effect.result(firewall.view)
  if (viewed._tag === "Failure" && viewed.failure._tag !== "FirewallUnavailable") {
    return { deleted: [], failures: [`IPv6 firewall: ${viewed.failure.message}`] }
  }
  // A firewall that opens nothing for us now cannot be asked: the pinholes expire with their lease.
  const { deletes } = planPinholeRemoval(record, viewed._tag === "Success" ? viewed.success : undefined, heldElsewhere)
  const deleted: Array<RecordedPinhole> = []
  const failures: Array<string> = []
  for (const step of deletes) {
    const result = yield* Effect.result(firewall.remove(step.entry))
    if (result._tag === "Success" || isGone(result.failure)) deleted.push(step.entry)
    else failures.push(`${describePinhole(step.entry)}: ${result.failure.message}`)
  }
  return { deleted, failures }
})

const renewals = (firewall: Firewall["Service"], record: ReadonlyArray<RecordedPinhole>) =>
  Effect.gen(function*() {
    const known = new Map<string, number>()
    for (const entry of record) {
      if (!isOpened(entry)) continue
      const at = yield* firewall.renewedAt(entry)
      if (at !== undefined) known.set(pinholeKey(entry), at)
    }
    return known as ReadonlyMap<string, number>
  })
