/**
 * What one pass over a Service reaches (its options and the services it reads and writes
 * through) and what it returns: shared by the Reconciler and the two halves it runs, apply and
 * cleanup, without their importing each other.
 */
import type { Duration } from "effect"
import type { Firewall } from "../gateway/Firewall.ts"
import type { ClusterState } from "./ClusterState.ts"
import type { RecordCheck } from "./MappingRecord.ts"
import type { NeighbourOptions } from "./neighbours.ts"
import type { Routers } from "./Routers.ts"
import type { ServiceEvents } from "./ServiceEvents.ts"
import type { ServiceWrites } from "./ServiceWrites.ts"

/** How Services are read and mapped. */
export interface ReconcilerOptions extends NeighbourOptions {
  readonly clusterName: string
  readonly ipMode: "VIP" | "Proxy" | undefined
  readonly resyncInterval: Duration.Duration
  /** The Node this controller runs on (for local endpoints). */
  readonly nodeName: string | undefined
}

/** A pass that went through: maybe with a renewal due before the next resync. */
export interface Reconciled {
  readonly renewAfter: Duration.Duration | undefined
}

/** What a pass reaches: the services it reads and writes through, and its options. */
export interface PassContext {
  readonly options: ReconcilerOptions
  readonly recordCheck: RecordCheck
  readonly cluster: ClusterState["Service"]
  readonly routers: Routers["Service"]
  /** The router's IPv6 firewall (pinholes); one that opens nothing when IPv6 is not configured. */
  readonly firewall: Firewall["Service"]
  readonly events: ServiceEvents["Service"]
  readonly writes: ServiceWrites["Service"]
}
