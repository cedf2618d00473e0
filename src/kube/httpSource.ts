/**
 * The `ListWatchSource` the list/watch state machine drives, over the apiserver's HTTP API:
 * paginated lists, and a watch as a stream of the JSON lines the apiserver sends, each object
 * decoded by its Schema (which keeps only the fields the controller reads).
 */
import { Duration, Effect, Random, Result, Stream } from "effect"
import type { KubeHttp } from "./KubeHttp.ts"
import { invalidResponse } from "./KubeHttp.ts"
import { type KubeCallContext, type KubeFailure, parseStatus } from "./KubeError.ts"
import type { Listed, ListWatchSource, RawWatchEvent } from "./listWatch.ts"
import { resourceVersionOf } from "./listWatch.ts"
import type { Kind } from "./objects.ts"

export interface WatchTuning {
  /**
   * Server-side watch duration (`timeoutSeconds`), drawn per connection from [t, 2t)
   * (default 1 min). The server then ends every watch in time, so a connection that stays
   * silent past 2t is dead, not merely idle (an idle apiserver sends a bookmark only every
   * minute or two).
   */
  readonly watchTimeout?: Duration.Input | undefined
  /** Items per list page (default 500). */
  readonly pageSize?: number | undefined
}

export const watchTimeoutOf = (tuning: WatchTuning | undefined): Duration.Duration =>
  Duration.fromInputUnsafe(tuning?.watchTimeout ?? Duration.minutes(1))

/** How long a watch connection may stay silent before it is given up as dead. */
export const watchIdleTimeoutOf = (tuning: WatchTuning | undefined): Duration.Duration =>
  Duration.sum(Duration.times(watchTimeoutOf(tuning), 2), Duration.seconds(30))

/** Decodes with the kind's Schema; an object the apiserver should never send is a typed error. */
const decodeWith = <A>(ctx: KubeCallContext, decode: (raw: unknown) => Result.Result<A, string>, raw: unknown) => {
  const decoded = decode(raw)
  return Result.isSuccess(decoded)
    ? Effect.succeed(decoded.success)
    : Effect.fail(invalidResponse(ctx, `unexpected ${ctx.resource} object: ${decoded.failure}`))
}

/**
 * Reads a whole collection page by page. Every page belongs to the first page's snapshot, so
 * its resourceVersion is where the watch starts.
 */
export const listAll = <T>(
  http: KubeHttp["Service"],
  ctx: KubeCallContext,
  path: string,
  kind: Kind<T>,
  pageSize: number
): Effect.Effect<Listed<T>, KubeFailure> =>
  Effect.gen(function*() {
    const items: Array<T> = []
    let resourceVersion: string | undefined
    let token: string | undefined
    do {
      const raw = yield* http.json(ctx, { method: "GET", path, query: { limit: pageSize, continue: token } })
      const page = yield* decodeWith(ctx, kind.decodeList, raw)
      items.push(...page.items)
      resourceVersion ??= page.metadata?.resourceVersion
      token = page.metadata?.continue !== undefined && page.metadata.continue !== "" ? page.metadata.continue : undefined
    } while (token !== undefined)
    return { items, resourceVersion: resourceVersion ?? "" }
  })

const WatchLine = (raw: unknown): { readonly type: string; readonly object: unknown } | undefined =>
  typeof raw === "object" && raw !== null && "type" in raw && typeof raw.type === "string" && "object" in raw
    ? { type: raw.type, object: raw.object }
    : undefined

/** One line of a watch as the state machine's event; unknown types are skipped. */
const toEvent = <T>(ctx: KubeCallContext, kind: Kind<T>, raw: unknown): Effect.Effect<ReadonlyArray<RawWatchEvent<T>>, KubeFailure> => {
  const line = WatchLine(raw)
  if (line === undefined) return Effect.fail(invalidResponse(ctx, "a watch line without type and object"))
  switch (line.type) {
    case "ADDED":
    case "MODIFIED":
    case "DELETED": {
      const type = line.type
      return Effect.map(decodeWith(ctx, kind.decode, line.object), (object) => [{ type, object }])
    }
    case "BOOKMARK":
      return Effect.succeed([{ type: "BOOKMARK", resourceVersion: resourceVersionOf(line.object) }])
    case "ERROR":
      return Effect.succeed([{ type: "ERROR", status: parseStatus(line.object) }])
    default:
      return Effect.succeed([])
  }
}

/** A `ListWatchSource` for one cluster-wide collection, e.g. `/api/v1/services`. */
export const makeSource = <T>(http: KubeHttp["Service"], options: {
  /** Plural resource name, for errors, logs and metrics. */
  readonly resource: string
  readonly path: string
  readonly kind: Kind<T>
  readonly tuning?: WatchTuning | undefined
}): ListWatchSource<T> => {
  const minTimeout = Duration.toSeconds(watchTimeoutOf(options.tuning))
  const idle = watchIdleTimeoutOf(options.tuning)
  const watchCtx: KubeCallContext = { verb: "watch", resource: options.resource }
  return {
    resource: options.resource,
    list: listAll(http, { verb: "list", resource: options.resource }, options.path, options.kind, options.tuning?.pageSize ?? 500),
    watch: (resourceVersion) =>
      Stream.unwrap(
        Effect.map(Random.nextBetween(minTimeout, minTimeout * 2), (timeout) =>
          http.lines(watchCtx, {
            method: "GET",
            path: options.path,
            query: {
              watch: true,
              resourceVersion,
              allowWatchBookmarks: true,
              timeoutSeconds: Math.max(1, Math.floor(timeout))
            }
          }).pipe(
            // Silent past the server's own deadline: the connection is dead, reconnect.
            Stream.timeout(idle),
            Stream.mapEffect((raw) => toEvent(watchCtx, options.kind, raw)),
            Stream.flattenIterable
          ))
      )
  }
}
