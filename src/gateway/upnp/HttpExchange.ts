/**
 * What the description fetch and the SOAP transport share: reading a body under a size cap,
 * and turning HTTP client failures into gateway errors that say whether trying again helps.
 */
import { Effect, Stream } from "effect"
import type { HttpClientError, HttpClientResponse } from "effect/http"
import { GatewayProtocolError, GatewayUnreachable } from "../GatewayError.ts"

/** Reads the whole body, failing as soon as it grows past `maxBytes` (chunked replies included). */
export const readBodyCapped = Effect.fnUntraced(function*(
  response: HttpClientResponse.HttpClientResponse,
  maxBytes: number,
  context: { readonly router: string; readonly action: string }
) {
  const tooLarge = () =>
    new GatewayProtocolError({ ...context, reason: `response larger than ${maxBytes} bytes refused` })
  const declared = Number(response.headers["content-length"] ?? Number.NaN)
  if (Number.isFinite(declared) && declared > maxBytes) return yield* tooLarge()
  const chunks: Array<Uint8Array> = []
  let size = 0
  yield* Stream.runForEach(response.stream, (chunk) => {
    size += chunk.length
    if (size > maxBytes) return Effect.fail(tooLarge())
    chunks.push(chunk)
    return Effect.void
  }).pipe(Effect.mapError((error) => error._tag === "HttpClientError" ? fromHttpClientError(error, context) : error))
  const body = new Uint8Array(size)
  let offset = 0
  for (const chunk of chunks) {
    body.set(chunk, offset)
    offset += chunk.length
  }
  return body
})

const causeCode = (cause: unknown): string | undefined => {
  if (typeof cause !== "object" || cause === null) return undefined
  const code = "code" in cause ? cause.code : undefined
  if (typeof code === "string") return code
  return "cause" in cause ? causeCode(cause.cause) : undefined
}

/**
 * Connection failures (refused, reset, unreachable) and broken bodies are transient; a URL the
 * client cannot even use is the router's (or the caller's) mistake and is not retried.
 */
export const fromHttpClientError = (
  error: HttpClientError.HttpClientError,
  context: { readonly router: string; readonly action: string }
): GatewayUnreachable | GatewayProtocolError => {
  const reason = error.reason
  switch (reason._tag) {
    case "TransportError":
    case "DecodeError":
    case "EmptyBodyError": {
      const code = causeCode(reason.cause)
      const detail = reason.cause instanceof Error ? reason.cause.message : reason.description
      return new GatewayUnreachable({
        ...context,
        reason: code === undefined
          ? detail ?? reason._tag
          : detail === undefined || detail === ""
          ? code
          : detail.includes(code)
          ? detail
          : `${code}: ${detail}`
      })
    }
    default:
      return new GatewayProtocolError({ ...context, reason: reason.message })
  }
}

/** The error for a call that took longer than its budget. */
export const timedOut = (context: { readonly router: string; readonly action: string }, millis: number) =>
  new GatewayUnreachable({ ...context, reason: `no answer within ${millis} ms` })
