/**
 * Events go out on transitions, not on every pass: a condition (a conflict on a port, a
 * double NAT, an invalid annotation) is announced when it appears, and again only after it
 * has cleared and come back.
 */
import { Effect, HashMap, Option, Ref } from "effect"

/** One Event's content, before it is addressed to a Service. */
export interface Announcement {
  readonly type: "Normal" | "Warning"
  readonly reason: string
  readonly action: string
  readonly note: string
  /** The address family it is about, for the metrics (absent: IPv4); not part of the Event. */
  readonly family?: "ipv6"
}

/** Which conditions each Service has had announced. */
export interface Announcer {
  /**
   * Emits the conditions that were not active for this key on the previous pass, and forgets
   * the ones that are no longer active.
   */
  readonly conditions: (
    key: string,
    active: ReadonlyArray<Announcement>,
    emit: (announcement: Announcement) => Effect.Effect<void>
  ) => Effect.Effect<void>
  readonly forget: (key: string) => Effect.Effect<void>
}

const identity = (announcement: Announcement): string => `${announcement.reason}\u0000${announcement.note}`

/** An announcer that remembers nothing yet; its memory is one `Ref`. */
export const makeAnnouncer: Effect.Effect<Announcer> = Effect.map(
  Ref.make(HashMap.empty<string, ReadonlySet<string>>()),
  (activeByKey): Announcer => ({
    conditions: (key, active, emit) =>
      Ref.modify(activeByKey, (known) => {
        const previous = Option.getOrElse(HashMap.get(known, key), (): ReadonlySet<string> => new Set())
        const fresh = active.filter((announcement) => !previous.has(identity(announcement)))
        return [fresh, HashMap.set(known, key, new Set(active.map(identity)))] as const
      }).pipe(Effect.flatMap((fresh) => Effect.forEach(fresh, emit, { discard: true }))),
    forget: (key) => Ref.update(activeByKey, HashMap.remove(key))
  })
)
