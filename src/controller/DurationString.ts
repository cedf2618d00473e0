/**
 * Durations as operators write them in flags, environment and annotations: Go/kubectl style
 * (`30s`, `1h`, `1h30m`, `500ms`, `0`) or Effect's own (`5 seconds`).
 */
import { Duration, Effect, Option, Schema, SchemaIssue, SchemaTransformation } from "effect"

const UNIT_MILLIS: Record<string, number> = { ms: 1, s: 1_000, m: 60_000, h: 3_600_000 }
const GO_DURATION = /^(?:\d+(?:\.\d+)?(?:ms|s|m|h))+$/
const GO_PART = /(\d+(?:\.\d+)?)(ms|s|m|h)/g

/** Parses `1h30m`, `45s`, `0` or `5 seconds`; undefined when the text is none of these. */
export const parseDuration = (text: string): Duration.Duration | undefined => {
  const trimmed = text.trim()
  if (trimmed === "0") return Duration.zero
  if (GO_DURATION.test(trimmed)) {
    let millis = 0
    for (const [, amount, unit] of trimmed.matchAll(GO_PART)) millis += Number(amount) * UNIT_MILLIS[unit!]!
    return Duration.millis(millis)
  }
  return Option.getOrUndefined(Duration.fromInput(trimmed as Duration.Input))
}

/** Renders a duration the way it is accepted back (`1h`, `1m30s`, `250ms`). */
export const formatDuration = (duration: Duration.Duration): string => {
  let millis = Duration.toMillis(duration)
  if (millis === 0) return "0s"
  let text = ""
  for (const [unit, size] of [["h", 3_600_000], ["m", 60_000], ["s", 1_000], ["ms", 1]] as const) {
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
            new SchemaIssue.InvalidValue(
              { message: `"${text}" is not a duration: use e.g. 30s, 5m, 1h, 1h30m or 0` },
              text,
              options
            )
          )
          : Effect.succeed(duration)
      },
      encode: (duration) => Effect.succeed(formatDuration(duration))
    })
  )
)
