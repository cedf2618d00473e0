/**
 * NAT-PMP packets (RFC 6886 §3), byte for byte, through Schema. Requests are version 0; the
 * external-address request is 2 bytes, a mapping request 12. Every response starts with
 * version, opcode + 128, a 16-bit result code and the epoch (seconds since the gateway's
 * table was last reset); a success then carries the external address (12 bytes in all) or the
 * mapping (16). Error responses may stop after the 8-byte header.
 */
import { Result, Schema } from "effect"
import type { Protocol } from "../Mapping.ts"
import { fixedLayout, Ipv4Bytes, Uint16, Uint32, Uint8, wireProblem, type WireProblem } from "../portcontrol/Wire.ts"

/** The gateway's NAT-PMP port (RFC 6886 §3.1). */
export const NATPMP_PORT = 5351
/** NAT-PMP's version field. */
export const NATPMP_VERSION = 0
/** Asks for the external address. */
export const OPCODE_EXTERNAL_ADDRESS = 0
/** Maps a UDP port. */
export const OPCODE_MAP_UDP = 1
/** Maps a TCP port. */
export const OPCODE_MAP_TCP = 2
/** A response's opcode is the request's plus 128. */
export const RESPONSE_BIT = 128

/** The MAP opcode for a protocol. */
export const mapOpcode = (protocol: Protocol): number => protocol === "UDP" ? OPCODE_MAP_UDP : OPCODE_MAP_TCP

const Port = Uint16.check(Schema.isBetween({ minimum: 1, maximum: 0xffff }))

const ExternalAddressRequest = fixedLayout(
  Schema.Struct({ version: Schema.Literal(NATPMP_VERSION), opcode: Schema.Literal(OPCODE_EXTERNAL_ADDRESS) }),
  [["version", "u8"], ["opcode", "u8"]]
)

const MapRequest = fixedLayout(
  Schema.Struct({
    version: Schema.Literal(NATPMP_VERSION),
    opcode: Schema.Literals([OPCODE_MAP_UDP, OPCODE_MAP_TCP]),
    reserved: Schema.Literal(0),
    internalPort: Port,
    /** Zero when deleting (RFC 6886 §3.4). */
    suggestedExternalPort: Uint16,
    /** Seconds; zero deletes. */
    lifetime: Uint32
  }),
  [
    ["version", "u8"],
    ["opcode", "u8"],
    ["reserved", "u16"],
    ["internalPort", "u16"],
    ["suggestedExternalPort", "u16"],
    ["lifetime", "u32"]
  ]
)

const Header = fixedLayout(
  Schema.Struct({
    version: Schema.Literal(NATPMP_VERSION),
    opcode: Uint8.check(Schema.isBetween({ minimum: RESPONSE_BIT, maximum: 0xff }, { message: "not a response opcode" })),
    resultCode: Uint16,
    epoch: Uint32
  }),
  [["version", "u8"], ["opcode", "u8"], ["resultCode", "u16"], ["epoch", "u32"]]
)

const ExternalAddressResponse = fixedLayout(
  Schema.Struct({
    version: Schema.Literal(NATPMP_VERSION),
    opcode: Schema.Literal(RESPONSE_BIT + OPCODE_EXTERNAL_ADDRESS),
    resultCode: Uint16,
    epoch: Uint32,
    externalAddress: Ipv4Bytes
  }),
  [["version", "u8"], ["opcode", "u8"], ["resultCode", "u16"], ["epoch", "u32"], ["externalAddress", { bytes: 4 }]]
)

const MapResponse = fixedLayout(
  Schema.Struct({
    version: Schema.Literal(NATPMP_VERSION),
    opcode: Schema.Literals([RESPONSE_BIT + OPCODE_MAP_UDP, RESPONSE_BIT + OPCODE_MAP_TCP]),
    resultCode: Uint16,
    epoch: Uint32,
    internalPort: Uint16,
    externalPort: Uint16,
    lifetime: Uint32
  }),
  [
    ["version", "u8"],
    ["opcode", "u8"],
    ["resultCode", "u16"],
    ["epoch", "u32"],
    ["internalPort", "u16"],
    ["externalPort", "u16"],
    ["lifetime", "u32"]
  ]
)

/** What a MAP request carries. */
export interface MapRequestFields {
  readonly protocol: Protocol
  readonly internalPort: number
  readonly suggestedExternalPort: number
  readonly lifetime: number
}

/** A decoded NAT-PMP response. */
export type NatPmpResponse =
  | {
    readonly _tag: "ExternalAddress"
    readonly epoch: number
    readonly externalAddress: string
  }
  | {
    readonly _tag: "Mapping"
    readonly protocol: Protocol
    readonly epoch: number
    readonly internalPort: number
    readonly externalPort: number
    readonly lifetime: number
  }
  | {
    readonly _tag: "Failure"
    /** The request's opcode (the response's minus 128). */
    readonly requestOpcode: number
    readonly epoch: number
    readonly resultCode: number
    /** Present when the gateway echoed the mapping fields (miniupnpd does for map requests). */
    readonly internalPort: number | undefined
  }

const encodeExternalAddress = Schema.encodeResult(ExternalAddressRequest)
const encodeMap = Schema.encodeResult(MapRequest)
const decodeHeader = Schema.decodeUnknownResult(Header)
const decodeExternalAddress = Schema.decodeUnknownResult(ExternalAddressResponse)
const decodeMap = Schema.decodeUnknownResult(MapResponse)

/** The external-address request, on the wire. */
export const encodeExternalAddressRequest = (): Result.Result<Uint8Array, WireProblem> =>
  Result.mapError(encodeExternalAddress({ version: NATPMP_VERSION, opcode: OPCODE_EXTERNAL_ADDRESS }), wireProblem)

/** A MAP request, on the wire. */
export const encodeMapRequest = (fields: MapRequestFields): Result.Result<Uint8Array, WireProblem> =>
  Result.mapError(
    encodeMap({
      version: NATPMP_VERSION,
      opcode: fields.protocol === "UDP" ? OPCODE_MAP_UDP : OPCODE_MAP_TCP,
      reserved: 0,
      internalPort: fields.internalPort,
      suggestedExternalPort: fields.suggestedExternalPort,
      lifetime: fields.lifetime
    }),
    wireProblem
  )

/** Any datagram to a typed response or a typed problem; never throws. */
export const decodeResponse = (payload: Uint8Array): Result.Result<NatPmpResponse, WireProblem> => {
  const header = decodeHeader(payload)
  if (Result.isFailure(header)) return Result.fail(wireProblem(header.failure))
  const { epoch, opcode, resultCode } = header.success
  if (resultCode !== 0) {
    const echoed = opcode !== RESPONSE_BIT + OPCODE_EXTERNAL_ADDRESS ? decodeMap(payload) : undefined
    return Result.succeed({
      _tag: "Failure",
      requestOpcode: opcode - RESPONSE_BIT,
      epoch,
      resultCode,
      internalPort: echoed !== undefined && Result.isSuccess(echoed) ? echoed.success.internalPort : undefined
    })
  }
  if (opcode === RESPONSE_BIT + OPCODE_EXTERNAL_ADDRESS) {
    const decoded = decodeExternalAddress(payload)
    return Result.isFailure(decoded)
      ? Result.fail(wireProblem(decoded.failure))
      : Result.succeed({ _tag: "ExternalAddress", epoch, externalAddress: decoded.success.externalAddress })
  }
  const decoded = decodeMap(payload)
  if (Result.isFailure(decoded)) return Result.fail(wireProblem(decoded.failure))
  const mapping = decoded.success
  return Result.succeed({
    _tag: "Mapping",
    protocol: mapping.opcode === RESPONSE_BIT + OPCODE_MAP_UDP ? "UDP" : "TCP",
    epoch,
    internalPort: mapping.internalPort,
    externalPort: mapping.externalPort,
    lifetime: mapping.lifetime
  })
}
