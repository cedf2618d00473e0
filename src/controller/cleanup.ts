/**
 * A pass over a Service that goes (deleted, no longer a LoadBalancer, or opted out) with our
 * finalizer still on: remove exactly the mappings its checked record names, through the router
 * that made each, and clear its status if it stays. The finalizer wrapper releases it after.
 */
import { Effect } from "effect"
import type { Service } from "../kube/objects.ts"
import type { Announcement } from "./Announcer.ts"
import { ownershipOf } from "./ClusterState.ts"
import { cleanupBlocked, describePort, invalidRecord } from "./conditions.ts"
import { CleanupBlocked } from "./errorPolicy.ts"
import { removeRecorded } from "./executor.ts"
import { isOwned } from "./planner.ts"
import { portKey, readRecord, type RecordedMapping } from "./MappingRecord.ts"
import { internalPortHolder, pinholesHeldElsewhere } from "./neighbours.ts"
import { describePinhole } from "./pinholePlan.ts"
import { readPinholes } from "./PinholeRecord.ts"
import { removePinholes } from "./pinholes.ts"
import type { PassContext } from "./passContext.ts"
import { ABANDON_MAPPINGS_ANNOTATION, mappingDescription, portNameOf, serviceKey } from "./ServiceSpec.ts"

/** Undoes what the Service holds on the routers; returns the Event to send once it is released. */
export const cleanup = (context: PassContext, service: Service) =>
  Effect.gen(function*() {
    const { cluster, events, routers, writes } = context
    const recordRead = readRecord(service, context.recordCheck)
    if (service.metadata?.annotations?.[ABANDON_MAPPINGS_ANNOTATION] === "true") {
      const left = recordRead.trusted.length > 0 ? recordRead.trusted.map(describePort).join(", ") : "nothing recorded"
      return {
        type: "Warning",
        reason: "MappingsAbandoned",
        action: "Delete",
        note: `${ABANDON_MAPPINGS_ANNOTATION} is "true": finalizer removed without router cleanup; left behind: ${left}`
      } satisfies Announcement
    }
    const blocked = (reason: string) =>
      events.conditions(service, [cleanupBlocked(reason)]).pipe(Effect.andThen(Effect.fail(new CleanupBlocked({ reason }))))

    const snapshot = yield* cluster.snapshot
    const ownership = ownershipOf(snapshot, context.options.clusterName, yield* routers.localAddresses)
    let record = recordRead.trusted
    if (recordRead.refused.length > 0) {
      yield* events.conditions(service, invalidRecord(recordRead))
      // Part of the record could not be believed: the router's table still shows, by the
      // descriptions this Service's own ports derive, what is provably its own.
      const fromTable = yield* Effect.result(recordFromTable(context, service))
      if (fromTable._tag === "Failure") return yield* blocked(fromTable.failure.message)
      const known = new Set(record.map((mapping) => `${mapping.backend}:${portKey(mapping)}`))
      record = [...record, ...fromTable.success.filter((mapping) => !known.has(`${mapping.backend}:${portKey(mapping)}`))]
    }
    const removal = yield* removeRecorded(routers, record, ownership, internalPortHolder(snapshot, serviceKey(service)))
    if (removal.failures.length > 0) return yield* blocked(removal.failures.join("; "))
    // The IPv6 pinholes the record proves ours in the router's current boot, but for those on a
    // port another Service asks for or records (the same pinhole, theirs now); the rest expire.
    const pinholeRecord = readPinholes(service, context.recordCheck).trusted
    const pinholes = yield* removePinholes(
      context.firewall,
      pinholeRecord,
      pinholesHeldElsewhere(snapshot, context.recordCheck, serviceKey(service), pinholeRecord)
    )
    if (pinholes.failures.length > 0) return yield* blocked(pinholes.failures.join("; "))
    const removed = [...removal.deleted.map(describePort), ...pinholes.deleted.map(describePinhole)]

    if (service.metadata?.deletionTimestamp === undefined && (service.status?.loadBalancer?.ingress?.length ?? 0) > 0) {
      yield* writes.clearStatus(service)
    }
    return {
      type: "Normal",
      reason: "DeletedLoadBalancer",
      action: "Delete",
      note: removed.length === 0 ? "no router mappings were left to remove" : `removed ${removed.join(", ")}`
    } satisfies Announcement
  }).pipe(Effect.withSpan("Reconciler.cleanup"))

/** The mappings a router that lists its table holds under a description this Service's own ports derive. */
const recordFromTable = (context: PassContext, service: Service) =>
  Effect.gen(function*() {
    const router = yield* context.routers.tableReader
    const table = yield* router.mapper.list
    const namespace = service.metadata?.namespace ?? "default"
    const name = service.metadata?.name ?? ""
    const own = new Set(
      (service.spec?.ports ?? []).map((port) => mappingDescription(context.options.clusterName, namespace, name, portNameOf(port)))
    )
    const ownership = ownershipOf(yield* context.cluster.snapshot, context.options.clusterName, yield* context.routers.localAddresses)
    return (table ?? [])
      .filter((entry) => own.has(entry.description) && isOwned(entry, ownership))
      .map((entry): RecordedMapping => ({
        backend: router.backend,
        gateway: "",
        protocol: entry.protocol,
        externalPort: entry.externalPort,
        internalClient: entry.internalClient,
        internalPort: entry.internalPort,
        description: entry.description
      }))
  })
