/**
 * Typed failures of calls to the Kubernetes API server. Each one names the verb and
 * resource we attempted, and carries the apiserver's own `Status` (HTTP code, reason,
 * message), so an RBAC denial says exactly which permission is missing.
 */
import { Option, Predicate, Schema } from "effect"

/** What we were doing when a call failed. */
export interface KubeCallContext {
  readonly verb: string
  readonly resource: string
  readonly namespace?: string | undefined
  readonly name?: string | undefined
}

const scope = (ctx: KubeCallContext): string =>
  ctx.name !== undefined
    ? `${ctx.resource} ${ctx.namespace !== undefined ? `${ctx.namespace}/` : ""}${ctx.name}`
    : ctx.namespace !== undefined
    ? `${ctx.resource} in namespace ${ctx.namespace}`
    : `${ctx.resource} (all namespaces)`

/** Any failure that is neither a 404 nor a 409: RBAC (403), validation (422), 410 Gone, 5xx, network. */
export class KubeError extends Schema.TaggedError<KubeError>()("KubeError", {
  verb: Schema.String,
  resource: Schema.String,
  namespace: Schema.optional(Schema.String),
  name: Schema.optional(Schema.String),
  /** HTTP status code; absent when no response arrived (connection refused, reset, TLS, timeout). */
  status: Schema.optional(Schema.Number),
  /** The apiserver's `Status.reason` (e.g. `Forbidden`, `Invalid`, `Expired`), or the network error code. */
  reason: Schema.String,
  message: Schema.String,
  /** For 422 Invalid: the fields the apiserver rejected (`details.causes[].field`). */
  fields: Schema.optional(Schema.Array(Schema.String))
}) {
  /** The list or watch resourceVersion is too old: the only cure is a fresh list. */
  get isGone(): boolean {
    return this.status === 410
  }
}

/** 409: the object changed since we read it (stale resourceVersion), or it already exists. */
export class KubeConflict extends Schema.TaggedError<KubeConflict>()("KubeConflict", {
  verb: Schema.String,
  resource: Schema.String,
  namespace: Schema.optional(Schema.String),
  name: Schema.optional(Schema.String),
  reason: Schema.String,
  message: Schema.String
}) {}

/** 404: the object (or its namespace) does not exist. */
export class KubeNotFound extends Schema.TaggedError<KubeNotFound>()("KubeNotFound", {
  verb: Schema.String,
  resource: Schema.String,
  namespace: Schema.optional(Schema.String),
  name: Schema.optional(Schema.String),
  reason: Schema.String,
  message: Schema.String
}) {}

export type KubeFailure = KubeError | KubeConflict | KubeNotFound

/** The apiserver's `metav1.Status`, as far as we use it. */
export const KubeStatus = Schema.Struct({
  kind: Schema.optional(Schema.String),
  status: Schema.optional(Schema.String),
  message: Schema.optional(Schema.String),
  reason: Schema.optional(Schema.String),
  code: Schema.optional(Schema.Number),
  details: Schema.optional(Schema.Struct({
    causes: Schema.optional(Schema.Array(Schema.Struct({
      reason: Schema.optional(Schema.String),
      message: Schema.optional(Schema.String),
      field: Schema.optional(Schema.String)
    })))
  }))
})
export type KubeStatus = typeof KubeStatus.Type

const decodeStatus = Schema.decodeUnknownOption(KubeStatus)
const decodeStatusJson = Schema.decodeUnknownOption(Schema.fromJsonString(KubeStatus))

/** Reads a `Status` from an error body (raw text) or a watch's ERROR object. */
export const parseStatus = (body: unknown): KubeStatus | undefined =>
  Option.getOrUndefined(Predicate.isString(body) ? decodeStatusJson(body) : decodeStatus(body))

const httpReason = (status: number): string => {
  switch (status) {
    case 400:
      return "BadRequest"
    case 401:
      return "Unauthorized"
    case 403:
      return "Forbidden"
    case 404:
      return "NotFound"
    case 405:
      return "MethodNotAllowed"
    case 409:
      return "Conflict"
    case 410:
      return "Gone"
    case 415:
      return "UnsupportedMediaType"
    case 422:
      return "Invalid"
    case 429:
      return "TooManyRequests"
    case 500:
      return "InternalError"
    case 503:
      return "ServiceUnavailable"
    case 504:
      return "Timeout"
    default:
      return status >= 500 ? "ServerError" : "Unknown"
  }
}

const fields = (ctx: KubeCallContext) => ({
  verb: ctx.verb,
  resource: ctx.resource,
  ...(ctx.namespace !== undefined ? { namespace: ctx.namespace } : {}),
  ...(ctx.name !== undefined ? { name: ctx.name } : {})
})

/** Builds the typed error for an HTTP status and an optional apiserver `Status`. */
export const fromStatus = (ctx: KubeCallContext, code: number, status: KubeStatus | undefined): KubeFailure => {
  const reason = status?.reason !== undefined && status.reason !== "" ? status.reason : httpReason(code)
  const detail = status?.message !== undefined && status.message !== "" ? `: ${status.message}` : ""
  const message = `cannot ${ctx.verb} ${scope(ctx)}: HTTP ${code} ${reason}${detail}`
  if (code === 404) return new KubeNotFound({ ...fields(ctx), reason, message })
  if (code === 409) return new KubeConflict({ ...fields(ctx), reason, message })
  const rejected = (status?.details?.causes ?? []).flatMap((cause) => cause.field !== undefined ? [cause.field] : [])
  return new KubeError({
    ...fields(ctx),
    status: code,
    reason,
    message,
    ...(rejected.length > 0 ? { fields: [...new Set(rejected)] } : {})
  })
}
