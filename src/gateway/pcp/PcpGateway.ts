/**
 * The `PortMapper` for PCP (RFC 6887), MAP opcode only. Every mapping has a nonce of its own
 * (12 random bytes), returned in the granted mapping so the caller keeps it in its record: a
 * restarted controller renews and deletes with the recorded nonce, and a mapping is never
 * touched with another. Our real source address goes in the client-IP field (anything else is
 * ADDRESS_MISMATCH), the suggested external port is the one asked for, the suggested external
 * address the IPv4 zero address.
 *
 * As with NAT-PMP, another external port than the one asked for is released at once and fails
 * with PortConflict, and a private or missing external address fails with DoubleNat. PCP has
 * no request for the external address alone: `status` sends a deletion for the discard port
 * under a fresh nonce, which changes nothing (no mapping of ours is there, and another's nonce
 * could not delete it) but is answered with the epoch and, by miniupnpd, the external address.
 * A gateway that copies the zero address back (RFC 6887 erratum 3621) leaves us the address of
 * the last mapping granted. The MAP exchange itself is PcpMapExchange's.
 */
import { Config, Context, Effect, Layer, Ref, Result } from "effect"
import { externalAddressOf } from "../classifyExternalIp.ts"
import { DoubleNat, PortConflict } from "../GatewayError.ts"
import { type ExternalAddress, type GatewayStatus, type GrantedMapping, isMappablePort, type MappingRequest } from "../Mapping.ts"
import { type Endpoint, nodeSocket, type OpenSocket, type Retransmission } from "../portcontrol/Exchange.ts"
import type { PortControl } from "../portcontrol/PortControl.ts"
import { checkMapRequest, portControlGatewayLayer, type PortControlGatewayShape } from "../portcontrol/PortControlGateway.ts"
import { PortMapper } from "../PortMapper.ts"
import { isUnspecified, makeMapExchange, NONCE_PATTERN, randomNonce } from "./PcpMapExchange.ts"
import { PCP_NETWORK_FAILURE, PCP_NO_RESOURCES, PCP_NOT_AUTHORIZED, PCP_PORT, PCP_SUCCESS } from "./PcpPacket.ts"

/** Where the PCP server is, what we send it, and how patiently. */
export interface PcpGatewayOptions {
  /** The gateway's IPv4 address (the PCP server, `--gateway-address`). Default: the default route's gateway. */
  readonly gateway: string | undefined
  /** Default 5351. */
  readonly port: number
  /** Our source address toward the gateway. Default: the kernel's choice for the route to it. */
  readonly localAddress: string | undefined
  /** The client-IP field. Default: the source address, as RFC 6887 §8.1 requires. */
  readonly clientAddress: string | undefined
  /**
   * RFC 6887 §8.1.1: from 3 s, doubling up to 1024 s, each wait ±10 %, with no limit on sends.
   * The deadline (default 15 s: sends at about 0, 3 and 9 s) bounds one call.
   */
  readonly retransmission: Partial<Retransmission>
  /** The lifetime asked for when a request's lease is 0 (PCP has no permanent mappings). Default 7200. */
  readonly defaultLifetimeSeconds: number
  /** The internal port of `status`'s harmless deletion (default 9, discard). */
  readonly probePort: number
  /** Requests in flight at once. Default 4. */
  readonly concurrency: number
  /** How each exchange's socket is opened (tests replace it). */
  readonly openSocket: OpenSocket
}

/** RFC 6887 §8.1.1's retransmission, bounded by a 15 s deadline per call. */
export const defaultPcpRetransmission: Retransmission = {
  initial: "3 seconds",
  maxInterval: "1024 seconds",
  attempts: Number.POSITIVE_INFINITY,
  jitter: 0.1,
  deadline: "15 seconds"
}

/** The defaults of `edge-ccm run`. */
export const defaultPcpGatewayOptions: PcpGatewayOptions = {
  gateway: undefined,
  port: PCP_PORT,
  localAddress: undefined,
  clientAddress: undefined,
  retransmission: defaultPcpRetransmission,
  defaultLifetimeSeconds: 7200,
  probePort: 9,
  concurrency: 4,
  openSocket: nodeSocket
}

/** The PCP gateway in use and its epoch, beside its `PortMapper`. */
export class PcpGateway extends Context.Service<PcpGateway, PortControlGatewayShape>()("edge-ccm/gateway/pcp/PcpGateway") {
  /** `PortMapper` and `PcpGateway` over UDP; the gateway is found on first use. */
  static layer(options?: Partial<PcpGatewayOptions>): Layer.Layer<PortMapper | PcpGateway> {
    const retransmission: Retransmission = { ...defaultPcpRetransmission, ...options?.retransmission }
    return portControlGatewayLayer(PcpGateway, "pcp", { ...defaultPcpGatewayOptions, ...options, retransmission }, makePortMapper)
  }

  /** `layer` with its options read from `Config`. */
  static layerConfig(
    options: Config.Wrap<Partial<PcpGatewayOptions>>
  ): Layer.Layer<PortMapper | PcpGateway, Config.ConfigError> {
    return Layer.unwrap(Effect.map(Config.unwrap(options), (resolved) => PcpGateway.layer(resolved)))
  }
}

const makePortMapper = (control: PortControl, settings: PcpGatewayOptions) =>
  Effect.gen(function*() {
    const lastAssigned = yield* Ref.make<string | undefined>(undefined)
    const { invalid, release, resultError, sendMap } = makeMapExchange(control, settings.clientAddress)

    const map = Effect.fn("PcpGateway.map")(function*(request: MappingRequest) {
      const endpoint = yield* control.endpoint
      const action = `MAP ${request.protocol} ${request.externalPort}`
      yield* checkMapRequest(endpoint, action, request, "PCP")
      if (request.nonce !== undefined && !NONCE_PATTERN.test(request.nonce)) {
        return yield* invalid(endpoint, action, "nonce", "must be 24 lower-case hex digits (96 bits)")
      }
      const nonce = request.nonce ?? randomNonce()
      const answer = yield* sendMap(endpoint, action, {
        lifetime: request.leaseSeconds === 0 ? settings.defaultLifetimeSeconds : request.leaseSeconds,
        nonce,
        protocol: request.protocol,
        internalPort: request.internalPort,
        suggestedExternalPort: request.externalPort
      })
      if (answer._tag === "Failure" || answer.resultCode !== PCP_SUCCESS) {
        return yield* resultError(endpoint, action, answer.resultCode, {
          protocol: request.protocol,
          externalPort: request.externalPort,
          nonce: request.nonce
        })
      }
      const releaseGranted = (why: string) =>
        Effect.gen(function*() {
          const released = yield* Effect.result(
            release(endpoint, `release ${request.protocol} ${answer.externalPort}`, request.protocol, answer.externalPort, request.internalPort, nonce)
          )
          return `${why}; ${Result.isSuccess(released) ? "released it" : `releasing it failed (${released.failure.message})`}`
        })
      if (answer.externalPort !== request.externalPort) {
        const reason = yield* releaseGranted(`the gateway granted port ${answer.externalPort} instead`)
        return yield* new PortConflict({
          router: endpoint.router,
          externalPort: request.externalPort,
          protocol: request.protocol,
          holder: "another mapping on the gateway",
          reason
        })
      }
      const address = externalAddressOf(isUnspecified(answer.externalAddress) ? undefined : answer.externalAddress)
      if (address.class !== "public") {
        const reason = yield* releaseGranted(
          address.class === "private"
            ? "the gateway's external address is private or reserved (double NAT): the mapping would not be reachable"
            : "the gateway assigned no external address"
        )
        return yield* new DoubleNat({
          router: endpoint.router,
          ...(address.ip === undefined ? {} : { externalIp: address.ip }),
          reason
        })
      }
      if (answer.lifetime === 0) {
        return yield* invalid(endpoint, action, "lifetime", "the gateway granted a lifetime of 0 seconds")
      }
      yield* Ref.set(lastAssigned, address.ip)
      yield* control.remember(request.protocol, request.externalPort, { internalPort: request.internalPort, nonce })
      return {
        externalPort: answer.externalPort,
        protocol: request.protocol,
        internalClient: endpoint.localAddress,
        internalPort: request.internalPort,
        description: request.description,
        leaseSeconds: answer.lifetime,
        nonce
      } satisfies GrantedMapping
    })

    const unmap = Effect.fn("PcpGateway.unmap")(function*(mapping: Parameters<PortMapper["Service"]["unmap"]>[0]) {
      const endpoint = yield* control.endpoint
      const action = `delete ${mapping.protocol} ${mapping.externalPort}`
      const known = yield* control.recall(mapping.protocol, mapping.externalPort)
      const nonce = mapping.nonce ?? known?.nonce
      const internalPort = mapping.internalPort ?? known?.internalPort
      if (nonce === undefined) {
        return yield* invalid(endpoint, action, "nonce", "PCP deletes only with the mapping's nonce: pass it from the record")
      }
      if (!NONCE_PATTERN.test(nonce)) return yield* invalid(endpoint, action, "nonce", "must be 24 lower-case hex digits")
      if (internalPort === undefined) {
        return yield* invalid(endpoint, action, "internalPort", "PCP deletes by internal port: pass it from the record")
      }
      if (!isMappablePort(internalPort)) return yield* invalid(endpoint, action, "internalPort", "must be 1-65535")
      yield* release(endpoint, action, mapping.protocol, mapping.externalPort, internalPort, nonce)
      yield* control.forget(mapping.protocol, mapping.externalPort)
    })

    /** The harmless deletion `status` sends: the epoch and, from miniupnpd, the external address. */
    const probe = (endpoint: Endpoint) =>
      Effect.gen(function*() {
        const action = "status"
        const answer = yield* sendMap(endpoint, action, {
          lifetime: 0,
          nonce: randomNonce(),
          protocol: "TCP",
          internalPort: settings.probePort,
          suggestedExternalPort: 0
        })
        const code = answer.resultCode
        if (code === PCP_NETWORK_FAILURE) {
          const missing: ExternalAddress = { ip: undefined, class: "missing" }
          return { epoch: answer.epoch, connected: false, address: missing }
        }
        // Deleting nothing: success, miniupnpd's NO_RESOURCES, or NOT_AUTHORIZED for another's nonce.
        if (code !== PCP_SUCCESS && code !== PCP_NO_RESOURCES && code !== PCP_NOT_AUTHORIZED) {
          return yield* resultError(endpoint, action, code)
        }
        const reported = answer._tag === "Map" && !isUnspecified(answer.externalAddress) ? answer.externalAddress : undefined
        const ip = reported ?? (yield* Ref.get(lastAssigned))
        return { epoch: answer.epoch, connected: true, address: externalAddressOf(ip) }
      })

    const status = Effect.gen(function*() {
      const endpoint = yield* control.endpoint
      const probed = yield* probe(endpoint)
      const epoch = yield* control.epochs.report
      return {
        router: endpoint.router,
        protocol: "pcp",
        connected: probed.connected,
        uptimeSeconds: probed.epoch,
        externalAddress: probed.address,
        localAddress: endpoint.localAddress,
        selection: endpoint.selection,
        lostState: epoch.lostState,
        stateLosses: epoch.stateLosses
      } satisfies GatewayStatus
    }).pipe(Effect.withSpan("PcpGateway.status"))

    const externalAddress = Effect.gen(function*() {
      const endpoint = yield* control.endpoint
      return (yield* probe(endpoint)).address
    }).pipe(Effect.withSpan("PcpGateway.externalAddress"))

    return PortMapper.of({
      capabilities: { readsTable: false, deletesByInternalPort: false, drawNonce: Effect.sync(randomNonce) },
      selection: control.selection,
      externalAddress,
      status,
      map,
      unmap,
      // PCP has no request that reads a mapping.
      get: Effect.fn("PcpGateway.get")(function*() {
        return undefined
      }),
      list: Effect.succeed(undefined)
    })
  })
