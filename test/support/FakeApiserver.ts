/**
 * An apiserver answered in memory, behind the real `KubeHttp`: each request is recorded as it
 * would go on the wire (method, path, query, content type, JSON body) and answered by `reply`.
 * A watch is answered with a body the test writes lines into.
 */
import { Effect, Layer } from "effect"
import { HttpClient, HttpClientError, HttpClientResponse } from "effect/http"
import type { ClusterAccess } from "../../src/kube/clusterAccess.ts"
import { KubeHttp } from "../../src/kube/KubeHttp.ts"

export interface RecordedRequest {
  readonly method: string
  readonly path: string
  readonly query: Readonly<Record<string, string>>
  readonly contentType: string | undefined
  readonly authorization: string | undefined
  readonly body: unknown
}

/** An answer: a status with a JSON body, or a stream of watch lines. */
export type Answer =
  | { readonly status: number; readonly body?: unknown }
  | { readonly status: 200; readonly watch: WatchConnection }
  /** No answer at all: the connection fails with this code (ECONNREFUSED, …). */
  | { readonly refused: string }

/** One watch connection: the test sends lines, then ends or breaks it. */
export interface WatchConnection {
  readonly send: (type: string, object: unknown) => void
  readonly end: () => void
  /** Resolves when the client has gone away (the stream was interrupted). */
  readonly cancelled: Promise<void>
}

export const makeWatchConnection = (): WatchConnection & { readonly body: ReadableStream<Uint8Array> } => {
  let controller: ReadableStreamDefaultController<Uint8Array> | undefined
  let cancel: () => void = () => {}
  const cancelled = new Promise<void>((resolve) => {
    cancel = resolve
  })
  const body = new ReadableStream<Uint8Array>({
    start: (c) => {
      controller = c
    },
    cancel: () => cancel()
  })
  const encoder = new TextEncoder()
  return {
    body,
    send: (type, object) => controller?.enqueue(encoder.encode(`${JSON.stringify({ type, object })}\n`)),
    end: () => controller?.close(),
    cancelled
  }
}

export const statusBody = (code: number, reason: string, message: string, causes?: ReadonlyArray<{ field: string }>) => ({
  kind: "Status",
  apiVersion: "v1",
  status: "Failure",
  code,
  reason,
  message,
  ...(causes === undefined ? {} : { details: { causes } })
})

export const TEST_ACCESS: ClusterAccess = {
  server: "https://apiserver.test:6443",
  source: "a test",
  credentials: Effect.succeed({ tls: { insecure: false }, authorization: "Bearer test-token" }),
  invalidate: Effect.void
}

/** `KubeHttp` over the fake; `requests` fills as they are sent. */
export const fakeApiserver = (reply: (request: RecordedRequest) => Answer | Promise<Answer>, access = TEST_ACCESS) => {
  const requests: Array<RecordedRequest> = []
  const client = HttpClient.make((request, url) =>
    Effect.promise(async () => {
      const text = request.body._tag === "Uint8Array" ? new TextDecoder().decode(request.body.body) : undefined
      const recorded: RecordedRequest = {
        method: request.method,
        path: url.pathname,
        query: Object.fromEntries(url.searchParams),
        contentType: request.body._tag === "Uint8Array" ? request.body.contentType : undefined,
        authorization: request.headers["authorization"],
        body: text === undefined ? undefined : JSON.parse(text)
      }
      requests.push(recorded)
      return await reply(recorded)
    }).pipe(
      Effect.flatMap((answer) => {
        if ("refused" in answer) {
          const cause = Object.assign(new Error(`connect ${answer.refused} apiserver.test:6443`), { code: answer.refused })
          return Effect.fail(
            new HttpClientError.HttpClientError({ reason: new HttpClientError.TransportError({ request, cause }) })
          )
        }
        const body = "watch" in answer
          ? (answer.watch as ReturnType<typeof makeWatchConnection>).body
          : answer.body === undefined
          ? null
          : JSON.stringify(answer.body)
        return Effect.succeed(
          HttpClientResponse.fromWeb(request, new Response(body, { status: answer.status, headers: { "content-type": "application/json" } }))
        )
      })
    )
  )
  return { layer: KubeHttp.layerWith(access, client) as Layer.Layer<KubeHttp>, requests }
}
