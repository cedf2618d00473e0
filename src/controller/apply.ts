/**
 * A pass over a live Service of ours: read what it needs (its router and that router's answer,
 * its record, its rivals and its namespace's quota, the router's entries for its ports), plan
 * (passPlan.ts), then carry the plan out: the record and finalizer first, the router steps, the
 * record left, the status, the Events.
 */
import { Effect } from "effect"
import type { Service } from "../kube/objects.ts"
import type { Announcement } from "./Announcer.ts"
import { localTrafficWarning, ownershipOf } from "./ClusterState.ts"
import { gatewayDown, gatewaySelected, invalidRecord, warningsOf } from "./conditions.ts"
import { observe, removeRecorded, runSteps } from "./executor.ts"
import { portKey, readRecord, type RecordedMapping } from "./MappingRecord.ts"
import { claimantOf, ipv4Claims, pinholeClaims } from "./familyClaims.ts"
import { holdingOf, internalPortHolder, pinholesHeldElsewhere, quotaDenied, rivalsOf } from "./neighbours.ts"
import { conclude, planEnsure, recordAfter, withRecord } from "./passPlan.ts"
import { pinholePorts } from "./pinholePlan.ts"
import { readPinholes } from "./PinholeRecord.ts"
import { ensurePinholes } from "./pinholes.ts"
import { resolveClaims, withQuota } from "./planner.ts"
import type { PassContext, Reconciled } from "./passContext.ts"
import type { DesiredService } from "./ServiceSpec.ts"

/** Makes the router hold what the Service asks for, and the Service show it. */
export const apply = Effect.fnUntraced(function*(
  context: PassContext,
  service: Service,
  desired: DesiredService,
  pass: { readonly verify: boolean; readonly finalized: boolean }
) {
  const { cluster, events, options, routers, writes } = context
  const warnings = warningsOf(desired)
  const chosen = yield* routers.forType(desired.backend).pipe(
    Effect.tapError((error) => events.conditions(service, [...warnings, gatewayDown(error)]))
  )
  const router = chosen.router
  const selection = yield* router.mapper.selection ?? Effect.succeed(undefined)
  const noticed: Array<Announcement> = [...warnings, ...gatewaySelected(desired, router.backend, chosen.reason, selection)]
  const gateway = yield* routers.view(router).pipe(
    Effect.tapError((error) => events.conditions(service, [...noticed, gatewayDown(error)]))
  )
  const record = readRecord(service, context.recordCheck)
  noticed.push(...invalidRecord(record))

  const snapshot = yield* cluster.snapshot
  // One rule for both families: the IPv4 mappings and the IPv6 pinholes are claimed and counted together.
  const self = claimantOf(service, desired)
  const entryClaims = withQuota(
    resolveClaims(rivalsOf(snapshot, options, self), holdingOf(snapshot, context.recordCheck)).get(desired.key) ??
      { granted: self.ports, contested: [], overQuota: [] },
    quotaDenied(snapshot, options, desired.namespace, self)
  )
  const claims = ipv4Claims(entryClaims)
  const recordedHere = record.trusted.filter((mapping) => mapping.backend === router.backend)
  const observed = yield* observe(router, [...claims.granted, ...recordedHere], pass.verify, recordedHere).pipe(
    Effect.tapError((error) =>
      routers.failed(router, error).pipe(Effect.andThen(events.conditions(service, [...noticed, gatewayDown(error)])))
    )
  )
  const ownership = ownershipOf(snapshot, options.clusterName, yield* routers.localAddresses)
  const holder = internalPortHolder(snapshot, desired.key)
  const planned = planEnsure({
    desired,
    gateway,
    backend: router.backend,
    record,
    finalized: pass.finalized,
    claims,
    observed,
    ownership,
    quota: options.maxMappingsPerNamespace,
    internalPortHolder: router.mapper.capabilities.deletesByInternalPort ? holder : undefined
  })
  // A PCP mapping is owned by its nonce: drawn by the router's backend, recorded before it sees it.
  const plan = withRecord(planned, yield* withNonces(planned.record, router.mapper.capabilities.drawNonce))

  // The record and finalizer go first: whatever happens next, cleanup knows what to undo.
  let current = service
  if (plan.metadata !== undefined) {
    current = yield* writes.metadata(current, { record: plan.metadata.record, finalize: true })
    // Progress only: a Service ensured within a second shows its EnsuredLoadBalancer alone.
    if (plan.metadata.announce !== undefined) yield* events.send(service, plan.metadata.announce, { unlessSupersededWithin: "1 second" })
  }
  const nonces = new Map(plan.record.flatMap((m) => m.nonce === undefined ? [] : [[portKey(m), m.nonce] as const]))
  const steps = yield* runSteps(routers, router, gateway, desired, plan.steps, nonces)
  const elsewhere = plan.elsewhere.length === 0 ? undefined : yield* removeRecorded(routers, plan.elsewhere, ownership, holder)
  const results = { ...steps, removed: [...steps.removed, ...(elsewhere?.deleted ?? []), ...(elsewhere?.gone ?? [])] }

  const after = recordAfter(plan, results)
  if (after !== undefined) {
    const written = yield* Effect.result(writes.metadata(current, { record: after, finalize: false }))
    if (written._tag === "Success") current = written.success
  }
  // The IPv6 half, after the IPv4 one: whatever befalls it, the IPv4 mappings are in place.
  const pinholeRecord = readPinholes(service, context.recordCheck)
  const ipv6 = yield* ensurePinholes(
    {
      firewall: context.firewall,
      writeRecord: (record) => Effect.map(writes.pinholes(current, record), (written) => void (current = written))
    },
    pinholeClaims(entryClaims, {
      namespace: desired.namespace,
      quota: options.maxMappingsPerNamespace,
      heldElsewhere: pinholesHeldElsewhere(snapshot, context.recordCheck, desired.key, [...pinholePorts(service), ...pinholeRecord.trusted])
    }),
    pinholeRecord
  )
  const conclusion = conclude(
    plan,
    results,
    { status: current.status?.loadBalancer, localTrafficWarning: localTrafficWarning(yield* cluster.snapshot, current, options.nodeName) },
    options,
    noticed,
    ipv6
  )
  if (conclusion.status !== undefined) {
    yield* writes.status(current, conclusion.status).pipe(
      Effect.tapError((error) => {
        const note = `cannot write the Service's status: ${error.message}`
        return Effect.logWarning(note).pipe(Effect.andThen(events.conditions(service, [
          ...conclusion.conditions,
          { type: "Warning", reason: "SyncLoadBalancerFailed", action: "Ensure", note }
        ])))
      })
    )
  }
  // A router choice made in a pass that ensures the Service rides on its EnsuredLoadBalancer:
  // one Event, not two. Otherwise (the pass failed, or nothing else to say) GatewaySelected goes alone.
  const ensured = conclusion.events.find((event) => event.reason === "EnsuredLoadBalancer")
  let choice: string | undefined
  yield* events.conditions(service, conclusion.conditions, {
    fold: (announcement) => {
      if (ensured === undefined || announcement.reason !== "GatewaySelected") return false
      choice = announcement.note
      return true
    }
  })
  for (const event of conclusion.events) {
    const told = event === ensured && choice !== undefined ? { ...event, note: `${event.note} (${choice})` } : event
    // Once the Service is ensured, a still unsent "ensuring" says nothing more.
    yield* events.send(service, told, event === ensured ? { supersedes: "EnsuringLoadBalancer" } : undefined)
  }
  if (conclusion.failure !== undefined) return yield* conclusion.failure
  return { renewAfter: conclusion.renewAfter } satisfies Reconciled
})

/** The record with a nonce for every entry of a router whose mappings are owned by one. */
const withNonces = (
  record: ReadonlyArray<RecordedMapping>,
  drawNonce: Effect.Effect<string> | undefined
): Effect.Effect<ReadonlyArray<RecordedMapping>> =>
  drawNonce === undefined || record.every((mapping) => mapping.nonce !== undefined)
    ? Effect.succeed(record)
    : Effect.forEach(record, (mapping) =>
      mapping.nonce !== undefined ? Effect.succeed(mapping) : Effect.map(drawNonce, (nonce) => ({ ...mapping, nonce })))
