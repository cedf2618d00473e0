import { assert, describe, expect, it } from "@effect/vitest"
import type { V1SubjectAccessReview, V1TokenReview } from "@kubernetes/client-node"
import { ApiException } from "@kubernetes/client-node"
import { Effect } from "effect"
import { AccessReview, type AccessReviewApis } from "../../src/kube/AccessReview.ts"

interface Sent {
  readonly tokenReviews: Array<V1TokenReview>
  readonly accessReviews: Array<V1SubjectAccessReview>
}

/** Recording fakes: each answers what `reply` says, or throws it when it is an Error. */
const fakeApis = (replies: {
  readonly token?: (review: V1TokenReview) => unknown
  readonly access?: (review: V1SubjectAccessReview) => unknown
}) => {
  const sent: Sent = { tokenReviews: [], accessReviews: [] }
  const answer = async <A>(value: unknown): Promise<A> => {
    if (value instanceof Error) throw value
    return value as A
  }
  const apis: AccessReviewApis = {
    authentication: {
      createTokenReview: (param) => {
        sent.tokenReviews.push(param.body)
        return answer(replies.token?.(param.body))
      }
    },
    authorization: {
      createSubjectAccessReview: (param) => {
        sent.accessReviews.push(param.body)
        return answer(replies.access?.(param.body))
      }
    }
  }
  return { apis, sent }
}

const withReview = <A, E>(apis: AccessReviewApis, f: (review: AccessReview["Service"]) => Effect.Effect<A, E>) =>
  Effect.flatMap(AccessReview, f).pipe(Effect.provide(AccessReview.layerFromApis(apis)))

const prometheus = {
  username: "system:serviceaccount:monitoring:prometheus-k8s",
  uid: "3f1c",
  groups: ["system:serviceaccounts", "system:serviceaccounts:monitoring", "system:authenticated"],
  extra: { "authentication.kubernetes.io/pod-name": ["prometheus-k8s-0"] }
}

describe("AccessReview.authenticate", () => {
  it.effect("sends the token in a TokenReview and returns the user the apiserver names", () => {
    const { apis, sent } = fakeApis({ token: () => ({ status: { authenticated: true, user: prometheus } }) })
    return withReview(apis, (review) =>
      Effect.gen(function*() {
        const user = yield* review.authenticate("eyJhbGciOi.token")
        assert.deepStrictEqual(user, prometheus)
        expect(sent.tokenReviews).toEqual([
          { apiVersion: "authentication.k8s.io/v1", kind: "TokenReview", spec: { token: "eyJhbGciOi.token" } }
        ])
      }))
  })

  it.effect("returns undefined for a token the apiserver does not accept, whatever else the status says", () => {
    const replies = [
      { status: { authenticated: false, error: "invalid bearer token" } },
      { status: { authenticated: false, user: prometheus } },
      { status: { user: prometheus } },
      { status: { authenticated: true, user: { username: "" } } },
      {}
    ]
    const { apis } = fakeApis({ token: () => replies.shift() })
    return withReview(apis, (review) =>
      Effect.gen(function*() {
        for (let i = 0; i < 5; i++) assert.isUndefined(yield* review.authenticate("forged"), `reply ${i}`)
      }))
  })

  it.effect("names the resource and the HTTP status when the review itself is refused", () => {
    const body = JSON.stringify({ kind: "Status", code: 403, reason: "Forbidden", message: "tokenreviews is forbidden" })
    const { apis } = fakeApis({ token: () => new ApiException(403, "Forbidden", body, {}) })
    return withReview(apis, (review) =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(review.authenticate("t"))
        assert.strictEqual(error.status, 403)
        assert.strictEqual(error.resource, "tokenreviews.authentication.k8s.io")
        expect(error.message).toContain("tokenreviews is forbidden")
      }))
  })

  it.effect("refuses a status that is not a TokenReview status", () => {
    const { apis } = fakeApis({ token: () => ({ status: { authenticated: "yes" } }) })
    return withReview(apis, (review) =>
      Effect.map(Effect.flip(review.authenticate("t")), (error) => assert.strictEqual(error.reason, "InvalidResponse")))
  })
})

describe("AccessReview.authorize", () => {
  it.effect("asks a SubjectAccessReview for the user, uid, groups and extra, on the non-resource path", () => {
    const { apis, sent } = fakeApis({ access: () => ({ status: { allowed: true } }) })
    return withReview(apis, (review) =>
      Effect.gen(function*() {
        assert.isTrue(yield* review.authorize(prometheus, { path: "/metrics", verb: "get" }))
        expect(sent.accessReviews).toEqual([{
          apiVersion: "authorization.k8s.io/v1",
          kind: "SubjectAccessReview",
          spec: {
            user: prometheus.username,
            uid: prometheus.uid,
            groups: prometheus.groups,
            extra: prometheus.extra,
            nonResourceAttributes: { path: "/metrics", verb: "get" }
          }
        }])
      }))
  })

  it.effect("is false when the apiserver does not allow it", () => {
    const { apis } = fakeApis({ access: () => ({ status: { allowed: false, reason: "no RBAC policy matched" } }) })
    return withReview(apis, (review) =>
      Effect.map(
        review.authorize({ username: "someone", groups: [] }, { path: "/metrics", verb: "get" }),
        (allowed) => assert.isFalse(allowed)
      ))
  })

  it.effect("fails with a network error's code when the apiserver cannot be reached", () => {
    const refused = Object.assign(new Error("fetch failed"), { cause: Object.assign(new Error("connect ECONNREFUSED"), { code: "ECONNREFUSED" }) })
    const { apis } = fakeApis({ access: () => refused })
    return withReview(apis, (review) =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(review.authorize({ username: "someone", groups: [] }, { path: "/metrics", verb: "get" }))
        assert.strictEqual(error.reason, "ECONNREFUSED")
        assert.strictEqual(error.resource, "subjectaccessreviews.authorization.k8s.io")
      }))
  })
})
