/**
 * Whether a reboot the probe just saw has already been followed by a re-assertion, so that no
 * second full pass is needed. Pure: the times are Clock milliseconds.
 */

/** How finely a router tells its uptime: whole seconds. */
const UPTIME_RESOLUTION_MS = 1000

/** What the probe knows when it sees the uptime go down. */
export interface RebootSeen {
  /** When the answer came, and the uptime it gave. */
  readonly now: number
  readonly uptimeSeconds: number
  /** When the latest full listing was asked for, the latest announcement heard, the previous probe made. */
  readonly listedAt: number | undefined
  readonly announcedAt: number | undefined
  readonly probedAt: number | undefined
}

/**
 * True when a listing was asked for after the boot. The uptime counts whole seconds, cut at both
 * ends, so the boot may be up to a second later than it says: a listing counts only when asked
 * after that second (one asked just before could still reach the router that was going down).
 * An announcement since the previous probe dates the boot better: it is sent once the router is
 * up, and a listing asked for after it counts.
 */
export const reassertedSinceBoot = (seen: RebootSeen): boolean => {
  const latestBoot = seen.now - seen.uptimeSeconds * 1000 + UPTIME_RESOLUTION_MS
  const listedAt = seen.listedAt ?? 0
  const announced = seen.announcedAt !== undefined && seen.probedAt !== undefined &&
    seen.announcedAt >= seen.probedAt && listedAt >= seen.announcedAt
  return listedAt > latestBoot || announced
}
