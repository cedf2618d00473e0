/**
 * One PCP MAP exchange (RFC 6887): the request sent with our client address, the answer that
 * is ours matched by nonce, protocol and internal port (§11.3), result codes turned into the
 * errors a caller acts on (NETWORK_FAILURE is double NAT, NOT_AUTHORIZED under a nonce is
 * another owner), and the deletion a nonce owner may send (lifetime 0, §15).
 */
import { randomBytes } from "node:crypto"
import { Effect, Result } from "effect"
import { DoubleNat, type GatewayError, InvalidMapping, PortConflict, PortControlError } from "../GatewayError.ts"
import type { Protocol } from "../Mapping.ts"
import type { Endpoint, Verdict } from "../portcontrol/Exchange.ts"
import type { PortControl } from "../portcontrol/PortControl.ts"
import {
  decodeResponse,
  encodeMapRequest,
  IPV4_UNSPECIFIED,
  NONCE_BYTES,
  OPCODE_MAP,
  PCP_ADDRESS_MISMATCH,
  PCP_MALFORMED_REQUEST,
  PCP_NETWORK_FAILURE,
  PCP_NO_RESOURCES,
  PCP_NOT_AUTHORIZED,
  PCP_SUCCESS,
  PCP_UNSUPP_OPCODE,
  PCP_UNSUPP_VERSION,
  type PcpResponse
} from "./PcpPacket.ts"

/** A fresh 96-bit nonce, as lower-case hex. */
export const randomNonce = (): string => randomBytes(NONCE_BYTES).toString("hex")

/** A nonce as the record and the wire carry it: 96 bits in lower-case hex. */
export const NONCE_PATTERN = /^[0-9a-f]{24}$/

/** Error codes a server may send without echoing the MAP fields: it did not understand the request. */
const UNDERSTOOD_NOTHING = new Set([PCP_UNSUPP_VERSION, PCP_MALFORMED_REQUEST, PCP_UNSUPP_OPCODE])

/** An answer to this MAP request: same nonce, protocol and internal port (RFC 6887 §11.3). */
export const matchMap = (nonce: string, protocol: Protocol, internalPort: number) => (payload: Uint8Array): Verdict<PcpResponse> => {
  const decoded = decodeResponse(payload)
  if (Result.isFailure(decoded)) return { _tag: "Unusable", ...decoded.failure }
  const response = decoded.success
  switch (response._tag) {
    case "UnsupportedVersion":
      return { _tag: "Accept", value: response }
    case "Failure":
      return response.requestOpcode === OPCODE_MAP && UNDERSTOOD_NOTHING.has(response.resultCode)
        ? { _tag: "Accept", value: response }
        : { _tag: "Ignore", reason: `result ${response.resultCode} without the MAP fields to match` }
    case "Map":
      return response.nonce === nonce && response.protocol === protocol && response.internalPort === internalPort
        ? { _tag: "Accept", value: response }
        : {
          _tag: "Ignore",
          reason: `MAP reply for nonce ${response.nonce}, ${response.protocol} internal port ${response.internalPort}`
        }
  }
}

/** The unspecified address a gateway may copy back instead of its external address. */
export const isUnspecified = (address: string) => address === IPV4_UNSPECIFIED || address === "::"

/** What a MAP request carries besides our client address. */
export interface MapFields {
  readonly lifetime: number
  readonly nonce: string
  readonly protocol: Protocol
  readonly internalPort: number
  readonly suggestedExternalPort: number
}

/**
 * MAP exchanges over `control`, with `clientAddress` in the client-IP field (default: our
 * source address toward the gateway, as RFC 6887 §8.1 requires).
 */
export const makeMapExchange = (control: PortControl, clientAddress: string | undefined) => {
  const clientOf = (endpoint: Endpoint) => clientAddress ?? endpoint.localAddress

  const invalid = (endpoint: Endpoint, action: string, field: string, reason: string) =>
    new InvalidMapping({ router: endpoint.router, action, field, reason })

  const resultError = (
    endpoint: Endpoint,
    action: string,
    code: number,
    context: { readonly protocol?: Protocol; readonly externalPort?: number; readonly nonce?: string | undefined } = {}
  ): GatewayError => {
    if (code === PCP_NETWORK_FAILURE) {
      return new DoubleNat({
        router: endpoint.router,
        reason: `${action}: the gateway reports NETWORK_FAILURE (PCP result 7): it has no usable external address`
      })
    }
    if (code === PCP_NOT_AUTHORIZED && context.nonce !== undefined && context.protocol !== undefined && context.externalPort !== undefined) {
      return new PortConflict({
        router: endpoint.router,
        externalPort: context.externalPort,
        protocol: context.protocol,
        holder: "another PCP client (the mapping is owned by another nonce)",
        reason: `PCP result 2 (NOT_AUTHORIZED) for nonce ${context.nonce}: another nonce owns this mapping`
      })
    }
    const detail = code === PCP_ADDRESS_MISMATCH
      ? `we sent client IP ${clientOf(endpoint)} from ${endpoint.localAddress}, and the gateway saw another source address: a NAT between us and ${endpoint.gateway}?`
      : code === PCP_NOT_AUTHORIZED
      ? "refused by the gateway's policy for this client or port"
      : undefined
    return new PortControlError({
      router: endpoint.router,
      protocol: "pcp",
      action,
      code,
      ...(detail === undefined ? {} : { detail })
    })
  }

  const sendMap = (endpoint: Endpoint, action: string, fields: MapFields) =>
    Effect.gen(function*() {
      const payload = encodeMapRequest({
        ...fields,
        clientAddress: clientOf(endpoint),
        suggestedExternalAddress: IPV4_UNSPECIFIED
      })
      if (Result.isFailure(payload)) {
        return yield* invalid(endpoint, action, payload.failure.field ?? "request", payload.failure.reason)
      }
      const answer = yield* control.send(
        endpoint,
        { action, payload: payload.success, match: matchMap(fields.nonce, fields.protocol, fields.internalPort) },
        (a) => a.epoch
      )
      if (answer._tag === "UnsupportedVersion") {
        return yield* new PortControlError({
          router: endpoint.router,
          protocol: "pcp",
          action,
          code: PCP_UNSUPP_VERSION,
          detail: answer.serverVersion === 0
            ? "the gateway speaks NAT-PMP only (it answered with version 0)"
            : `the gateway speaks PCP version ${answer.serverVersion}, not 2`
        })
      }
      return answer
    })

  /** Lifetime 0 with the owning nonce (RFC 6887 §15); an absent mapping counts as deleted. */
  const release = (endpoint: Endpoint, action: string, protocol: Protocol, externalPort: number, internalPort: number, nonce: string) =>
    Effect.gen(function*() {
      const answer = yield* sendMap(endpoint, action, { lifetime: 0, nonce, protocol, internalPort, suggestedExternalPort: 0 })
      if (answer.resultCode === PCP_SUCCESS) return
      // miniupnpd answers a deletion that finds no mapping with NO_RESOURCES.
      if (answer.resultCode === PCP_NO_RESOURCES) {
        return yield* Effect.logDebug("PCP deletion found no mapping", { router: endpoint.router, action })
      }
      return yield* resultError(endpoint, action, answer.resultCode, { protocol, externalPort, nonce })
    })

  return { invalid, resultError, sendMap, release }
}
