/**
 * The finalizer, as controller-rs' `finalizer` wrapper: a Service the controller acts on is
 * applied while it lives and is ours (the apply's first write adds our finalizer, with the
 * record, before any router call), and cleaned up once it is deleted or no longer ours; the
 * finalizer is released only after the cleanup succeeded, so a controller killed in between
 * finds the Service, its record and its finalizer still there.
 */
import { Effect } from "effect"
import type { Service } from "../kube/objects.ts"
import type { Announcement } from "./Announcer.ts"
import { FINALIZER } from "./ServiceSpec.ts"

/** What to do with a Service at each end of its life. */
export interface FinalizerHandlers<A, E, R> {
  /** The Service is alive and ours. */
  readonly live: boolean
  /** Makes it so; `finalized`: the Service carries our finalizer already (else the first write must add it). */
  readonly apply: (finalized: boolean) => Effect.Effect<A, E, R>
  /** Undoes what the Service holds; returns the Event to send once its finalizer is released. */
  readonly cleanup: Effect.Effect<Announcement, E, R>
  /** Removes our finalizer (and the record). */
  readonly release: (service: Service) => Effect.Effect<unknown, E, R>
  /** Sends the cleanup's Event, and forgets the Service. */
  readonly released: (event: Announcement) => Effect.Effect<void, never, R>
}

/** Whether the Service carries our finalizer. */
export const hasFinalizer = (service: Service): boolean => service.metadata?.finalizers?.includes(FINALIZER) ?? false

/**
 * Applies a live Service; cleans up one that goes, then releases its finalizer. A Service that
 * goes without our finalizer was never ours to clean up: nothing is done (undefined).
 */
export const withFinalizer = <A, Err, R>(
  service: Service,
  handlers: FinalizerHandlers<A, Err, R>
): Effect.Effect<A | undefined, Err, R> => {
  const finalized = hasFinalizer(service)
  if (handlers.live) return handlers.apply(finalized)
  if (!finalized) return Effect.succeed(undefined)
  return handlers.cleanup.pipe(
    Effect.tap(() => handlers.release(service)),
    Effect.flatMap(handlers.released),
    Effect.as(undefined)
  )
}
