import { assert, describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import { AccessReview } from "../../src/kube/AccessReview.ts"
import { type Answer, fakeApiserver, statusBody } from "../support/FakeApiserver.ts"

/** The apiserver answers each review kind as told; `sent` holds the review bodies as sent. */
const fakeApis = (replies: {
  readonly token?: (review: unknown) => Answer
  readonly access?: (review: unknown) => Answer
}) => {
  const apiserver = fakeApiserver((request) =>
    request.path === "/apis/authentication.k8s.io/v1/tokenreviews"
      ? replies.token?.(request.body) ?? { status: 404 }
      : request.path === "/apis/authorization.k8s.io/v1/subjectaccessreviews"
      ? replies.access?.(request.body) ?? { status: 404 }
      : { status: 404 }
  )
  const sent = {
    get tokenReviews() {
      return apiserver.requests.filter((r) => r.path.endsWith("/tokenreviews")).map((r) => r.body)
    },
    get accessReviews() {
      return apiserver.requests.filter((r) => r.path.endsWith("/subjectaccessreviews")).map((r) => r.body)
    }
  }
  return { apis: apiserver.layer, sent }
}

const ok = (body: unknown): Answer => ({ status: 201, body })

const withReview = <A, E>(
  apis: ReturnType<typeof fakeApis>["apis"],
  f: (review: AccessReview["Service"]) => Effect.Effect<A, E>
) => Effect.flatMap(AccessReview, f).pipe(Effect.provide(AccessReview.layerHttp), Effect.provide(apis))

const prometheus = {
  username: "system:serviceaccount:monitoring:prometheus-k8s",
  uid: "3f1c",
  groups: ["system:serviceaccounts", "system:serviceaccounts:monitoring", "system:authenticated"],
  extra: { "authentication.kubernetes.io/pod-name": ["prometheus-k8s-0"] }
}

describe("AccessReview.authenticate", () => {
  it.effect("sends the token in a TokenReview and returns the user the apiserver names", () => {
    const { apis, sent } = fakeApis({ token: () => ok({ status: { authenticated: true, user: prometheus } }) })
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
    const { apis } = fakeApis({ token: () => ok(replies.shift()) })
    return withReview(apis, (review) =>
      Effect.gen(function*() {
        for (let i = 0; i < 5; i++) assert.isUndefined(yield* review.authenticate("forged"), `reply ${i}`)
      }))
  })

  it.effect("names the resource and the HTTP status when the review itself is refused", () => {
    const { apis } = fakeApis({ token: () => ({ status: 403, body: statusBody(403, "Forbidden", "tokenreviews is forbidden") }) })
    return withReview(apis, (review) =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(review.authenticate("t"))
        assert.strictEqual(error.status, 403)
        assert.strictEqual(error.resource, "tokenreviews.authentication.k8s.io")
        expect(error.message).toContain("tokenreviews is forbidden")
      }))
  })

  it.effect("refuses a status that is not a TokenReview status", () => {
    const { apis } = fakeApis({ token: () => ok({ status: { authenticated: "yes" } }) })
    return withReview(apis, (review) =>
      Effect.map(Effect.flip(review.authenticate("t")), (error) => assert.strictEqual(error.reason, "InvalidResponse")))
  })
})

describe("AccessReview.authorize", () => {
  it.effect("asks a SubjectAccessReview for the user, uid, groups and extra, on the non-resource path", () => {
    const { apis, sent } = fakeApis({ access: () => ok({ status: { allowed: true } }) })
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
    const { apis } = fakeApis({ access: () => ok({ status: { allowed: false, reason: "no RBAC policy matched" } }) })
    return withReview(apis, (review) =>
      Effect.map(
        review.authorize({ username: "someone", groups: [] }, { path: "/metrics", verb: "get" }),
        (allowed) => assert.isFalse(allowed)
      ))
  })

  it.effect("fails with a network error's code when the apiserver cannot be reached", () => {
    const { apis } = fakeApis({ access: () => ({ refused: "ECONNREFUSED" }) })
    return withReview(apis, (review) =>
      Effect.gen(function*() {
        const error = yield* Effect.flip(review.authorize({ username: "someone", groups: [] }, { path: "/metrics", verb: "get" }))
        assert.strictEqual(error.reason, "ECONNREFUSED")
        assert.strictEqual(error.resource, "subjectaccessreviews.authorization.k8s.io")
      }))
  })
})
