/**
 * Adapts `@kubernetes/client-node` to the `ListWatchSource` the state machine drives:
 * paginated lists through the typed API, and `Watch`'s callback API as an Effect `Stream`
 * whose interruption aborts the HTTP request.
 */
import type { V1ListMeta } from "@kubernetes/client-node"
import { ObjectSerializer } from "@kubernetes/client-node/dist/serializer.js"
import { Cause, Duration, Effect, Queue, Random, Stream } from "effect"
import type { KubeCallContext, KubeFailure } from "./KubeError.ts"
import { fromCause, parseStatus } from "./KubeError.ts"
import type { Listed, ListWatchSource, RawWatchEvent } from "./listWatch.ts"
import { resourceVersionOf } from "./listWatch.ts"

/** The part of client-node's `Watch` we use (its callbacks are typed loosely upstream). */
export interface WatchClient {
  watch(
    path: string,
    queryParams: Record<string, string | number | boolean | undefined>,
    callback: (phase: string, apiObj: unknown) => void,
    done: (err: unknown) => void
  ): Promise<AbortController>
}

/** One page of a list call. */
export interface ListPage<T> {
  readonly items: Array<T>
  readonly metadata?: V1ListMeta | undefined
}

export interface PageParams {
  readonly limit: number
  readonly _continue: string | undefined
}

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

/** How long a watch connection may stay silent before client-node aborts it as dead. */
export const watchIdleTimeoutOf = (tuning: WatchTuning | undefined): Duration.Duration =>
  Duration.sum(Duration.times(watchTimeoutOf(tuning), 2), Duration.seconds(30))

/**
 * Reads a whole collection page by page. Every page belongs to the first page's
 * snapshot, so its resourceVersion is where the watch starts.
 */
export const listAll = <T>(
  ctx: KubeCallContext,
  page: (params: PageParams, signal: AbortSignal) => Promise<ListPage<T>>,
  pageSize = 500
): Effect.Effect<Listed<T>, KubeFailure> =>
  Effect.gen(function*() {
    const items: Array<T> = []
    let resourceVersion: string | undefined
    let token: string | undefined
    do {
      const next = token
      const result = yield* Effect.tryPromise({
        try: (signal) => page({ limit: pageSize, _continue: next }, signal),
        catch: (cause) => fromCause(ctx, cause)
      })
      items.push(...result.items)
      resourceVersion ??= result.metadata?.resourceVersion
      token = result.metadata?._continue !== undefined && result.metadata._continue !== ""
        ? result.metadata._continue
        : undefined
    } while (token !== undefined)
    return { items, resourceVersion: resourceVersion ?? "" }
  })

const rawEvent = <T>(
  phase: string,
  object: unknown,
  decode: (raw: unknown) => T
): RawWatchEvent<T> | undefined => {
  switch (phase) {
    case "ADDED":
    case "MODIFIED":
    case "DELETED":
      return { type: phase, object: decode(object) }
    case "BOOKMARK":
      return { type: "BOOKMARK", resourceVersion: resourceVersionOf(object) }
    case "ERROR":
      return { type: "ERROR", status: parseStatus(object) }
    default:
      return undefined
  }
}

interface Connection {
  controller: AbortController | undefined
  /** The stream was interrupted or finished: abort as soon as there is something to abort. */
  released: boolean
  /** client-node reported the end; later callbacks are ignored. */
  done: boolean
}

/**
 * One watch connection as a stream: ends when the apiserver closes it, fails when it
 * breaks. Interrupting the stream aborts the request, also when the interruption
 * arrives before client-node has handed back its `AbortController`.
 */
export const watchStream = <T>(
  client: WatchClient,
  ctx: KubeCallContext,
  path: string,
  params: Record<string, string | number | boolean | undefined>,
  decode: (raw: unknown) => T
): Stream.Stream<RawWatchEvent<T>, KubeFailure> =>
  Stream.callback<RawWatchEvent<T>, KubeFailure>((queue) =>
    Effect.acquireRelease(
      Effect.sync(() => {
        const connection: Connection = { controller: undefined, released: false, done: false }
        const finish = (err: unknown) => {
          if (connection.done) return
          connection.done = true
          if (err === null || err === undefined) Queue.endUnsafe(queue)
          else Queue.failCauseUnsafe(queue, Cause.fail(fromCause(ctx, err)))
        }
        client.watch(path, params, (phase, object) => {
          if (connection.done) return
          const event = rawEvent(phase, object, decode)
          if (event !== undefined) Queue.offerUnsafe(queue, event)
        }, finish).then(
          (controller) => {
            connection.controller = controller
            if (connection.released) controller.abort()
          },
          (cause: unknown) => finish(cause ?? new Error("watch failed to start"))
        )
        return connection
      }),
      (connection) =>
        Effect.sync(() => {
          connection.released = true
          connection.done = true
          connection.controller?.abort()
        })
    )
  )

/** A `ListWatchSource` for one cluster-wide resource collection. */
export const makeSource = <T>(options: {
  readonly resource: string
  /** Collection path, e.g. `/api/v1/services`. */
  readonly path: string
  /** client-node model name used to turn watch JSON into the same classes the list returns, e.g. `V1Service`. */
  readonly model: string
  readonly watch: WatchClient
  readonly list: (params: PageParams, signal: AbortSignal) => Promise<ListPage<T>>
  readonly tuning?: WatchTuning | undefined
}): ListWatchSource<T> => {
  const ctx: KubeCallContext = { verb: "list", resource: options.resource }
  const minTimeout = Duration.toSeconds(watchTimeoutOf(options.tuning))
  const decode = (raw: unknown): T => {
    const object: T = ObjectSerializer.deserialize(raw, options.model)
    return object
  }
  return {
    resource: options.resource,
    list: listAll(ctx, options.list, options.tuning?.pageSize ?? 500),
    watch: (resourceVersion) =>
      Stream.unwrap(
        Random.nextBetween(minTimeout, minTimeout * 2).pipe(Effect.map((timeout) =>
          watchStream(options.watch, { verb: "watch", resource: options.resource }, options.path, {
            resourceVersion,
            allowWatchBookmarks: true,
            timeoutSeconds: Math.max(1, Math.floor(timeout))
          }, decode)
        ))
      )
  }
}
