/**
 * What the description fetch and the SOAP transport share: the client they speak through,
 * reading a body under a size cap, and turning HTTP client failures into gateway errors that
 * say whether trying again helps.
 */
import { ByteSize, Effect } from "effect"
import { HttpClient, type HttpClientError, type HttpClientResponse, HttpIncomingMessage } from "effect/http"
import { GatewayProtocolError, GatewayUnreachable } from "../GatewayError.ts"

/**
 * The client as a router is spoken to: without the HTTP client's span and its trace headers.
 * A LAN device has no use for `traceparent` and `b3` (and a small UPnP server, a small header
 * buffer), and that span cost 0.2-0.3 ms of a SOAP call's 1.5-2 ms of CPU (docs/benchmarks.md,
 * "The everyday case"); `SoapTransport.call` and `Description.fetch` keep spans of their own.
 */
export const routerClient = (client: HttpClient.HttpClient): HttpClient.HttpClient =>
  HttpClient.transform(client, (effect) => Effect.provideService(effect, HttpClient.TracerDisabledWhen, () => true))

/**
 * Reads the whole body, failing as soon as it grows past `maxBytes` (chunked replies included).
 * The HTTP client's own limit does the counting; reading the body whole, rather than as a
 * stream, also spares an abort of the finished request (and its exception) on every call.
 */
export const readBodyCapped = (
  response: HttpClientResponse.HttpClientResponse,
  maxBytes: number,
  context: { readonly router: string; readonly action: string }
): Effect.Effect<Uint8Array, GatewayProtocolError | GatewayUnreachable> => {
  const tooLarge = () => new GatewayProtocolError({ ...context, reason: `response larger than ${maxBytes} bytes refused` })
  const declared = Number(response.headers["content-length"] ?? Number.NaN)
  if (Number.isFinite(declared) && declared > maxBytes) return Effect.fail(tooLarge())
  return response.arrayBuffer.pipe(
    Effect.map((buffer) => new Uint8Array(buffer)),
    Effect.provideService(HttpIncomingMessage.MaxBodySize, ByteSize.bytes(maxBytes)),
    Effect.mapError((error) => causeTag(error.reason.cause) === "MaxBytesError" ? tooLarge() : fromHttpClientError(error, context))
  )
}

const causeTag = (cause: unknown): string | undefined =>
  typeof cause === "object" && cause !== null && "_tag" in cause && typeof cause._tag === "string" ? cause._tag : undefined

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
