/**
 * What NAT-PMP and PCP clients share: finding the gateway (the trusted router: configured with
 * `--gateway-address`, or the default route's, as UPnP uses),
 * our source address toward it, a bound on requests in flight, the exchange itself, and the
 * epoch every answer carries. Neither protocol can read the gateway's table, so each client
 * also remembers what it mapped (internal port, nonce) to delete it without being told again.
 */
import { Effect, FileSystem, Option, Ref, Result, Semaphore } from "effect"
import { NetAddress } from "effect/net"
import { type GatewayError, GatewayNotFound, type GatewayUnreachable } from "../GatewayError.ts"
import { localAddressToward } from "../localAddress.ts"
import type { Protocol } from "../Mapping.ts"
import { describeTrustedRouter, noTrustedRouter, resolveTrustedRouter } from "../TrustedRouter.ts"
import { makeEpochTracker, type EpochRule, type EpochTracker } from "./Epoch.ts"
import { type Endpoint, exchange, type ExchangeRequest, type OpenSocket, type Retransmission } from "./Exchange.ts"

/** Where the gateway is and how it is spoken to. */
export interface PortControlOptions {
  /** The gateway's IPv4 address; undefined: the default route's gateway. */
  readonly gateway: string | undefined
  readonly port: number
  /** Our source address toward the gateway; undefined: the kernel's choice for that route. */
  readonly localAddress: string | undefined
  readonly retransmission: Retransmission
  /** Requests in flight at once. */
  readonly concurrency: number
  readonly openSocket: OpenSocket
}

/** What this client mapped, keyed by `TCP/8080`, for deleting it later. */
export interface Remembered {
  readonly internalPort: number
  readonly nonce?: string | undefined
}

/** What NAT-PMP and PCP share: the gateway, the exchange, the epochs, what we mapped. */
export interface PortControl {
  /** The gateway and our address toward it, resolved once and kept until it stops answering. */
  readonly endpoint: Effect.Effect<Endpoint, GatewayNotFound | GatewayUnreachable>
  /** One exchange; the accepted answer's epoch is tracked. */
  readonly send: <A>(
    endpoint: Endpoint,
    request: ExchangeRequest<A>,
    epochOf: (answer: A) => number
  ) => Effect.Effect<A, GatewayError>
  readonly epochs: EpochTracker
  /** The gateway last resolved and why it is used; undefined before the first resolution. */
  readonly selection: Effect.Effect<string | undefined>
  readonly remember: (protocol: Protocol, externalPort: number, what: Remembered) => Effect.Effect<void>
  readonly recall: (protocol: Protocol, externalPort: number) => Effect.Effect<Remembered | undefined>
  readonly forget: (protocol: Protocol, externalPort: number) => Effect.Effect<void>
}

/** The shared part of a NAT-PMP or PCP gateway. */
export const makePortControl = (
  rule: EpochRule,
  options: PortControlOptions
): Effect.Effect<PortControl, never, FileSystem.FileSystem> =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const cached = yield* Ref.make(Option.none<Endpoint>())
    const permits = yield* Semaphore.make(Math.max(1, Math.floor(options.concurrency)))
    const remembered = yield* Ref.make(new Map<string, Remembered>())
    let resolvedRouter: string | undefined
    let announced: string | undefined
    const epochs = yield* makeEpochTracker(rule, () => resolvedRouter ?? `${options.gateway ?? "default gateway"}:${options.port}`)

    const resolve = Effect.gen(function*() {
      if (options.gateway !== undefined && Result.isFailure(NetAddress.ipv4FromString(options.gateway))) {
        return yield* new GatewayNotFound({ reason: `gateway ${options.gateway} is not an IPv4 address`, candidates: [options.gateway] })
      }
      const trusted = yield* resolveTrustedRouter(options.gateway).pipe(Effect.provideService(FileSystem.FileSystem, fs))
      if (trusted === undefined) return yield* noTrustedRouter()
      const gateway = trusted.address
      const localAddress = options.localAddress ?? (yield* localAddressToward(gateway, options.port))
      const selection = describeTrustedRouter(trusted)
      const endpoint: Endpoint = { router: `${gateway}:${options.port}`, gateway, port: options.port, localAddress, selection }
      resolvedRouter = endpoint.router
      yield* Ref.set(cached, Option.some(endpoint))
      if (announced !== selection) {
        announced = selection
        yield* Effect.logInfo(`${rule === "pcp" ? "PCP" : "NAT-PMP"} gateway: ${selection}`, { router: endpoint.router })
      }
      return endpoint
    })

    const endpoint = Effect.flatMap(Ref.get(cached), Option.match({ onNone: () => resolve, onSome: Effect.succeed }))

    const send = <A>(target: Endpoint, request: ExchangeRequest<A>, epochOf: (answer: A) => number) =>
      exchange(target, options.openSocket, options.retransmission, request).pipe(
        Semaphore.withPermit(permits),
        // A gateway that stopped answering may be another one next time (DHCP, a new route).
        Effect.tapError((error) => error._tag === "GatewayUnreachable" ? Ref.set(cached, Option.none()) : Effect.void),
        Effect.tap((answer) => epochs.observe(epochOf(answer)))
      )

    const key = (protocol: Protocol, externalPort: number) => `${protocol}/${externalPort}`
    return {
      endpoint,
      send,
      epochs,
      selection: Effect.sync(() => announced),
      remember: (protocol, externalPort, what) =>
        Ref.update(remembered, (all) => new Map(all).set(key(protocol, externalPort), what)),
      recall: (protocol, externalPort) => Effect.map(Ref.get(remembered), (all) => all.get(key(protocol, externalPort))),
      forget: (protocol, externalPort) =>
        Ref.update(remembered, (all) => {
          const next = new Map(all)
          next.delete(key(protocol, externalPort))
          return next
        })
    } satisfies PortControl
  })
