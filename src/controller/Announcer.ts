/**
 * Events go out on transitions, not on every pass: a condition (a conflict on a port, a
 * double NAT, an invalid annotation) is announced when it appears, and again only after it
 * has cleared and come back.
 */
import { Effect } from "effect"

export interface Announcement {
  readonly type: "Normal" | "Warning"
  readonly reason: string
  readonly action: string
  readonly note: string
}

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

export const makeAnnouncer = (): Announcer => {
  const activeByKey = new Map<string, ReadonlySet<string>>()
  return {
    conditions: (key, active, emit) =>
      Effect.suspend(() => {
        const previous = activeByKey.get(key) ?? new Set<string>()
        const fresh = active.filter((announcement) => !previous.has(identity(announcement)))
        activeByKey.set(key, new Set(active.map(identity)))
        return Effect.forEach(fresh, emit, { discard: true })
      }),
    forget: (key) => Effect.sync(() => void activeByKey.delete(key))
  }
}
