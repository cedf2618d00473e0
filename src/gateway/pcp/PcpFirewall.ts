/**
 * IPv6 pinholes opened by PCP MAP (RFC 6887) sent from the node's own IPv6 address to the
 * router's: no NAT, so the external port is the internal port and the external address is
 * the node's (docs/ipv6-field-notes.md, section 7). PCP opens ports below 1024, which
 * miniupnpd refuses over UPnP.
 *
 * miniupnpd 2.3.1 forgets a pinhole's nonce when it is renewed, after which nobody can delete
 * it over PCP. So a renewal here is a replacement: the pinhole is deleted with its nonce and
 * opened again at once under a fresh one, which keeps it deletable by its owner alone (the
 * cost: a new connection arriving in the instant between the two is dropped and retried by
 * its sender; established ones pass). A pinhole that still cannot be deleted (its nonce lost)
 * is shortened to the router's shortest lifetime instead.
 */
import { Clock, Effect, Ref } from "effect"
import { FirewallUnavailable, InvalidMapping, PortControlError } from "../GatewayError.ts"
import type { Protocol } from "../Mapping.ts"
import { type Endpoint, exchange, nodeSocket, type OpenSocket, type Retransmission } from "../portcontrol/Exchange.ts"
import type { FirewallBackend } from "../FirewallBackend.ts"
import { defaultPcpRetransmission } from "./PcpGateway.ts"
import { matchMap, randomNonce } from "./PcpMapExchange.ts"
import {
  encodeMapRequest,
  PCP_NO_RESOURCES,
  PCP_NOT_AUTHORIZED,
  PCP_PORT,
  PCP_SUCCESS,
  type PcpResponse
} from "./PcpPacket.ts"

/** Where the PCP server is and how patiently it is asked. */
export interface PcpFirewallOptions {
  /** The router's IPv6 address, or why there is none (asked on each look until found). */
  readonly routerAddress: Effect.Effect<string, FirewallUnavailable>
  /** Default 5351. */
  readonly port?: number | undefined
  /** For MAP requests (default RFC 6887's, bounded at 15 s). */
  readonly retransmission?: Retransmission | undefined
  /** For the look that asks whether PCP answers at all (default: 2 s). */
  readonly probeRetransmission?: Retransmission | undefined
  /** How long a router that did not answer is taken as one without PCP (default 60 s). */
  readonly silentFor?: number | undefined
  /** How each exchange's socket is opened (tests replace it). */
  readonly openSocket?: OpenSocket | undefined
}

/** Two sends, one second apart: a router that answers PCP answers a LAN request at once. */
export const pcpProbeRetransmission: Retransmission = {
  initial: "1 second",
  maxInterval: "1 second",
  attempts: 2,
  jitter: 0,
  deadline: "2 seconds"
}

/** The internal port of the harmless deletion that asks for the epoch (discard). */
const PROBE_PORT = 9

/** `pcp://[2001:db8:2::1]:5351`: how a pinhole's record names the PCP route. */
export const pcpRouterName = (routerIp: string, port: number): string => `pcp://[${routerIp}]:${port}`


/** The PCP route to the router's firewall. */
export const makePcpFirewallBackend = (options: PcpFirewallOptions): Effect.Effect<FirewallBackend> =>
  Effect.gen(function*() {
    const port = options.port ?? PCP_PORT
    const retransmission = options.retransmission ?? defaultPcpRetransmission
    const probeRetransmission = options.probeRetransmission ?? pcpProbeRetransmission
    const openSocket = options.openSocket ?? nodeSocket
    const silentFor = options.silentFor ?? 60_000
    const routerIp = yield* Ref.make<string | undefined>(undefined)
    // A router that did not answer is not asked again on every pass (each look waits for it).
    const silentUntil = yield* Ref.make(0)

    const described = Effect.map(Ref.get(routerIp), (ip) => ip === undefined ? "PCP" : pcpRouterName(ip, port))

    const locate = Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      if (now < (yield* Ref.get(silentUntil))) {
        return yield* new FirewallUnavailable({ reason: `the router did not answer PCP over IPv6 lately (${yield* described})` })
      }
      const known = yield* Ref.get(routerIp)
      const ip = known ?? (yield* options.routerAddress)
      yield* Ref.set(routerIp, ip)
      return { router: pcpRouterName(ip, port), routerIp: ip, routerPort: port }
    })

    /** One MAP exchange from the node's address, with it in the client-IP field. */
    const send = (
      nodeAddress: string,
      action: string,
      fields: { readonly lifetime: number; readonly nonce: string; readonly protocol: Protocol; readonly internalPort: number },
      policy: Retransmission
    ) =>
      Effect.gen(function*() {
        const { router, routerIp: gateway } = yield* locate
        const endpoint: Endpoint = { router, gateway, port, localAddress: nodeAddress }
        const payload = encodeMapRequest({
          ...fields,
          suggestedExternalPort: fields.lifetime === 0 ? 0 : fields.internalPort,
          clientAddress: nodeAddress,
          suggestedExternalAddress: "::"
        })
        if (payload._tag === "Failure") {
          return yield* new InvalidMapping({ router, action, field: payload.failure.field ?? "request", reason: payload.failure.reason })
        }
        const answer = yield* exchange(endpoint, openSocket, policy, {
          action,
          payload: payload.success,
          match: matchMap(fields.nonce, fields.protocol, fields.internalPort)
        })
        return { router, answer }
      })

    const failed = (router: string, action: string, answer: PcpResponse) =>
      new PortControlError({
        router,
        protocol: "pcp",
        action,
        code: answer._tag === "UnsupportedVersion" ? 1 : answer.resultCode,
        ...(answer._tag === "UnsupportedVersion" ? { detail: `the router speaks PCP version ${answer.serverVersion}, not 2` } : {})
      })

    const open = (nodeAddress: string, protocol: Protocol, internalPort: number, lifetime: number) =>
      Effect.gen(function*() {
        const nonce = randomNonce()
        const action = `MAP ${protocol} ${internalPort} (IPv6)`
        const { answer, router } = yield* send(nodeAddress, action, { lifetime, nonce, protocol, internalPort }, retransmission)
        if (answer._tag !== "Map" || answer.resultCode !== PCP_SUCCESS) return yield* failed(router, action, answer)
        if (answer.externalPort !== internalPort) {
          return yield* new PortControlError({
            router,
            protocol: "pcp",
            action,
            code: answer.resultCode,
            detail: `the router opened port ${answer.externalPort}, not ${internalPort}: not a pinhole`
          })
        }
        return { nonce, lifetime: answer.lifetime }
      })

    /** Lifetime 0 under the pinhole's nonce: true when it is gone, false when the nonce is not the router's. */
    const release = (nodeAddress: string, protocol: Protocol, internalPort: number, nonce: string) =>
      Effect.gen(function*() {
        const action = `delete ${protocol} ${internalPort} (IPv6)`
        const { answer, router } = yield* send(nodeAddress, action, { lifetime: 0, nonce, protocol, internalPort }, retransmission)
        if (answer._tag === "Map" && (answer.resultCode === PCP_SUCCESS || answer.resultCode === PCP_NO_RESOURCES)) return true
        if (answer._tag === "Map" && answer.resultCode === PCP_NOT_AUTHORIZED) return false
        return yield* failed(router, action, answer)
      })

    const missingNonce = (pinhole: { readonly router: string }, action: string) =>
      new InvalidMapping({ router: pinhole.router, action, field: "nonce", reason: "a PCP pinhole is renewed and deleted with its nonce, which the record lacks" })

    return {
      protocol: "pcp",
      opensLowPorts: true,
      locate,
      bootedAt: (nodeAddress) =>
        Effect.gen(function*() {
          const action = "status (IPv6)"
          const sent = yield* Effect.result(
            send(nodeAddress, action, { lifetime: 0, nonce: randomNonce(), protocol: "TCP", internalPort: PROBE_PORT }, probeRetransmission)
          )
          if (sent._tag === "Failure") {
            const error = sent.failure
            if (error._tag !== "GatewayUnreachable") return yield* error
            yield* Ref.set(silentUntil, (yield* Clock.currentTimeMillis) + silentFor)
            return yield* new FirewallUnavailable({ reason: `the router does not answer PCP over IPv6 (${error.message})` })
          }
          const { answer, router } = sent.success
          // Deleting nothing: success, miniupnpd's NO_RESOURCES, or NOT_AUTHORIZED for another's nonce.
          const code = answer._tag === "UnsupportedVersion" ? -1 : answer.resultCode
          if (code !== PCP_SUCCESS && code !== PCP_NO_RESOURCES && code !== PCP_NOT_AUTHORIZED) {
            return yield* new FirewallUnavailable({ reason: failed(router, action, answer).message })
          }
          return (yield* Clock.currentTimeMillis) - answer.epoch * 1000
        }),
      add: (request) => Effect.map(open(request.internalClient, request.protocol, request.port, request.leaseSeconds), ({ nonce }) => ({ nonce })),
      update: (pinhole, leaseSeconds) =>
        Effect.gen(function*() {
          if (pinhole.nonce === undefined) return yield* missingNonce(pinhole, "renew")
          // Replaced, not renewed: a renewal would make it undeletable on miniupnpd 2.3.1 (see above).
          yield* release(pinhole.internalClient, pinhole.protocol, pinhole.port, pinhole.nonce)
          const { nonce } = yield* open(pinhole.internalClient, pinhole.protocol, pinhole.port, leaseSeconds)
          return { nonce }
        }),
      remove: (pinhole) =>
        Effect.gen(function*() {
          if (pinhole.nonce === undefined) return yield* missingNonce(pinhole, "delete")
          if (yield* release(pinhole.internalClient, pinhole.protocol, pinhole.port, pinhole.nonce)) return
          // The router no longer knows the nonce: the shortest lifetime it grants is all we can do.
          const { lifetime } = yield* open(pinhole.internalClient, pinhole.protocol, pinhole.port, 1)
          yield* Effect.logWarning(
            `PCP pinhole ${pinhole.protocol} ${pinhole.port} (IPv6) could not be deleted (the router no longer knows its nonce): ` +
              `shortened to ${lifetime} s`
          )
        }),
      forget: Ref.set(routerIp, undefined)
    } satisfies FirewallBackend
  })
