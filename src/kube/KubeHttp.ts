/**
 * The apiserver over HTTP: effect's `HttpClient` on Node's `https` with one kept-alive Agent
 * carrying the cluster's CA and client certificate, and the `Authorization` header of the
 * current credentials on every request. The Agent is replaced when the TLS material changes
 * (a rotated CA, an exec plugin's new certificate). A 401 makes the credentials be read again.
 *
 * Every answer of 300 or more becomes a typed `KubeFailure` carrying the apiserver's `Status`;
 * a failed connection is a `KubeError` with the network error's code.
 */
import * as NodeHttpClient from "@effect/platform-node/NodeHttpClient"
import { ByteSize, Context, Duration, Effect, Exit, Layer, Option, Scope, Stream, SynchronizedRef } from "effect"
import { HttpClient, HttpClientRequest, type HttpClientResponse, HttpIncomingMessage } from "effect/http"
import { type ClusterAccess, loadClusterAccess, type TlsMaterial } from "./clusterAccess.ts"
import { fromStatus, type KubeCallContext, KubeError, type KubeFailure, parseStatus } from "./KubeError.ts"

export interface KubeRequest {
  readonly method: "GET" | "POST" | "PUT" | "PATCH" | "DELETE"
  /** `/api/v1/namespaces/default/services/web`. */
  readonly path: string
  readonly query?: Readonly<Record<string, string | number | boolean | undefined>> | undefined
  /** Sent as JSON. */
  readonly body?: unknown
  /** Default `application/json`; patches name their strategy. */
  readonly contentType?: string | undefined
}

/** `fieldManager` etc. are query parameters; patches say which kind they are. */
export const MERGE_PATCH = "application/merge-patch+json"
export const APPLY_PATCH = "application/apply-patch+yaml"

/** No answer of ours is bigger: a page of 500 Services is a few megabytes. */
const MAX_RESPONSE_BYTES = 64 * 1024 * 1024
/** A request that is not a watch is answered well within this, or the connection is dead. */
const REQUEST_TIMEOUT = Duration.seconds(30)
const USER_AGENT = "edge-cloud-controller-manager"

export class KubeHttp extends Context.Service<KubeHttp, {
  /** `https://host:port` of the apiserver, and where the settings came from. */
  readonly server: string
  readonly source: string
  /** Sends the request and returns the JSON body (undefined for an empty one). */
  readonly json: (ctx: KubeCallContext, request: KubeRequest) => Effect.Effect<unknown, KubeFailure>
  /** A streaming GET whose body is one JSON value per line (a watch): ends when the server ends it. */
  readonly lines: (ctx: KubeCallContext, request: KubeRequest) => Stream.Stream<unknown, KubeFailure>
}>()("edge-ccm/kube/KubeHttp") {
  /** Over the cluster described by the kubeconfig (or in-cluster), on Node's `https`. */
  static layer(options: { readonly kubeconfig?: string | undefined } = {}): Layer.Layer<KubeHttp, KubeError> {
    return Layer.effect(
      KubeHttp,
      Effect.flatMap(loadClusterAccess(options.kubeconfig), (access) => make(access, nodeClient))
    )
  }

  /** Over given access and HTTP client (tests answer requests in memory). */
  static layerWith(access: ClusterAccess, client: HttpClient.HttpClient): Layer.Layer<KubeHttp> {
    return Layer.effect(KubeHttp, make(access, () => Effect.succeed(client)))
  }
}

/** Node's `https` with one kept-alive Agent for this TLS material (closed with the scope). */
const nodeClient = (tls: TlsMaterial): Effect.Effect<HttpClient.HttpClient, never, Scope.Scope> =>
  NodeHttpClient.makeAgent({
    keepAlive: true,
    ...(tls.ca !== undefined ? { ca: tls.ca } : {}),
    ...(tls.cert !== undefined ? { cert: tls.cert } : {}),
    ...(tls.key !== undefined ? { key: tls.key } : {}),
    ...(tls.serverName !== undefined ? { servername: tls.serverName } : {}),
    rejectUnauthorized: !tls.insecure
  }).pipe(Effect.flatMap((agent) => Effect.provideService(NodeHttpClient.makeNodeHttp, NodeHttpClient.HttpAgent, agent)))

const tlsIdentity = (tls: TlsMaterial) => JSON.stringify([tls.ca, tls.cert, tls.key, tls.insecure, tls.serverName])

const make = Effect.fnUntraced(function*(
  access: ClusterAccess,
  clientFor: (tls: TlsMaterial) => Effect.Effect<HttpClient.HttpClient, never, Scope.Scope>
) {
  const outer = yield* Effect.scope
  const current = yield* SynchronizedRef.make(
    Option.none<{ readonly identity: string; readonly client: HttpClient.HttpClient; readonly scope: Scope.Closeable }>()
  )

  /** The client for these credentials: the same one until the TLS material changes. */
  const clientFor_ = (tls: TlsMaterial) =>
    SynchronizedRef.modifyEffect(current, (held) => {
      const identity = tlsIdentity(tls)
      if (Option.isSome(held) && held.value.identity === identity) return Effect.succeed([held.value.client, held] as const)
      return Effect.gen(function*() {
        const scope = yield* Scope.fork(outer)
        const client = yield* Scope.provide(clientFor(tls), scope)
        // The old Agent's connections end with it; a watch on them reconnects on the new one.
        if (Option.isSome(held)) yield* Scope.close(held.value.scope, Exit.void)
        const next = Option.some({ identity, client, scope })
        return [client, next] as const
      })
    })

  const send = (ctx: KubeCallContext, request: KubeRequest) =>
    Effect.gen(function*() {
      const credentials = yield* access.credentials
      const client = yield* clientFor_(credentials.tls)
      let built = HttpClientRequest.make(request.method)(`${access.server}${request.path}`).pipe(
        HttpClientRequest.setHeader("User-Agent", USER_AGENT),
        HttpClientRequest.acceptJson
      )
      if (credentials.authorization !== undefined) {
        built = HttpClientRequest.setHeader(built, "Authorization", credentials.authorization)
      }
      const query = Object.entries(request.query ?? {}).flatMap(([key, value]) =>
        value === undefined ? [] : [[key, String(value)] as const]
      )
      if (query.length > 0) built = HttpClientRequest.setUrlParams(built, query)
      if (request.body !== undefined) {
        built = HttpClientRequest.bodyText(built, JSON.stringify(request.body), request.contentType ?? "application/json")
      }
      const response = yield* client.execute(built).pipe(
        Effect.mapError((error) => networkError(ctx, error.reason.cause ?? error))
      )
      if (response.status >= 300) {
        if (response.status === 401) yield* access.invalidate
        const text = yield* response.text.pipe(Effect.orElseSucceed(() => ""))
        return yield* Effect.fail(fromStatus(ctx, response.status, parseStatus(text)))
      }
      return response
    })

  const json = (ctx: KubeCallContext, request: KubeRequest) =>
    send(ctx, request).pipe(
      Effect.flatMap((response) => readJson(ctx, response)),
      Effect.timeoutOrElse({
        duration: REQUEST_TIMEOUT,
        orElse: () => Effect.fail(timedOut(ctx))
      }),
      Effect.scoped
    )

  const lines = (ctx: KubeCallContext, request: KubeRequest): Stream.Stream<unknown, KubeFailure> =>
    Stream.unwrap(Effect.map(send(ctx, request), (response) =>
      response.stream.pipe(
        Stream.mapError((error) => networkError(ctx, error.reason.cause ?? error)),
        Stream.decodeText(),
        Stream.splitLines,
        Stream.filter((line) => line.trim() !== ""),
        Stream.mapEffect((line) =>
          Effect.try({
            try: () => JSON.parse(line) as unknown,
            catch: () => invalidResponse(ctx, `a watch line is not JSON: ${line.slice(0, 80)}`)
          })
        )
      )))

  return KubeHttp.of({ server: access.server, source: access.source, json, lines })
})

const readJson = (ctx: KubeCallContext, response: HttpClientResponse.HttpClientResponse) =>
  response.text.pipe(
    Effect.provideService(HttpIncomingMessage.MaxBodySize, ByteSize.bytes(MAX_RESPONSE_BYTES)),
    Effect.mapError((error) => networkError(ctx, error.reason.cause ?? error)),
    Effect.flatMap((text) =>
      text === ""
        ? Effect.succeed(undefined)
        : Effect.try({
          try: () => JSON.parse(text) as unknown,
          catch: () => invalidResponse(ctx, "the answer is not JSON")
        })
    )
  )

const scopeOf = (ctx: KubeCallContext) =>
  `${ctx.resource}${ctx.name !== undefined ? ` ${ctx.namespace !== undefined ? `${ctx.namespace}/` : ""}${ctx.name}` : ""}`

const fields = (ctx: KubeCallContext) => ({
  verb: ctx.verb,
  resource: ctx.resource,
  ...(ctx.namespace !== undefined ? { namespace: ctx.namespace } : {}),
  ...(ctx.name !== undefined ? { name: ctx.name } : {})
})

/** No answer at all: the network error's code (ECONNREFUSED, ECONNRESET, …) is the reason. */
export const networkError = (ctx: KubeCallContext, cause: unknown): KubeError => {
  const code = codeOf(cause) ?? "NetworkError"
  const detail = cause instanceof Error ? cause.message : String(cause)
  return new KubeError({ ...fields(ctx), reason: code, message: `cannot ${ctx.verb} ${scopeOf(ctx)}: ${detail}` })
}

const codeOf = (cause: unknown, depth = 0): string | undefined => {
  if (typeof cause !== "object" || cause === null || depth > 4) return undefined
  if ("code" in cause && typeof cause.code === "string") return cause.code
  return "cause" in cause ? codeOf(cause.cause, depth + 1) : undefined
}

const timedOut = (ctx: KubeCallContext) =>
  new KubeError({
    ...fields(ctx),
    reason: "Timeout",
    message: `cannot ${ctx.verb} ${scopeOf(ctx)}: no answer within ${Duration.format(REQUEST_TIMEOUT)}`
  })

/** The apiserver answered something that is not what the API says it answers. */
export const invalidResponse = (ctx: KubeCallContext, detail: string) =>
  new KubeError({ ...fields(ctx), reason: "InvalidResponse", message: `cannot ${ctx.verb} ${scopeOf(ctx)}: ${detail}` })
