/**
 * One NAT-PMP or PCP request and its answer over UDP. Each exchange has a socket of its own,
 * bound to our address toward the gateway, so a late answer to one request can never be taken
 * for another's. The request is resent on the protocol's schedule until a datagram from the
 * gateway's own address and port matches it, and the whole exchange is bounded by a deadline
 * so that a silent gateway never holds a caller for RFC 6887's open-ended retries.
 */
import * as NodeDatagramSocket from "@effect/platform-node/NodeDatagramSocket"
import * as Os from "node:os"
import { Clock, Deferred, Duration, Effect, Equal, Option, Random, Result } from "effect"
import { NetAddress } from "effect/net"
import type { DatagramSocket } from "effect/socket"
import { GatewayProtocolError, GatewayUnreachable } from "../GatewayError.ts"

/** How a request is resent until answered. */
export interface Retransmission {
  /** The first wait for an answer (NAT-PMP 250 ms, PCP 3 s). */
  readonly initial: Duration.Input
  /** Waits double up to this (PCP: 1024 s). */
  readonly maxInterval: Duration.Input
  /** Sends at most this many times (NAT-PMP: 9; PCP sets no limit: Infinity). */
  readonly attempts: number
  /** Each wait is scaled by a factor drawn from 1 ± jitter (PCP: 0.1). */
  readonly jitter: number
  /** One exchange never takes longer than this, whatever the above allow. */
  readonly deadline: Duration.Input
}

/** Where requests go and come from. */
export interface Endpoint {
  /** `<gateway>:<port>`, for logs and errors. */
  readonly router: string
  readonly gateway: string
  readonly port: number
  /** Our source address toward the gateway; the socket is bound to it. */
  readonly localAddress: string
  /** Why this gateway: "192.168.77.1, the node's default gateway" or "…, set by --gateway-address". */
  readonly selection?: string | undefined
}

/** Opens the socket for one exchange, bound to `localAddress` on an ephemeral port. */
export type OpenSocket = (localAddress: string) => Effect.Effect<DatagramSocket.DatagramSocket>

/** The interfaces' scope ids, read only for an address that names one (`fe80::1%eth0`). */
const interfaceScopeIds = (host: string): ReadonlyMap<string, number> | undefined =>
  host.includes("%") ? NetAddress.scopeIdsFromInterfaces(Object.entries(Os.networkInterfaces())) : undefined

/** A UDP socket on Node, bound to our address toward the gateway. */
export const nodeSocket: OpenSocket = (localAddress) => NodeDatagramSocket.make({ bind: { address: localAddress, port: 0 } })

/** What a datagram is to a request: its answer, another's, or garbage. */
export type Verdict<A> =
  | { readonly _tag: "Accept"; readonly value: A }
  /** Not an answer to this request (another request's, another nonce); keep waiting. */
  | { readonly _tag: "Ignore"; readonly reason: string }
  /** From the gateway but unusable; keep waiting, and report it if nothing better comes. */
  | { readonly _tag: "Unusable"; readonly field: string | undefined; readonly reason: string }

/** One request: its bytes, and how to tell its answer. */
export interface ExchangeRequest<A> {
  /** E.g. `MAP TCP 8080`, for logs and errors. */
  readonly action: string
  readonly payload: Uint8Array
  readonly match: (payload: Uint8Array) => Verdict<A>
}

/**
 * The waits after each send: `initial` doubling up to `maxInterval`, each scaled by 1 ± jitter,
 * for `attempts` sends or until `deadline`, whichever is first. The last wait is cut at the
 * deadline.
 */
export const retransmissionWaits = (policy: Retransmission): Effect.Effect<ReadonlyArray<number>> =>
  Effect.gen(function*() {
    const initial = Duration.toMillis(policy.initial)
    const max = Duration.toMillis(policy.maxInterval)
    const deadline = Duration.toMillis(policy.deadline)
    const waits: Array<number> = []
    let elapsed = 0
    let base = initial
    while (waits.length < policy.attempts && elapsed < deadline) {
      const factor = policy.jitter === 0 ? 1 : 1 + policy.jitter * (2 * (yield* Random.next) - 1)
      const wait = Math.min(Math.min(base, max) * factor, deadline - elapsed)
      waits.push(wait)
      elapsed += wait
      base = Math.min(base * 2, max)
    }
    return waits
  })

const describeSeconds = (millis: number) => `${Math.round(millis / 100) / 10} s`

/**
 * Sends `request` until it is answered, and succeeds with the accepted answer. Fails with
 * GatewayUnreachable when nothing usable came back in time (or the socket would not open or
 * send), and with GatewayProtocolError when the gateway answered only with unusable packets.
 */
export const exchange = <A>(
  endpoint: Endpoint,
  open: OpenSocket,
  policy: Retransmission,
  request: ExchangeRequest<A>
): Effect.Effect<A, GatewayUnreachable | GatewayProtocolError> =>
  Effect.gen(function*() {
    const unreachable = (reason: string) =>
      new GatewayUnreachable({ router: endpoint.router, action: request.action, reason })
    // IPv4 for mappings; IPv6 for pinholes opened by PCP (docs/ipv6-field-notes.md, section 7).
    // A link-local gateway carries its interface (`fe80::1%eth0`): the zone becomes its scope id.
    const parsed = NetAddress.inetAddressFromHostString(endpoint.gateway, endpoint.port, interfaceScopeIds(endpoint.gateway))
    if (Result.isFailure(parsed)) {
      return yield* unreachable(`gateway address ${endpoint.gateway} is not an IP address (${parsed.failure.message})`)
    }
    const destination = parsed.success
    const socket = yield* open(endpoint.localAddress)
    const reader = yield* socket.reader.pipe(
      Effect.mapError((error) => unreachable(`cannot open a UDP socket on ${endpoint.localAddress}: ${error.message}`))
    )
    const writer = yield* socket.writer
    const answer = yield* Deferred.make<A, GatewayUnreachable>()
    let unusable: { readonly field: string | undefined; readonly reason: string } | undefined

    const accept = (datagram: DatagramSocket.Datagram): Effect.Effect<void> => {
      const from = datagram.address
      // Only the gateway's own address and port may answer: anything else on the LAN could forge.
      if (from.port !== endpoint.port || !Equal.equals(from.address, destination.address)) {
        return Effect.logDebug("ignored a datagram not from the gateway", {
          router: endpoint.router,
          from: NetAddress.formatInet(from)
        })
      }
      const verdict = request.match(datagram.payload)
      switch (verdict._tag) {
        case "Accept":
          return Effect.asVoid(Deferred.succeed(answer, verdict.value))
        case "Ignore":
          return Effect.logDebug("ignored a reply that answers another request", {
            router: endpoint.router,
            action: request.action,
            reason: verdict.reason
          })
        case "Unusable":
          unusable = verdict
          return Effect.logDebug("ignored an unusable reply", {
            router: endpoint.router,
            action: request.action,
            field: verdict.field,
            reason: verdict.reason
          })
      }
    }

    yield* reader.pull.pipe(
      Effect.flatMap((batch) => Effect.forEach(batch, accept, { discard: true })),
      Effect.forever,
      Effect.catch((error) => Deferred.fail(answer, unreachable(`receive failed: ${error.message}`))),
      Effect.forkScoped
    )

    const started = yield* Clock.currentTimeMillis
    const waits = yield* retransmissionWaits(policy)
    let sent = 0
    for (const wait of waits) {
      const written = yield* Effect.result(writer.write({ payload: request.payload, address: destination }))
      if (Result.isFailure(written)) return yield* unreachable(`send failed: ${written.failure.message}`)
      sent += 1
      const answered = yield* Deferred.await(answer).pipe(Effect.timeoutOption(Duration.millis(wait)))
      if (Option.isSome(answered)) return answered.value
    }
    const elapsed = (yield* Clock.currentTimeMillis) - started
    if (unusable !== undefined) {
      return yield* new GatewayProtocolError({
        router: endpoint.router,
        action: request.action,
        ...(unusable.field === undefined ? {} : { field: unusable.field }),
        reason: unusable.reason
      })
    }
    return yield* unreachable(`no answer after ${sent} ${sent === 1 ? "try" : "tries"} in ${describeSeconds(elapsed)}`)
  }).pipe(Effect.scoped)
