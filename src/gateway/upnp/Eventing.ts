/**
 * UPnP eventing (GENA) on the WAN connection service: the router tells us when its external
 * address or connection status changes, instead of being polled. `watchWanEvents` subscribes,
 * renews before the granted timeout, subscribes afresh when a renewal is refused (412: the
 * router restarted or forgot us) or a NOTIFY is missed (a SEQ gap), and unsubscribes when the
 * stream's consumer stops. A router that refuses or ignores SUBSCRIBE fails the stream with
 * `EventSubscriptionFailed` after a few attempts, so the caller falls back to polling.
 * Behaviour seen on miniupnpd: docs/upnp-eventing-field-notes.md.
 */
import { randomBytes } from "node:crypto"
import { request as httpRequest } from "node:http"
import { Duration, Effect, Metric, Queue, Result, Schedule, Schema, Semaphore, Stream } from "effect"
import * as metrics from "../metrics.ts"
import { type AcceptedNotify, listenForNotify } from "./EventCallbackServer.ts"
import {
  type Grant,
  MAX_NOTIFY_BODY_BYTES,
  nextSeq,
  readGrant,
  readPropertySet,
  readSeq,
  type WanEventedVariables
} from "./GenaMessages.ts"

/** SUBSCRIBE was refused, timed out, or the subscription could not be kept: poll instead. */
export class EventSubscriptionFailed extends Schema.TaggedError<EventSubscriptionFailed>()("EventSubscriptionFailed", {
  router: Schema.String,
  eventUrl: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `UPnP eventing on ${this.eventUrl} is not available: ${this.reason}`
  }
}

/** What a watch reports, in the order it happened. */
export type WanEvent =
  | { readonly _tag: "Subscribed"; readonly sid: string; readonly timeoutSeconds: number }
  | { readonly _tag: "Renewed"; readonly sid: string; readonly timeoutSeconds: number }
  /** The subscription ended without our asking; a new one is being made. */
  | { readonly _tag: "SubscriptionLost"; readonly sid: string; readonly reason: string }
  /**
   * The first value (`previous` undefined) and every change, with the SID and SEQ of the NOTIFY
   * that carried it. `""` or `0.0.0.0`: no address.
   */
  | {
    readonly _tag: "ExternalIPAddressChanged"
    readonly externalIp: string
    readonly previous: string | undefined
    readonly sid: string
    readonly seq: number
  }
  | {
    readonly _tag: "ConnectionStatusChanged"
    readonly status: string
    readonly previous: string | undefined
    readonly sid: string
    readonly seq: number
  }

/** Where to subscribe, and how. */
export interface EventingOptions {
  /** The WAN connection service's absolute eventSubURL: `http://<router ipv4>:<port>/path`. */
  readonly eventUrl: string
  /** The node's address toward the router: the callback server binds here only. */
  readonly localAddress: string
  /** 0: any free port. */
  readonly callbackPort: number
  /** The TIMEOUT asked for; renewal comes at half of what is granted. */
  readonly requestedTimeoutSeconds: number
  /** Per SUBSCRIBE/UNSUBSCRIBE request. */
  readonly requestTimeout: Duration.Input
  /** Tries of one (re)subscription before the stream fails. */
  readonly attempts: number
  /** Delay before the second try; doubles after. */
  readonly retryBase: Duration.Input
  readonly maxBodyBytes: number
  /** Told of each NOTIFY refused before its body was read, and why. */
  readonly onRefused?: ((reason: string, status: number) => void) | undefined
}

/** The defaults: a 30-minute subscription, renewed every 15 minutes. */
export const defaultEventingOptions: Omit<EventingOptions, "eventUrl" | "localAddress"> = {
  callbackPort: 0,
  requestedTimeoutSeconds: 1800,
  requestTimeout: "5 seconds",
  attempts: 3,
  retryBase: "1 second",
  maxBodyBytes: MAX_NOTIFY_BODY_BYTES
}

/** The answer to one GENA request: its status and the two headers we read. */
interface GenaAnswer {
  readonly status: number
  readonly sid: string | undefined
  readonly timeout: string | undefined
}

/** One SUBSCRIBE or UNSUBSCRIBE; the body of the answer is never read. */
const genaRequest = (
  method: "SUBSCRIBE" | "UNSUBSCRIBE",
  url: URL,
  localAddress: string,
  headers: Readonly<Record<string, string>>,
  timeoutMillis: number
): Effect.Effect<GenaAnswer, string> =>
  Effect.callback<GenaAnswer, string>((resume) => {
    const request = httpRequest({
      method,
      host: url.hostname,
      port: url.port === "" ? 80 : Number(url.port),
      path: `${url.pathname}${url.search}`,
      // miniupnpd wants the callback's host to be the requester: send from the address we bind.
      localAddress,
      headers: { ...headers, "HOST": url.host, "Content-Length": "0", "Connection": "close" },
      maxHeaderSize: 8 * 1024
    }, (response) => {
      const header = (name: string) => {
        const value = response.headers[name]
        return typeof value === "string" ? value : undefined
      }
      resume(Effect.succeed({ status: response.statusCode ?? 0, sid: header("sid"), timeout: header("timeout") }))
      response.destroy()
    })
    request.on("error", (error) => resume(Effect.fail(error.message)))
    request.end()
    return Effect.sync(() => request.destroy())
  }).pipe(
    Effect.timeoutOrElse({ duration: timeoutMillis, orElse: () => Effect.fail(`no answer within ${timeoutMillis} ms`) })
  )

const secretPath = () => `/gena/${randomBytes(16).toString("hex")}`

/**
 * The router's events as a stream. The callback server, the subscription and its renewals live
 * as long as the stream is consumed; when it stops, the subscription is cancelled.
 */
export const watchWanEvents = (
  options: Pick<EventingOptions, "eventUrl" | "localAddress"> & Partial<EventingOptions>
): Stream.Stream<WanEvent, EventSubscriptionFailed> =>
  Stream.callback<WanEvent, EventSubscriptionFailed>((events) =>
    Effect.gen(function*() {
      const settings = { ...defaultEventingOptions, ...options }
      const url = URL.parse(settings.eventUrl)
      const routerAddress = url?.hostname ?? ""
      const fail = (reason: string) =>
        new EventSubscriptionFailed({ router: routerAddress, eventUrl: settings.eventUrl, reason })
      if (url === null || url.protocol !== "http:" || !/^\d{1,3}(\.\d{1,3}){3}$/.test(url.hostname)) {
        return yield* fail("the event URL is not http://<IPv4 address>/…")
      }
      const timeoutMillis = Duration.toMillis(settings.requestTimeout)

      // Subscription state, changed only under `lock`.
      let sid: string | undefined
      let pending = false
      let path = secretPath()
      let expectedSeq: number | undefined
      let externalIp: string | undefined
      let status: string | undefined
      const lock = yield* Semaphore.make(1)

      // NOTIFYs wait here for the handler; a flood beyond it is dropped, not buffered.
      const inbox = yield* Queue.dropping<AcceptedNotify>(16)
      const countNotify = (result: "accepted" | "refused") =>
        Metric.update(Metric.withAttributes(metrics.eventNotifies, { router: routerAddress, result }), 1)
      // Refusals are counted off the server's callback, by a fiber; a flood only loses counts.
      const refusals = yield* Queue.sliding<void>(256)
      yield* Effect.forkScoped(Effect.forever(Effect.andThen(Queue.take(refusals), countNotify("refused"))))
      const port = yield* listenForNotify(settings.localAddress, settings.callbackPort, {
        routerAddress,
        path: () => path,
        acceptsSid: (candidate) => candidate === sid || pending,
        maxBodyBytes: settings.maxBodyBytes,
        deliver: (notify) => Queue.offerUnsafe(inbox, notify),
        refused: (reason, status) => {
          Queue.offerUnsafe(refusals, undefined)
          settings.onRefused?.(reason, status)
        }
      }).pipe(Effect.mapError((error) => fail(error.reason)))

      const emit = (event: WanEvent) => Queue.offer(events, event)
      const retry = Schedule.exponential(settings.retryBase).pipe(Schedule.jittered)
      const bounded = <A>(effect: Effect.Effect<A, string>) =>
        effect.pipe(Effect.retry({ schedule: retry, times: Math.max(0, settings.attempts - 1) }), Effect.mapError(fail))

      const grantOf = (answer: GenaAnswer, what: string): Effect.Effect<Grant, string> => {
        if (answer.status !== 200) return Effect.fail(`${what} answered HTTP ${answer.status}`)
        return Result.match(readGrant(answer, settings.requestedTimeoutSeconds), {
          onFailure: (reason) => Effect.fail(`${what}: ${reason}`),
          onSuccess: Effect.succeed
        })
      }

      /** A fresh subscription on a fresh path; the values are read again from its initial NOTIFY. */
      const subscribe = Effect.gen(function*() {
        path = secretPath()
        sid = undefined
        pending = true
        expectedSeq = undefined
        const grant = yield* bounded(
          genaRequest("SUBSCRIBE", url, settings.localAddress, {
            "CALLBACK": `<http://${settings.localAddress}:${port}${path}>`,
            "NT": "upnp:event",
            "TIMEOUT": `Second-${settings.requestedTimeoutSeconds}`
          }, timeoutMillis).pipe(Effect.flatMap((answer) => grantOf(answer, "SUBSCRIBE")))
        ).pipe(Effect.ensuring(Effect.sync(() => {
          pending = false
        })))
        sid = grant.sid
        yield* emit({ _tag: "Subscribed", ...grant })
        return grant
      }).pipe(Semaphore.withPermit(lock))

      const resubscribe = (reason: string) =>
        Effect.gen(function*() {
          yield* emit({ _tag: "SubscriptionLost", sid: sid ?? "", reason })
          return yield* subscribe
        })

      /** One renewal, at half the granted timeout; a refusal (412) or silence means a new subscription. */
      const renewAfter = (grant: Grant) =>
        Effect.sleep(Duration.seconds(Math.max(1, grant.timeoutSeconds / 2))).pipe(
          Effect.andThen(() => {
            const current = sid
            if (current === undefined) return subscribe
            return genaRequest("SUBSCRIBE", url, settings.localAddress, {
              "SID": current,
              "TIMEOUT": `Second-${settings.requestedTimeoutSeconds}`
            }, timeoutMillis).pipe(
              Effect.flatMap((answer) => grantOf(answer, "renewal")),
              Effect.retry({
                schedule: retry,
                times: Math.max(0, settings.attempts - 1),
                while: (reason) => !reason.includes("HTTP 412")
              }),
              Effect.flatMap((renewed) =>
                // A SEQ gap may have replaced the subscription meanwhile: then nothing was renewed.
                renewed.sid === sid ? Effect.as(emit({ _tag: "Renewed", ...renewed }), renewed) : Effect.succeed(renewed)
              ),
              Effect.catch((reason) => resubscribe(`renewal failed: ${reason}`))
            )
          })
        )

      /** One NOTIFY: its SEQ checked, its variables decoded and compared with the last ones. */
      const handle = (notify: AcceptedNotify) =>
        Effect.gen(function*() {
          // Wait for a SUBSCRIBE in flight: its initial NOTIFY may arrive before its answer.
          const seq = readSeq(notify.seq)
          const verdict = yield* Effect.sync(() => {
            if (notify.sid !== sid) return "stale" as const
            if (seq === undefined) return "bad seq" as const
            if (expectedSeq !== undefined && seq !== expectedSeq) return `gap: expected SEQ ${expectedSeq}, got ${seq}`
            if (expectedSeq === undefined && seq !== 0) return `the first NOTIFY has SEQ ${seq}, not 0`
            expectedSeq = nextSeq(seq)
            return "next" as const
          }).pipe(Semaphore.withPermit(lock))
          if (verdict === "stale" || verdict === "bad seq" || seq === undefined) return
          if (verdict !== "next") return yield* resubscribe(`missed NOTIFY (${verdict})`).pipe(Effect.asVoid)
          yield* countNotify("accepted")
          const variables: WanEventedVariables | undefined = yield* readPropertySet(notify.body, settings.maxBodyBytes).pipe(
            Effect.catch((reason) => Effect.as(Effect.logWarning(`NOTIFY from ${routerAddress} ignored: ${reason}`), undefined))
          )
          if (variables === undefined) return
          if (variables.ExternalIPAddress !== undefined && variables.ExternalIPAddress !== externalIp) {
            const previous = externalIp
            externalIp = variables.ExternalIPAddress
            yield* emit({ _tag: "ExternalIPAddressChanged", externalIp: variables.ExternalIPAddress, previous, sid: notify.sid, seq })
          }
          if (variables.ConnectionStatus !== undefined && variables.ConnectionStatus !== status) {
            const previous = status
            status = variables.ConnectionStatus
            yield* emit({ _tag: "ConnectionStatusChanged", status: variables.ConnectionStatus, previous, sid: notify.sid, seq })
          }
        })

      yield* Effect.addFinalizer(() =>
        Effect.suspend(() => {
          const current = sid
          if (current === undefined) return Effect.void
          return genaRequest("UNSUBSCRIBE", url, settings.localAddress, { "SID": current }, timeoutMillis).pipe(Effect.ignore)
        })
      )
      yield* Effect.forkScoped(Stream.runForEach(Stream.fromQueue(inbox), handle).pipe(
        Effect.catch((error) => Queue.fail(events, error))
      ))
      let grant = yield* subscribe
      yield* Effect.forkScoped(
        Effect.forever(Effect.gen(function*() {
          grant = yield* renewAfter(grant)
        })).pipe(Effect.catch((error) => Queue.fail(events, error)))
      )
    })
  )
