/**
 * The one duration grammar of the project, for flags, environment variables, annotations and
 * the CLI alike: Go/kubectl style (`30s`, `1h30m`, `500ms`, `7d`, `0`) or Effect's own
 * (`5 seconds`, `2 days`). Only finite, non-negative durations are durations here: a lease or
 * an interval of `-5s` or `Infinity` is a typo or an attack, never a setting.
 */
import { Duration, Effect, Option, Schema, SchemaIssue, SchemaTransformation } from "effect"

const UNIT_MILLIS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000, d: 86_400_000 }
const GO_DURATION = /^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+$/
const GO_PART = /(\d+(?:\.\d+)?)(ms|s|m|h|d)/g
const EFFECT_DURATION = /^\d+(?:\.\d+)? (?:millis?|seconds?|minutes?|hours?|days?|weeks?)$/

/** The forms accepted, for error messages. */
export const DURATION_FORMS = "e.g. 30s, 5m, 1h30m, 7d, 0 or 5 minutes"

/** Parses `1h30m`, `45s`, `7d`, `0` or `5 seconds`; undefined for anything else, negative or infinite. */
export const parseDuration = (text: string): Duration.Duration | undefined => {
  const trimmed = text.trim()
  if (trimmed === "0") return Duration.zero
  if (GO_DURATION.test(trimmed)) {
    let millis = 0
    for (const [, amount, unit] of trimmed.matchAll(GO_PART)) millis += Number(amount) * UNIT_MILLIS[unit!]!
    return Number.isFinite(millis) ? Duration.millis(millis) : undefined
  }
  // Effect's grammar also reads "Infinity" and negative amounts: only its plain "<n> <unit>" form is taken.
  if (!EFFECT_DURATION.test(trimmed)) return undefined
  const duration = Option.getOrUndefined(Duration.fromInput(trimmed as Duration.Input))
  return duration !== undefined && Duration.isFinite(duration) ? duration : undefined
}

/** Renders a duration the way it is accepted back (`1h`, `1m30s`, `250ms`, `7d`). */
export const formatDuration = (duration: Duration.Duration): string => {
  let millis = Duration.toMillis(duration)
  if (millis === 0) return "0s"
  let text = ""
  for (const [unit, size] of [["d", 86_400_000], ["h", 3_600_000], ["m", 60_000], ["s", 1_000], ["ms", 1]] as const) {
    const amount = Math.floor(millis / size)
    if (amount > 0) text += `${amount}${unit}`
    millis -= amount * size
  }
  return text
}

/** A duration decoded from its text form; the error says which forms are accepted. */
export const DurationString = Schema.String.pipe(
  Schema.decodeTo(
    Schema.Duration,
    SchemaTransformation.transformEffect<Duration.Duration, string>({
      decode: (text, options) => {
        const duration = parseDuration(text)
        return duration === undefined
          ? Effect.fail(
            new SchemaIssue.InvalidValue({ message: `"${text}" is not a duration: use ${DURATION_FORMS}` }, text, options)
          )
          : Effect.succeed(duration)
      },
      encode: (duration) => Effect.succeed(formatDuration(duration))
    })
  )
)

/** The leases a mapping may have: 0 (permanent) or a duration within these bounds. */
export interface LeaseRange {
  readonly min: Duration.Duration
  readonly max: Duration.Duration
}

/** 2 minutes to 7 days: shorter costs the router a renewal every minute, longer outlives a lost record. */
export const defaultLeaseRange: LeaseRange = { min: Duration.minutes(2), max: Duration.days(7) }

/** Why a lease is refused (`shorter than 2m`), or undefined when it is 0 or within the range. */
export const leaseOutOfRange = (lease: Duration.Duration, range: LeaseRange): string | undefined =>
  Duration.isZero(lease)
    ? undefined
    : Duration.isLessThan(lease, range.min)
    ? `shorter than ${formatDuration(range.min)}`
    : Duration.isGreaterThan(lease, range.max)
    ? `longer than ${formatDuration(range.max)}`
    : undefined

/** `0 (permanent) or 2m to 7d`: what a lease may be, for messages. */
export const describeLeaseRange = (range: LeaseRange): string =>
  `0 (permanent) or ${formatDuration(range.min)} to ${formatDuration(range.max)}`
