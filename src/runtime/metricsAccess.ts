/**
 * Who may read /metrics: the bearer token of each request is reviewed by the apiserver
 * (TokenReview, then SubjectAccessReview for `get` on the non-resource URL `/metrics`), as
 * controller-runtime's `WithAuthenticationAndAuthorization` filter does. Decisions are cached
 * briefly, per token, so a scraper every 15 s costs at most two API calls per scrape; when the
 * apiserver cannot answer, nobody gets in.
 */
import { Cache, Duration, Effect, Exit, Semaphore } from "effect"
import { AccessReview, type NonResourceRequest } from "../kube/AccessReview.ts"

/** What to answer: 200, 401, 403, or 503 when the apiserver could not tell. */
export type AccessDecision = "allowed" | "unauthenticated" | "forbidden" | "unavailable"

/** How long a token's verdict is remembered, and how many are. */
export interface MetricsAccessOptions {
  /** How long an allowed token is let in without asking again. */
  readonly allowedFor: Duration.Input
  /** How long an unknown or forbidden token is turned away without asking again. */
  readonly deniedFor: Duration.Input
  /** Tokens remembered at most (the least recently used go first). */
  readonly capacity: number
  /** Reviews in flight at once: a flood of made-up tokens cannot flood the apiserver. */
  readonly reviewsInFlight: number
  /** Per review, after which the request is answered 503. */
  readonly reviewTimeout: Duration.Input
}

/** 10 s either way, 256 tokens, 4 reviews in flight, 5 s per review. */
export const defaultMetricsAccess: MetricsAccessOptions = {
  allowedFor: "10 seconds",
  deniedFor: "10 seconds",
  capacity: 256,
  reviewsInFlight: 4,
  reviewTimeout: "5 seconds"
}

/** The request every token is reviewed for. */
export const METRICS_REQUEST: NonResourceRequest = { path: "/metrics", verb: "get" }

/** Service account tokens are about 1 KB; anything much longer is not worth a review. */
const MAX_TOKEN_LENGTH = 4096

/** The token of an `Authorization: Bearer <token>` header (RFC 6750's token68 characters), if any. */
export const bearerToken = (authorization: string | undefined): string | undefined => {
  const match = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(authorization ?? "")
  const token = match?.[1]
  return token !== undefined && token.length <= MAX_TOKEN_LENGTH ? token : undefined
}

/** Decides, per request, from its `Authorization` header. */
export const makeMetricsAccess = Effect.fn("MetricsAccess.make")(function*(options: MetricsAccessOptions) {
  const review = yield* AccessReview
  const inFlight = yield* Semaphore.make(options.reviewsInFlight)
  const allowedFor = Duration.fromInputUnsafe(options.allowedFor)
  const deniedFor = Duration.fromInputUnsafe(options.deniedFor)

  const ask = (token: string) =>
    Effect.gen(function*() {
      const user = yield* review.authenticate(token)
      if (user === undefined) return "unauthenticated" as const
      return (yield* review.authorize(user, METRICS_REQUEST)) ? "allowed" as const : "forbidden" as const
    }).pipe(Effect.timeout(options.reviewTimeout), inFlight.withPermits(1))

  const decisions = yield* Cache.makeWith(ask, {
    capacity: options.capacity,
    // A failed review is never remembered: the next request asks again.
    timeToLive: (exit) => Exit.isSuccess(exit) ? (exit.value === "allowed" ? allowedFor : deniedFor) : Duration.zero
  })

  return {
    decide: (authorization: string | undefined): Effect.Effect<AccessDecision> => {
      const token = bearerToken(authorization)
      if (token === undefined) return Effect.succeed("unauthenticated")
      return Cache.get(decisions, token).pipe(
        Effect.catch((error) =>
          Effect.logWarning("cannot review a /metrics request's token: answering 503").pipe(
            Effect.annotateLogs({ error: error.message }),
            Effect.as("unavailable" as const)
          )
        )
      )
    }
  }
})
