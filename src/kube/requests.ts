/**
 * The request bodies kube/ sends, as pure functions so their exact shape is tested
 * without an apiserver.
 */
import type { LoadBalancerStatus } from "./objects.ts"

/** Field manager for every write, so `managedFields` show what this controller owns. */
export const FIELD_MANAGER = "edge-cloud-controller-manager"

/** `reportingController` of our Events. */
export const REPORTING_CONTROLLER = "midokura.com/edge-cloud-controller-manager"

/** Identifies one object; `uid` and `resourceVersion` pin a particular incarnation and version of it. */
export interface ObjectRef {
  readonly namespace: string
  readonly name: string
  readonly uid?: string | undefined
  readonly resourceVersion?: string | undefined
}

export interface ServiceMetadataChange {
  /** The complete new finalizer list (a merge patch replaces arrays whole). */
  readonly finalizers?: ReadonlyArray<string> | undefined
  /** Annotations to set; `null` removes one. Others are left as they are. */
  readonly annotations?: Readonly<Record<string, string | null>> | undefined
}

/** A `metav1.Condition`; `lastTransitionTime` is RFC 3339. */
export interface Condition {
  readonly type: string
  readonly status: "True" | "False" | "Unknown"
  readonly reason: string
  readonly message: string
  readonly lastTransitionTime: string
  readonly observedGeneration?: number | undefined
}

export interface ServiceStatusChange {
  readonly loadBalancer: LoadBalancerStatus
  /** The conditions this controller owns; any it owned before and leaves out are removed. */
  readonly conditions?: ReadonlyArray<Condition> | undefined
}

export interface EventSpec {
  readonly regarding: ObjectRef & { readonly kind: string; readonly apiVersion: string }
  readonly type: "Normal" | "Warning"
  readonly reason: string
  readonly action: string
  readonly note: string
}

/**
 * JSON merge patch of a Service's metadata. It carries `metadata.resourceVersion`, which
 * the apiserver treats as a precondition: a stale view fails with 409 instead of
 * overwriting a finalizer someone else added meanwhile.
 */
export const serviceMetadataPatch = (
  resourceVersion: string,
  change: ServiceMetadataChange
): { readonly metadata: Record<string, unknown> } => ({
  metadata: {
    resourceVersion,
    ...(change.finalizers !== undefined ? { finalizers: [...change.finalizers] } : {}),
    ...(change.annotations !== undefined ? { annotations: { ...change.annotations } } : {})
  }
})

/** A `metav1.MicroTime`: RFC 3339 with exactly six fractional digits, or the apiserver refuses it. */
export const microTime = (millis: number): string => new Date(millis).toISOString().replace(/\.(\d{3})Z$/, ".$1000Z")

/**
 * Server-side apply configuration for the status subresource. Only the fields present
 * here become ours; conditions are a map keyed by `type`, so other controllers'
 * conditions survive. A `uid` makes the apply fail instead of writing onto a
 * re-created Service of the same name.
 */
export const serviceStatusApply = (ref: ObjectRef, status: ServiceStatusChange): Record<string, unknown> => ({
  apiVersion: "v1",
  kind: "Service",
  metadata: {
    name: ref.name,
    namespace: ref.namespace,
    ...(ref.uid !== undefined ? { uid: ref.uid } : {})
  },
  status: {
    loadBalancer: status.loadBalancer,
    ...(status.conditions !== undefined ? { conditions: status.conditions } : {})
  }
})

/** Cuts a string to at most `max` UTF-8 bytes without splitting a character. */
export const truncateUtf8 = (value: string, max: number): string => {
  if (Buffer.byteLength(value, "utf8") <= max) return value
  let out = ""
  let used = 0
  for (const char of value) {
    const size = Buffer.byteLength(char, "utf8")
    if (used + size > max - 3) break
    out += char
    used += size
  }
  return `${out}...`
}

/**
 * An `events.k8s.io/v1` Event with every field the apiserver requires (it answers 422
 * without them). Named `<regarding>.<hex nanoseconds>` as client-go does; `unique`
 * breaks ties between events recorded in the same millisecond.
 */
/** The `events.k8s.io/v1` Event we send (every field the apiserver requires). */
export interface EventBody {
  readonly apiVersion: "events.k8s.io/v1"
  readonly kind: "Event"
  readonly metadata: { readonly name: string; readonly namespace: string }
  readonly eventTime: string
  readonly type: "Normal" | "Warning"
  readonly reason: string
  readonly action: string
  readonly note: string
  readonly reportingController: string
  readonly reportingInstance: string
  readonly regarding: {
    readonly kind: string
    readonly apiVersion: string
    readonly name: string
    readonly namespace?: string
    readonly uid?: string
    readonly resourceVersion?: string
  }
}

export const eventBody = (
  event: EventSpec,
  options: { readonly instance: string; readonly now: number; readonly unique: number }
): EventBody => {
  const namespace = event.regarding.namespace !== "" ? event.regarding.namespace : "default"
  const stamp = (BigInt(Math.floor(options.now)) * 1_000_000n + BigInt(Math.floor(options.unique) % 1_000_000))
    .toString(16)
  return {
    apiVersion: "events.k8s.io/v1",
    kind: "Event",
    metadata: { name: `${event.regarding.name.slice(0, 200)}.${stamp}`, namespace },
    eventTime: microTime(options.now),
    type: event.type,
    reason: truncateUtf8(event.reason, 128),
    action: truncateUtf8(event.action, 128),
    note: truncateUtf8(event.note, 1024),
    reportingController: REPORTING_CONTROLLER,
    reportingInstance: truncateUtf8(options.instance, 128),
    regarding: {
      kind: event.regarding.kind,
      apiVersion: event.regarding.apiVersion,
      name: event.regarding.name,
      ...(event.regarding.namespace !== "" ? { namespace: event.regarding.namespace } : {}),
      ...(event.regarding.uid !== undefined ? { uid: event.regarding.uid } : {}),
      ...(event.regarding.resourceVersion !== undefined ? { resourceVersion: event.regarding.resourceVersion } : {})
    }
  }
}
