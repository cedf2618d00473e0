/**
 * The `PortMapper` for NAT-PMP (RFC 6886). A mapping belongs to the address that asked for it,
 * so requests always go from our own address and name no other host. NAT-PMP cannot read the
 * gateway's table: `get` and `list` answer undefined, and deletion goes by internal port, which
 * the caller passes from its record (or this client remembers from its own `map`).
 *
 * Two habits of real gateways are guarded against: a gateway that grants another external port
 * than the one asked for (the asked one is held by someone else) has that mapping released at
 * once and the call fails with PortConflict; and one whose external address is private or
 * missing (miniupnpd still maps then) is refused with DoubleNat before anything is mapped.
 */
import { Config, Context, Effect, Layer, Result } from "effect"
import { externalAddressOf } from "../classifyExternalIp.ts"
import { DoubleNat, type GatewayError, InvalidMapping, PortConflict, PortControlError } from "../GatewayError.ts"
import {
  type ExternalAddress,
  type GatewayStatus,
  type GrantedMapping,
  isMappablePort,
  type MappingRequest,
  type Protocol
} from "../Mapping.ts"
import { PortMapper } from "../PortMapper.ts"
import { type Endpoint, nodeSocket, type OpenSocket, type Retransmission, type Verdict } from "../portcontrol/Exchange.ts"
import {
  decodeResponse,
  encodeExternalAddressRequest,
  encodeMapRequest,
  mapOpcode,
  NATPMP_PORT,
  type NatPmpResponse,
  OPCODE_EXTERNAL_ADDRESS
} from "./NatPmpPacket.ts"
import type { PortControl } from "../portcontrol/PortControl.ts"
import { checkMapRequest, portControlGatewayLayer, type PortControlGatewayShape } from "../portcontrol/PortControlGateway.ts"
import type { WireProblem } from "../portcontrol/Wire.ts"

/** Where the NAT-PMP gateway is, and how patiently it is asked. */
export interface NatPmpGatewayOptions {
  /** The gateway's IPv4 address (`--gateway-address`). Default: the default route's gateway (/proc/net/route). */
  readonly gateway: string | undefined
  /** Default 5351. */
  readonly port: number
  /** Our source address toward the gateway. Default: the kernel's choice for the route to it. */
  readonly localAddress: string | undefined
  /**
   * RFC 6886 §3.1: from 250 ms, doubling, 9 sends. The deadline (default 15 s, i.e. 6 sends)
   * keeps one call from holding the controller for the RFC's full 127 s.
   */
  readonly retransmission: Partial<Retransmission>
  /** The lifetime asked for when a request's lease is 0: NAT-PMP has no permanent mappings (RFC 6886 §3.3: 7200 s). */
  readonly defaultLifetimeSeconds: number
  /** Requests in flight at once. Default 4. */
  readonly concurrency: number
  /** How each exchange's socket is opened (tests replace it). */
  readonly openSocket: OpenSocket
}

/** RFC 6886 §3.1's retransmission: 250 ms doubling, nine sends, within 15 s per call. */
export const defaultNatPmpRetransmission: Retransmission = {
  initial: "250 millis",
  maxInterval: "64 seconds",
  attempts: 9,
  jitter: 0,
  deadline: "15 seconds"
}

/** The defaults of `edge-ccm run`. */
export const defaultNatPmpGatewayOptions: NatPmpGatewayOptions = {
  gateway: undefined,
  port: NATPMP_PORT,
  localAddress: undefined,
  retransmission: defaultNatPmpRetransmission,
  defaultLifetimeSeconds: 7200,
  concurrency: 4,
  openSocket: nodeSocket
}

/** The NAT-PMP gateway in use and its epoch, beside its `PortMapper`. */
export class NatPmpGateway extends Context.Service<NatPmpGateway, PortControlGatewayShape>()("edge-ccm/gateway/natpmp/NatPmpGateway") {
  /** `PortMapper` and `NatPmpGateway` over UDP; the gateway is found on first use. */
  static layer(options?: Partial<NatPmpGatewayOptions>): Layer.Layer<PortMapper | NatPmpGateway> {
    const retransmission: Retransmission = { ...defaultNatPmpRetransmission, ...options?.retransmission }
    const settings = { ...defaultNatPmpGatewayOptions, ...options, retransmission }
    return portControlGatewayLayer(NatPmpGateway, "nat-pmp", settings, (control) => Effect.succeed(makePortMapper(control, settings)))
  }

  /** `layer` with its options read from `Config`. */
  static layerConfig(
    options: Config.Wrap<Partial<NatPmpGatewayOptions>>
  ): Layer.Layer<PortMapper | NatPmpGateway, Config.ConfigError> {
    return Layer.unwrap(Effect.map(Config.unwrap(options), (resolved) => NatPmpGateway.layer(resolved)))
  }
}

type ExternalAddressAnswer = Extract<NatPmpResponse, { _tag: "ExternalAddress" }> | Extract<NatPmpResponse, { _tag: "Failure" }>
type MapAnswer = Extract<NatPmpResponse, { _tag: "Mapping" }> | Extract<NatPmpResponse, { _tag: "Failure" }>

const NETWORK_FAILURE = 3

const matchExternalAddress = (payload: Uint8Array): Verdict<ExternalAddressAnswer> => {
  const decoded = decodeResponse(payload)
  if (Result.isFailure(decoded)) return { _tag: "Unusable", ...decoded.failure }
  const response = decoded.success
  if (response._tag === "ExternalAddress") return { _tag: "Accept", value: response }
  if (response._tag === "Failure" && response.requestOpcode === OPCODE_EXTERNAL_ADDRESS) {
    return { _tag: "Accept", value: response }
  }
  return { _tag: "Ignore", reason: `a ${response._tag} reply` }
}

/** An answer to this mapping request: same opcode (protocol), same internal port. */
const matchMap = (protocol: Protocol, internalPort: number) => (payload: Uint8Array): Verdict<MapAnswer> => {
  const decoded = decodeResponse(payload)
  if (Result.isFailure(decoded)) return { _tag: "Unusable", ...decoded.failure }
  const response = decoded.success
  if (response._tag === "Mapping" && response.protocol === protocol && response.internalPort === internalPort) {
    return { _tag: "Accept", value: response }
  }
  if (
    response._tag === "Failure" && response.requestOpcode === mapOpcode(protocol) &&
    // Some gateways zero the mapping fields of an error response rather than echo them.
    (response.internalPort === undefined || response.internalPort === 0 || response.internalPort === internalPort)
  ) {
    return { _tag: "Accept", value: response }
  }
  return { _tag: "Ignore", reason: `a ${response._tag} reply for another request` }
}

const makePortMapper = (control: PortControl, settings: NatPmpGatewayOptions) => {
  const resultError = (endpoint: Endpoint, action: string, code: number): GatewayError =>
    code === NETWORK_FAILURE
      ? new DoubleNat({
        router: endpoint.router,
        reason: `${action}: the gateway reports a network failure (NAT-PMP result 3): it has no public external address`
      })
      : new PortControlError({
        router: endpoint.router,
        protocol: "nat-pmp",
        action,
        code,
        ...(code === 2 ? { detail: "the gateway refuses: NAT-PMP is disabled for us, or its rules deny this port" } : {})
      })

  const encoded = (endpoint: Endpoint, action: string, payload: Result.Result<Uint8Array, WireProblem>) =>
    Result.isSuccess(payload)
      ? Effect.succeed(payload.success)
      : Effect.fail(
        new InvalidMapping({
          router: endpoint.router,
          action,
          field: payload.failure.field ?? "request",
          reason: payload.failure.reason
        })
      )

  /** The external address, or why there is none (result 3: the gateway has no usable one). */
  const queryExternalAddress = (endpoint: Endpoint) =>
    Effect.gen(function*() {
      const action = "external address"
      const payload = yield* encoded(endpoint, action, encodeExternalAddressRequest())
      const answer = yield* control.send(endpoint, { action, payload, match: matchExternalAddress }, (a) => a.epoch)
      if (answer._tag === "ExternalAddress") {
        return { epoch: answer.epoch, address: externalAddressOf(answer.externalAddress), connected: true }
      }
      if (answer.resultCode === NETWORK_FAILURE) {
        const address: ExternalAddress = { ip: undefined, class: "missing" }
        return { epoch: answer.epoch, address, connected: false }
      }
      return yield* resultError(endpoint, action, answer.resultCode)
    })

  const requestMapping = (
    endpoint: Endpoint,
    fields: { readonly protocol: Protocol; readonly internalPort: number; readonly suggestedExternalPort: number; readonly lifetime: number },
    action: string
  ) =>
    Effect.gen(function*() {
      const payload = yield* encoded(endpoint, action, encodeMapRequest(fields))
      return yield* control.send(
        endpoint,
        { action, payload, match: matchMap(fields.protocol, fields.internalPort) },
        (a) => a.epoch
      )
    })

  /** Lifetime 0 deletes every mapping of ours for this internal port and protocol (RFC 6886 §3.4). */
  const release = (endpoint: Endpoint, protocol: Protocol, internalPort: number, action: string) =>
    Effect.gen(function*() {
      const answer = yield* requestMapping(endpoint, { protocol, internalPort, suggestedExternalPort: 0, lifetime: 0 }, action)
      if (answer._tag === "Failure") return yield* resultError(endpoint, action, answer.resultCode)
    })

  const invalid = (endpoint: Endpoint, action: string, field: string, reason: string) =>
    new InvalidMapping({ router: endpoint.router, action, field, reason })

  const map = Effect.fn("NatPmpGateway.map")(function*(request: MappingRequest) {
    const endpoint = yield* control.endpoint
    const action = `map ${request.protocol} ${request.externalPort}`
    yield* checkMapRequest(endpoint, action, request, "NAT-PMP")
    // miniupnpd maps even without a public address; such a mapping reaches nothing.
    const external = yield* queryExternalAddress(endpoint)
    if (external.address.class !== "public") {
      return yield* new DoubleNat({
        router: endpoint.router,
        ...(external.address.ip === undefined ? {} : { externalIp: external.address.ip }),
        reason: external.address.class === "private"
          ? "the gateway's external address is private or reserved (double NAT): a mapping would not be reachable"
          : "the gateway has no public external address (NAT-PMP result 3, NETWORK_FAILURE): a mapping would not be reachable"
      })
    }
    const lifetime = request.leaseSeconds === 0 ? settings.defaultLifetimeSeconds : request.leaseSeconds
    const answer = yield* requestMapping(endpoint, {
      protocol: request.protocol,
      internalPort: request.internalPort,
      suggestedExternalPort: request.externalPort,
      lifetime
    }, action)
    if (answer._tag === "Failure") return yield* resultError(endpoint, action, answer.resultCode)
    if (answer.externalPort !== request.externalPort) {
      const released = yield* Effect.result(release(endpoint, request.protocol, request.internalPort, `release ${request.protocol} ${answer.externalPort}`))
      return yield* new PortConflict({
        router: endpoint.router,
        externalPort: request.externalPort,
        protocol: request.protocol,
        holder: "another mapping on the gateway",
        reason: `the gateway granted port ${answer.externalPort} instead; ${
          Result.isSuccess(released) ? "released it" : `releasing it failed (${released.failure.message})`
        }`
      })
    }
    if (answer.lifetime === 0) {
      return yield* invalid(endpoint, action, "lifetime", "the gateway granted a lifetime of 0 seconds")
    }
    yield* control.remember(request.protocol, request.externalPort, { internalPort: request.internalPort })
    return {
      externalPort: answer.externalPort,
      protocol: request.protocol,
      internalClient: endpoint.localAddress,
      internalPort: request.internalPort,
      description: request.description,
      leaseSeconds: answer.lifetime
    } satisfies GrantedMapping
  })

  const unmap = Effect.fn("NatPmpGateway.unmap")(function*(mapping: Parameters<PortMapper["Service"]["unmap"]>[0]) {
    const endpoint = yield* control.endpoint
    const action = `unmap ${mapping.protocol} ${mapping.externalPort}`
    const internalPort = mapping.internalPort ?? (yield* control.recall(mapping.protocol, mapping.externalPort))?.internalPort
    if (internalPort === undefined) {
      return yield* invalid(
        endpoint,
        action,
        "internalPort",
        "NAT-PMP deletes by internal port: pass it from the mapping's record"
      )
    }
    if (!isMappablePort(internalPort)) return yield* invalid(endpoint, action, "internalPort", "must be 1-65535")
    // Success whether or not the mapping still existed: the gateway answers alike.
    yield* release(endpoint, mapping.protocol, internalPort, action)
    yield* control.forget(mapping.protocol, mapping.externalPort)
  })

  const externalAddress = Effect.gen(function*() {
    const endpoint = yield* control.endpoint
    return (yield* queryExternalAddress(endpoint)).address
  }).pipe(Effect.withSpan("NatPmpGateway.externalAddress"))

  const status = Effect.gen(function*() {
    const endpoint = yield* control.endpoint
    const external = yield* queryExternalAddress(endpoint)
    const epoch = yield* control.epochs.report
    return {
      router: endpoint.router,
      protocol: "nat-pmp",
      connected: external.connected,
      uptimeSeconds: external.epoch,
      externalAddress: external.address,
      localAddress: endpoint.localAddress,
      selection: endpoint.selection,
      lostState: epoch.lostState,
      stateLosses: epoch.stateLosses
    } satisfies GatewayStatus
  }).pipe(Effect.withSpan("NatPmpGateway.status"))

  return PortMapper.of({
    capabilities: { readsTable: false, deletesByInternalPort: true, drawNonce: undefined },
    selection: control.selection,
    externalAddress,
    status,
    map,
    unmap,
    // NAT-PMP has no request that reads a mapping.
    get: Effect.fn("NatPmpGateway.get")(function*() {
      return undefined
    }),
    list: Effect.succeed(undefined)
  })
}

