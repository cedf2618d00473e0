/**
 * How a pass fails, and what is done about it. A reconcile fails with a typed error: a router's
 * (`GatewayError`), the apiserver's (`KubeError`, `KubeConflict`, `KubeNotFound`), or one of the
 * two below. One policy, as controller-rs' `error_policy`, turns each into a requeue delay and
 * a metric label: retried at the moment the error names when it has a known end (an old
 * mapping's lease), else with jittered exponential backoff (1 s doubling to 5 min) on the
 * Service's consecutive failures. Nothing is ever given up: the loop is level-triggered, and a
 * change to the Service requeues it at once anyway.
 */
import { Duration, Effect, Random, Schema } from "effect"
import type { GatewayError } from "../gateway/GatewayError.ts"
import type { KubeConflict, KubeError, KubeNotFound } from "../kube/Kube.ts"

/** Some ports of a live Service could not be mapped; the status says which, and the Events why. */
export class PortsNotMapped extends Schema.TaggedError<PortsNotMapped>()("PortsNotMapped", {
  /** The first failed port's message. */
  reason: Schema.String,
  /** Whether trying again can help without a change on the router or the Service. */
  retryable: Schema.Boolean,
  /** A known end, such as the expiry of an old leader's mapping: retry then. */
  retryAfterSeconds: Schema.optional(Schema.Number)
}) {
  override get message(): string {
    return this.reason
  }
}

/** A deleted (or released) Service's mappings could not all be removed yet; its finalizer stays. */
export class CleanupBlocked extends Schema.TaggedError<CleanupBlocked>()("CleanupBlocked", {
  reason: Schema.String
}) {
  get retryable(): boolean {
    return true
  }
  override get message(): string {
    return `cannot remove the router mappings yet: ${this.reason}`
  }
}

/** Every way one pass over one Service can fail. */
export type ReconcileError = GatewayError | KubeError | KubeConflict | KubeNotFound | PortsNotMapped | CleanupBlocked

/** What the policy decided for one failure. */
export interface Requeue {
  readonly delay: Duration.Duration
  /** The error's tag: the `error` label of `edge_ccm_reconcile_errors_total`. */
  readonly label: string
  readonly retryable: boolean
}

const BACKOFF_BASE_MS = 1_000
const BACKOFF_MAX_MS = 300_000

/**
 * Whether trying again can help by itself: the errors that know say so; an apiserver conflict
 * (a stale view) or a missing object is cured by the next watch event; an apiserver error is
 * transient unless it is a refusal (4xx).
 */
export const isRetryable = (error: ReconcileError): boolean => {
  switch (error._tag) {
    case "KubeConflict":
    case "KubeNotFound":
      return true
    case "KubeError":
      return error.status === undefined || error.status >= 500 || error.status === 429
    default:
      return error.retryable
  }
}

/** The backoff after the `failures`th consecutive failure (1 for the first), with ±20 % jitter. */
export const backoff = (failures: number): Effect.Effect<Duration.Duration> =>
  Effect.map(
    Random.nextBetween(0.8, 1.2),
    (jitter) => Duration.millis(Math.min(BACKOFF_BASE_MS * 2 ** (Math.max(1, failures) - 1), BACKOFF_MAX_MS) * jitter)
  )

/**
 * The requeue after the `failures`th consecutive failure of a Service's pass: at the error's own
 * moment when it knows one, else after the backoff.
 */
export const errorPolicy = (error: ReconcileError, failures: number): Effect.Effect<Requeue> => {
  const label = error._tag
  const retryable = isRetryable(error)
  if (error._tag === "PortsNotMapped" && error.retryAfterSeconds !== undefined) {
    return Effect.succeed({ delay: Duration.seconds(error.retryAfterSeconds), label, retryable })
  }
  return Effect.map(backoff(failures), (delay) => ({ delay, label, retryable }))
}
