/**
 * One SOAP action call, in exactly the form picky routers accept: quoted SOAPAction, byte
 * Content-Length, `Connection: close`, no whitespace between tags, `s:`/`u:` prefixes. The
 * body is read whatever the status (faults arrive as HTTP 500), under a size cap and a
 * per-call timeout; only transient failures are retried, never a UPnP fault.
 */
import { Context, Duration, Effect, Layer, MutableHashMap, Result, Schedule, Semaphore } from "effect"
import { HttpClient, HttpClientRequest } from "effect/http"
import { NetAddress } from "effect/net"
import { GatewayProtocolError, GatewayUnreachable, UpnpError } from "../GatewayError.ts"
import { measured } from "../metrics.ts"
import { fromHttpClientError, readBodyCapped, routerClient, timedOut } from "./HttpExchange.ts"
import {
  childElements,
  childTexts,
  decodeText,
  findChild,
  findPath,
  localName,
  parseDocument,
  textOf,
  type XmlElement
} from "./XmlDocument.ts"

/** One SOAP action call. */
export interface SoapCall {
  readonly controlUrl: string
  readonly serviceType: string
  readonly action: string
  /** Argument names (with their `New` prefix) and values, in the order the action defines. */
  readonly args: ReadonlyArray<readonly [name: string, value: string]>
  /**
   * Whether the call may be repeated after the router might already have acted on it. When
   * false (AddAnyPortMapping: a repeat could reserve a second port) only a refused
   * connection is retried.
   */
  readonly idempotent?: boolean | undefined
}

/** The action's response arguments by local name, values trimmed. */
export type SoapResponse = Readonly<Record<string, string>>

/** How a SOAP call fails. */
export type SoapError = UpnpError | GatewayUnreachable | GatewayProtocolError

/** Backoff for transient failures. */
export interface RetryOptions {
  /** Retries after the first attempt. */
  readonly times: number
  /** The first backoff delay; doubles on each retry, with jitter. */
  readonly base: Duration.Input
  /** The longest backoff delay. */
  readonly cap: Duration.Input
}

/** Timeouts, caps, concurrency and retries of SOAP calls. */
export interface SoapTransportOptions {
  readonly timeout: Duration.Input
  readonly maxResponseBytes: number
  /** SOAP calls in flight per router: small home routers serve one connection at a time. */
  readonly concurrency: number
  readonly retry: RetryOptions
}

/** The defaults of `edge-ccm run`. */
export const defaultSoapTransportOptions: SoapTransportOptions = {
  timeout: "5 seconds",
  maxResponseBytes: 64 * 1024,
  concurrency: 4,
  retry: { times: 2, base: "250 millis", cap: "2 seconds" }
}

const SOAP_ENVELOPE_NS = "http://schemas.xmlsoap.org/soap/envelope/"
const SOAP_ENCODING = "http://schemas.xmlsoap.org/soap/encoding/"

/** Only `&`, `<` and `>` are escaped in values, as miniupnpc does. */
export const escapeValue = (value: string): string =>
  value.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")

const escapeAttribute = (value: string): string => escapeValue(value).replace(/"/g, "&quot;")

/** The request body: declaration and envelope on one line, no whitespace between tags. */
export const buildEnvelope = (call: Pick<SoapCall, "serviceType" | "action" | "args">): string =>
  `<?xml version="1.0"?>` +
  `<s:Envelope xmlns:s="${SOAP_ENVELOPE_NS}" s:encodingStyle="${SOAP_ENCODING}"><s:Body>` +
  `<u:${call.action} xmlns:u="${escapeAttribute(call.serviceType)}">` +
  call.args.map(([name, value]) => `<${name}>${escapeValue(value)}</${name}>`).join("") +
  `</u:${call.action}></s:Body></s:Envelope>`

/** What a reply said: the response arguments, a UPnP fault, or nothing usable. */
export type SoapReply =
  | { readonly _tag: "Response"; readonly values: SoapResponse }
  | { readonly _tag: "Fault"; readonly code: number; readonly description: string }
  | { readonly _tag: "Unusable"; readonly field: string | undefined; readonly reason: string }

const unusable = (reason: string, field?: string): SoapReply => ({ _tag: "Unusable", field, reason })

const readFault = (fault: XmlElement): SoapReply => {
  const upnpError = findPath(fault, ["detail", "UPnPError"])
  const codeText = textOf(upnpError === undefined ? undefined : findChild(upnpError, "errorCode"))
  if (codeText === undefined) {
    const faultString = textOf(findChild(fault, "faultstring"))
    return unusable(`SOAP fault without a UPnP error code${faultString ? ` (${faultString})` : ""}`, "errorCode")
  }
  const code = /^\d{1,4}$/.test(codeText) ? Number(codeText) : Number.NaN
  if (!Number.isInteger(code)) return unusable(`errorCode ${JSON.stringify(codeText)} is not a number`, "errorCode")
  return {
    _tag: "Fault",
    code,
    description: textOf(upnpError === undefined ? undefined : findChild(upnpError, "errorDescription")) ?? ""
  }
}

/**
 * Reads a SOAP reply body. Total: whatever the bytes, the answer is one of the three cases,
 * never a thrown error.
 */
export const readReply = (body: Uint8Array, action: string): Effect.Effect<SoapReply> =>
  parseDocument(decodeText(body)).pipe(
    Effect.map((envelope): SoapReply => {
      if (localName(envelope.name).toLowerCase() !== "envelope") {
        return unusable(`root element is <${envelope.name}>, not a SOAP Envelope`, "Envelope")
      }
      const soapBody = findChild(envelope, "Body")
      if (soapBody === undefined) return unusable("no SOAP Body", "Body")
      const first = childElements(soapBody)[0]
      if (first === undefined) return unusable("empty SOAP Body", `${action}Response`)
      if (localName(first.name).toLowerCase() === "fault") return readFault(first)
      if (localName(first.name).toLowerCase() !== `${action}Response`.toLowerCase()) {
        return unusable(`expected <${action}Response>, got <${first.name}>`, `${action}Response`)
      }
      return { _tag: "Response", values: childTexts(first) }
    }),
    Effect.catch((problem) => Effect.succeed(unusable(problem.reason)))
  )

const isNumericHost = (hostname: string): boolean =>
  Result.isSuccess(NetAddress.ipv4FromString(hostname)) ||
  (hostname.startsWith("[") && hostname.endsWith("]") && Result.isSuccess(NetAddress.ipv6FromString(hostname.slice(1, -1))))

/** Makes SOAP action calls to routers. */
export class SoapTransport extends Context.Service<SoapTransport, {
  readonly call: (call: SoapCall) => Effect.Effect<SoapResponse, SoapError>
}>()("edge-ccm/gateway/upnp/SoapTransport") {
  /** Needs an `HttpClient`; `UpnpGateway.layer` provides Node's. */
  static make(options?: Partial<SoapTransportOptions>) {
    return Effect.gen(function*() {
      const settings = { ...defaultSoapTransportOptions, ...options }
      const client = routerClient(yield* HttpClient.HttpClient)
      const timeoutMillis = Duration.toMillis(settings.timeout)
      const permits = MutableHashMap.empty<string, Semaphore.Semaphore>()
      const semaphoreFor = (host: string): Semaphore.Semaphore => {
        const existing = MutableHashMap.get(permits, host)
        if (existing._tag === "Some") return existing.value
        const created = Semaphore.makeUnsafe(Math.max(1, settings.concurrency))
        MutableHashMap.set(permits, host, created)
        return created
      }
      const backoff = Schedule.min([
        Schedule.exponential(settings.retry.base),
        Schedule.spaced(settings.retry.cap)
      ]).pipe(Schedule.jittered)

      const attempt = (call: SoapCall, context: { readonly router: string; readonly action: string }) => {
        const body = new TextEncoder().encode(buildEnvelope(call))
        const request = HttpClientRequest.post(call.controlUrl).pipe(
          HttpClientRequest.setHeaders({
            "SOAPAction": `"${call.serviceType}#${call.action}"`,
            "Connection": "close"
          }),
          HttpClientRequest.bodyUint8Array(body, `text/xml; charset="utf-8"`)
        )
        return client.execute(request).pipe(
          Effect.mapError((error) => fromHttpClientError(error, context)),
          Effect.flatMap((response) =>
            readBodyCapped(response, settings.maxResponseBytes, context).pipe(
              Effect.flatMap((bytes) => readReply(bytes, call.action)),
              Effect.flatMap((reply): Effect.Effect<SoapResponse, SoapError> => {
                switch (reply._tag) {
                  case "Fault":
                    return Effect.fail(new UpnpError({ ...context, code: reply.code, description: reply.description }))
                  case "Response":
                    if (response.status === 200) return Effect.succeed(reply.values)
                    return Effect.fail(
                      new GatewayProtocolError({ ...context, reason: `HTTP ${response.status} with a non-fault body` })
                    )
                  case "Unusable":
                    // A bare 5xx (no UPnP fault) is the router struggling, which may pass.
                    if (response.status >= 500) {
                      return Effect.fail(
                        new GatewayUnreachable({ ...context, reason: `HTTP ${response.status} without a UPnP fault` })
                      )
                    }
                    return Effect.fail(
                      new GatewayProtocolError({
                        ...context,
                        reason: response.status === 200 ? reply.reason : `HTTP ${response.status}: ${reply.reason}`,
                        ...(reply.field !== undefined ? { field: reply.field } : {})
                      })
                    )
                }
              })
            )
          ),
          Effect.timeoutOrElse({ duration: timeoutMillis, orElse: () => Effect.fail(timedOut(context, timeoutMillis)) })
        )
      }

      const call = Effect.fn("SoapTransport.call")(function*(call: SoapCall) {
        const context = { router: call.controlUrl, action: call.action }
        const url = URL.parse(call.controlUrl)
        if (url === null || url.protocol !== "http:") {
          return yield* new GatewayProtocolError({ ...context, field: "controlURL", reason: "not an http URL" })
        }
        // The Host header must be numeric: miniupnpd refuses host names (a DNS-rebinding guard).
        // IPv6 literals (`[2001:db8::1]`) are numeric too: pinholes are asked for over IPv6.
        if (!isNumericHost(url.hostname)) {
          return yield* new GatewayProtocolError({
            ...context,
            field: "controlURL",
            reason: `host ${url.hostname} is not a numeric IP address`
          })
        }
        const semaphore = semaphoreFor(url.host)
        const idempotent = call.idempotent !== false
        return yield* measured(
          call.action,
          attempt(call, context).pipe(
            Semaphore.withPermit(semaphore),
            Effect.retry({
              schedule: backoff,
              times: settings.retry.times,
              while: (error: SoapError) =>
                error._tag === "GatewayUnreachable" && (idempotent || error.reason.startsWith("ECONNREFUSED"))
            })
          )
        )
      })

      return SoapTransport.of({ call })
    })
  }

  static layer(options?: Partial<SoapTransportOptions>): Layer.Layer<SoapTransport, never, HttpClient.HttpClient> {
    return Layer.effect(SoapTransport, SoapTransport.make(options))
  }
}
