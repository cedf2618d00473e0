/**
 * Who holds a bearer token, and may they do this? The apiserver answers both: a TokenReview
 * (authentication.k8s.io/v1) names the token's user, a SubjectAccessReview
 * (authorization.k8s.io/v1) runs that user through the cluster's RBAC. This is how a component
 * protects its own HTTP endpoints with the cluster's identities, as kube-apiserver's delegated
 * authentication and controller-runtime's secure metrics serving do.
 */
import { Context, Effect, Layer, Ref, Schema } from "effect"
import type { KubeCallContext, KubeFailure } from "./KubeError.ts"
import { KubeError } from "./KubeError.ts"
import { KubeHttp } from "./KubeHttp.ts"

/** The user a token belongs to, as the apiserver authenticated it. */
export interface ReviewedUser {
  readonly username: string
  readonly uid?: string | undefined
  readonly groups: ReadonlyArray<string>
  readonly extra?: Readonly<Record<string, ReadonlyArray<string>>> | undefined
}

/** A request for a path outside the API (`/metrics`, `/healthz`), as RBAC's `nonResourceURLs` name it. */
export interface NonResourceRequest {
  readonly path: string
  readonly verb: string
}

export interface AccessReviewService {
  /** The token's user, or `undefined` when the apiserver does not accept the token. */
  readonly authenticate: (token: string) => Effect.Effect<ReviewedUser | undefined, KubeError>
  /** Whether RBAC (or whichever authorizer the cluster runs) allows `user` this request. */
  readonly authorize: (user: ReviewedUser, request: NonResourceRequest) => Effect.Effect<boolean, KubeError>
}

const TokenReviewStatus = Schema.Struct({
  authenticated: Schema.optional(Schema.Boolean),
  user: Schema.optional(Schema.Struct({
    username: Schema.optional(Schema.String),
    uid: Schema.optional(Schema.String),
    groups: Schema.optional(Schema.Array(Schema.String)),
    extra: Schema.optional(Schema.Record(Schema.String, Schema.Array(Schema.String)))
  }))
})

const SubjectAccessReviewStatus = Schema.Struct({ allowed: Schema.Boolean })

const TOKEN_REVIEWS = "tokenreviews.authentication.k8s.io"
const SUBJECT_ACCESS_REVIEWS = "subjectaccessreviews.authorization.k8s.io"

/** A 404 or 409 means nothing particular for a review: it is one more failed call. */
const failedCall = (failure: KubeFailure): KubeError =>
  failure._tag === "KubeError"
    ? failure
    : new KubeError({
      verb: failure.verb,
      resource: failure.resource,
      status: failure._tag === "KubeNotFound" ? 404 : 409,
      reason: failure.reason,
      message: failure.message
    })

/** The `status` of a review the apiserver sends back. */
const statusOf = (review: unknown): unknown =>
  typeof review === "object" && review !== null && "status" in review ? review.status : undefined

const decodeStatus = <S extends Schema.Top & { readonly DecodingServices: never }>(
  schema: S,
  ctx: KubeCallContext,
  status: unknown
) =>
  Schema.decodeUnknownEffect(schema)(status).pipe(
    Effect.mapError((error) =>
      new KubeError({ ...ctx, reason: "InvalidResponse", message: `the apiserver's ${ctx.resource} status: ${error.message}` })
    )
  )

/** Builds the service over an apiserver connection. */
export const make = (http: KubeHttp["Service"]): AccessReviewService => {
  const authenticate = Effect.fn("AccessReview.authenticate")(function*(token: string) {
    const ctx = { verb: "create", resource: TOKEN_REVIEWS }
    const review = yield* http.json(ctx, {
      method: "POST",
      path: "/apis/authentication.k8s.io/v1/tokenreviews",
      body: { apiVersion: "authentication.k8s.io/v1", kind: "TokenReview", spec: { token } }
    }).pipe(Effect.mapError(failedCall))
    const status = yield* decodeStatus(TokenReviewStatus, ctx, statusOf(review) ?? {})
    const username = status.user?.username
    if (status.authenticated !== true || username === undefined || username === "") return undefined
    const user: ReviewedUser = {
      username,
      uid: status.user?.uid,
      groups: status.user?.groups ?? [],
      extra: status.user?.extra
    }
    return user
  })

  const authorize = Effect.fn("AccessReview.authorize")(function*(user: ReviewedUser, request: NonResourceRequest) {
    const ctx = { verb: "create", resource: SUBJECT_ACCESS_REVIEWS }
    const review = yield* http.json(ctx, {
      method: "POST",
      path: "/apis/authorization.k8s.io/v1/subjectaccessreviews",
      body: {
        apiVersion: "authorization.k8s.io/v1",
        kind: "SubjectAccessReview",
        spec: {
          user: user.username,
          ...(user.uid !== undefined ? { uid: user.uid } : {}),
          groups: user.groups,
          ...(user.extra !== undefined ? { extra: user.extra } : {}),
          nonResourceAttributes: { path: request.path, verb: request.verb }
        }
      }
    }).pipe(Effect.mapError(failedCall))
    const status = yield* decodeStatus(SubjectAccessReviewStatus, ctx, statusOf(review))
    return status.allowed
  })

  return { authenticate, authorize }
}

/** The test layer's state: who each token is, who is allowed, an outage switch, and every call made. */
export class MemoryAccessReviews extends Context.Service<MemoryAccessReviews, {
  readonly users: Ref.Ref<ReadonlyMap<string, ReviewedUser>>
  /** Usernames allowed every non-resource request. */
  readonly allowed: Ref.Ref<ReadonlySet<string>>
  readonly unreachable: Ref.Ref<boolean>
  /** `TokenReview` and `SubjectAccessReview`, in the order they were made. */
  readonly calls: Ref.Ref<ReadonlyArray<"TokenReview" | "SubjectAccessReview">>
}>()("edge-ccm/kube/MemoryAccessReviews") {
  static readonly layer: Layer.Layer<MemoryAccessReviews> = Layer.effect(
    MemoryAccessReviews,
    Effect.all({
      users: Ref.make<ReadonlyMap<string, ReviewedUser>>(new Map()),
      allowed: Ref.make<ReadonlySet<string>>(new Set()),
      unreachable: Ref.make(false),
      calls: Ref.make<ReadonlyArray<"TokenReview" | "SubjectAccessReview">>([])
    })
  )
}

const makeMemory = Effect.gen(function*() {
  const memory = yield* MemoryAccessReviews
  const call = (kind: "TokenReview" | "SubjectAccessReview", resource: string) =>
    Ref.update(memory.calls, (calls) => [...calls, kind]).pipe(
      Effect.andThen(Ref.get(memory.unreachable)),
      Effect.flatMap((down) =>
        down
          ? Effect.fail(new KubeError({
            verb: "create",
            resource,
            reason: "ECONNREFUSED",
            message: `cannot create ${resource}: connection refused`
          }))
          : Effect.void
      )
    )
  const service: AccessReviewService = {
    authenticate: (token) =>
      call("TokenReview", TOKEN_REVIEWS).pipe(Effect.andThen(Ref.get(memory.users)), Effect.map((users) => users.get(token))),
    authorize: (user) =>
      call("SubjectAccessReview", SUBJECT_ACCESS_REVIEWS).pipe(
        Effect.andThen(Ref.get(memory.allowed)),
        Effect.map((allowed) => allowed.has(user.username))
      )
  }
  return service
})

export class AccessReview extends Context.Service<AccessReview, AccessReviewService>()("edge-ccm/kube/AccessReview") {
  /** Reviews through the apiserver connection given (shared with `Kube`). */
  static readonly layerHttp: Layer.Layer<AccessReview, never, KubeHttp> = Layer.effect(
    AccessReview,
    Effect.map(KubeHttp, make)
  )

  /** An apiserver in memory, driven through `MemoryAccessReviews`. */
  static readonly layerMemory: Layer.Layer<AccessReview | MemoryAccessReviews> = Layer.effect(AccessReview, makeMemory)
    .pipe(Layer.provideMerge(MemoryAccessReviews.layer))
}
