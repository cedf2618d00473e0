/**
 * PCP packets (RFC 6887 §7 and §11.1), byte for byte, through Schema. A request is the 24-byte
 * common header (version 2, opcode, lifetime, our address as IPv4-mapped IPv6) followed by the
 * MAP opcode's 36 bytes (nonce, protocol, internal port, suggested external port and address).
 * A response has its own 24-byte header (opcode with the R bit, result code, lifetime, epoch)
 * and echoes the MAP fields with what was assigned. A NAT-PMP-only gateway answers a PCP request
 * with an 8-byte version-0 "unsupported version" reply, which decodes as such.
 */
import { Result, Schema, SchemaTransformation } from "effect"
import type { Protocol } from "../Mapping.ts"
import { fixedLayout, hexBytes, Ipv6Bytes, Uint16, Uint32, Uint8, wireProblem, type WireProblem } from "../portcontrol/Wire.ts"

/** The PCP server's port (RFC 6887 §19.1). */
export const PCP_PORT = 5351
/** PCP's version field. */
export const PCP_VERSION = 2
/** The ANNOUNCE opcode. */
export const OPCODE_ANNOUNCE = 0
/** The MAP opcode. */
export const OPCODE_MAP = 1
/** Set in a response's opcode byte. */
export const RESPONSE_BIT = 0x80
/** A MAP nonce's length (96 bits). */
export const NONCE_BYTES = 12
/** The IPv4 all-zeros address in the 128-bit field: "no preference", and the IPv4 family. */
export const IPV4_UNSPECIFIED = "0.0.0.0"

/** Result code 0: success. */
export const PCP_SUCCESS = 0
/** Result code 1: the server speaks another version. */
export const PCP_UNSUPP_VERSION = 1
/** Result code 2: refused by policy, or another nonce owns the mapping. */
export const PCP_NOT_AUTHORIZED = 2
/** Result code 3: the request could not be parsed. */
export const PCP_MALFORMED_REQUEST = 3
/** Result code 4: the opcode is not supported. */
export const PCP_UNSUPP_OPCODE = 4
/** Result code 7: no external address (double NAT, WAN down). */
export const PCP_NETWORK_FAILURE = 7
/** Result code 8: out of resources (miniupnpd: a deletion found nothing). */
export const PCP_NO_RESOURCES = 8
/** Result code 12: the client address is not the packet's source. */
export const PCP_ADDRESS_MISMATCH = 12

const PROTOCOL_NUMBERS = { TCP: 6, UDP: 17 } as const

/** IANA protocol numbers on the wire, names in the struct. */
const ProtocolNumber = Schema.Literals([PROTOCOL_NUMBERS.TCP, PROTOCOL_NUMBERS.UDP]).pipe(
  Schema.decodeTo(
    Schema.Literals(["TCP", "UDP"]),
    SchemaTransformation.transform<Protocol, 6 | 17>({
      decode: (n) => n === PROTOCOL_NUMBERS.TCP ? "TCP" : "UDP",
      encode: (p) => PROTOCOL_NUMBERS[p]
    })
  )
)

const Nonce = hexBytes(NONCE_BYTES)

const MapRequest = fixedLayout(
  Schema.Struct({
    version: Schema.Literal(PCP_VERSION),
    opcode: Schema.Literal(OPCODE_MAP),
    reserved: Schema.Literal(0),
    /** Seconds; zero deletes. */
    lifetime: Uint32,
    clientAddress: Ipv6Bytes,
    nonce: Nonce,
    protocol: ProtocolNumber,
    reserved1: Schema.Literal(0),
    reserved2: Schema.Literal(0),
    internalPort: Uint16.check(Schema.isBetween({ minimum: 1, maximum: 0xffff })),
    suggestedExternalPort: Uint16,
    suggestedExternalAddress: Ipv6Bytes
  }),
  [
    ["version", "u8"],
    ["opcode", "u8"],
    ["reserved", "u16"],
    ["lifetime", "u32"],
    ["clientAddress", { bytes: 16 }],
    ["nonce", { bytes: NONCE_BYTES }],
    ["protocol", "u8"],
    ["reserved1", "u8"],
    ["reserved2", "u16"],
    ["internalPort", "u16"],
    ["suggestedExternalPort", "u16"],
    ["suggestedExternalAddress", { bytes: 16 }]
  ]
)

const headerLayout = [
  ["version", "u8"],
  ["opcode", "u8"],
  ["reserved", "u8"],
  ["resultCode", "u8"],
  ["lifetime", "u32"],
  ["epoch", "u32"],
  ["reserved1", { bytes: 12 }]
] as const

const headerFields = {
  version: Uint8,
  opcode: Uint8.check(Schema.isBetween({ minimum: RESPONSE_BIT, maximum: 0xff }, { message: "not a response opcode" })),
  reserved: Uint8,
  resultCode: Uint8,
  lifetime: Uint32,
  epoch: Uint32,
  reserved1: Schema.Uint8Array
}

const Header = fixedLayout(Schema.Struct(headerFields), headerLayout)

const MapResponse = fixedLayout(
  Schema.Struct({
    ...headerFields,
    version: Schema.Literal(PCP_VERSION),
    opcode: Schema.Literal(RESPONSE_BIT | OPCODE_MAP),
    nonce: Nonce,
    protocol: ProtocolNumber,
    reserved2: Uint8,
    reserved3: Uint16,
    internalPort: Uint16,
    externalPort: Uint16,
    externalAddress: Ipv6Bytes
  }),
  [
    ...headerLayout,
    ["nonce", { bytes: NONCE_BYTES }],
    ["protocol", "u8"],
    ["reserved2", "u8"],
    ["reserved3", "u16"],
    ["internalPort", "u16"],
    ["externalPort", "u16"],
    ["externalAddress", { bytes: 16 }]
  ]
)

/** The NAT-PMP header a version-0 gateway answers with (RFC 6887 §9). */
const NatPmpHeader = fixedLayout(
  Schema.Struct({ version: Schema.Literal(0), opcode: Uint8, resultCode: Uint16, epoch: Uint32 }),
  [["version", "u8"], ["opcode", "u8"], ["resultCode", "u16"], ["epoch", "u32"]]
)

/** What a MAP request carries. */
export interface MapRequestFields {
  readonly lifetime: number
  /** Our own address: IPv4 text is sent IPv4-mapped. */
  readonly clientAddress: string
  /** 24 lower-case hex digits. */
  readonly nonce: string
  readonly protocol: Protocol
  readonly internalPort: number
  readonly suggestedExternalPort: number
  readonly suggestedExternalAddress: string
}

/** A decoded PCP response. */
export type PcpResponse =
  | {
    /** A MAP response, success or error, with its opcode-specific fields. */
    readonly _tag: "Map"
    readonly resultCode: number
    readonly lifetime: number
    readonly epoch: number
    readonly nonce: string
    readonly protocol: Protocol
    readonly internalPort: number
    readonly externalPort: number
    /** IPv4 text for an IPv4-mapped address. */
    readonly externalAddress: string
  }
  | {
    /** An error response too short to echo the opcode's fields. */
    readonly _tag: "Failure"
    readonly requestOpcode: number
    readonly resultCode: number
    readonly epoch: number
  }
  | {
    /** The gateway speaks another version: 0 is NAT-PMP only, 1 the pre-RFC draft. */
    readonly _tag: "UnsupportedVersion"
    readonly serverVersion: number
    readonly epoch: number
  }

const encodeMap = Schema.encodeResult(MapRequest)
const decodeHeader = Schema.decodeUnknownResult(Header)
const decodeMap = Schema.decodeUnknownResult(MapResponse)
const decodeNatPmpHeader = Schema.decodeUnknownResult(NatPmpHeader)

/** A MAP request, on the wire. */
export const encodeMapRequest = (fields: MapRequestFields): Result.Result<Uint8Array, WireProblem> =>
  Result.mapError(
    encodeMap({ version: PCP_VERSION, opcode: OPCODE_MAP, reserved: 0, reserved1: 0, reserved2: 0, ...fields }),
    wireProblem
  )

/** Any datagram to a typed response or a typed problem; never throws. */
export const decodeResponse = (payload: Uint8Array): Result.Result<PcpResponse, WireProblem> => {
  if (payload.length > 0 && payload[0] === 0) {
    const legacy = decodeNatPmpHeader(payload)
    if (Result.isFailure(legacy)) return Result.fail(wireProblem(legacy.failure))
    return Result.succeed({ _tag: "UnsupportedVersion", serverVersion: 0, epoch: legacy.success.epoch })
  }
  const header = decodeHeader(payload)
  if (Result.isFailure(header)) return Result.fail(wireProblem(header.failure))
  const { epoch, opcode, resultCode, version } = header.success
  // An UNSUPP_VERSION response carries the server's own version (RFC 6887 §9).
  if (version !== PCP_VERSION) return Result.succeed({ _tag: "UnsupportedVersion", serverVersion: version, epoch })
  const requestOpcode = opcode & ~RESPONSE_BIT
  if (requestOpcode !== OPCODE_MAP) {
    return resultCode === PCP_SUCCESS
      ? Result.fail({ field: "opcode", reason: `opcode ${requestOpcode} is not one we send` })
      : Result.succeed({ _tag: "Failure", requestOpcode, resultCode, epoch })
  }
  const decoded = decodeMap(payload)
  if (Result.isFailure(decoded)) {
    return resultCode === PCP_SUCCESS
      ? Result.fail(wireProblem(decoded.failure))
      : Result.succeed({ _tag: "Failure", requestOpcode, resultCode, epoch })
  }
  const map = decoded.success
  return Result.succeed({
    _tag: "Map",
    resultCode,
    lifetime: map.lifetime,
    epoch,
    nonce: map.nonce,
    protocol: map.protocol,
    internalPort: map.internalPort,
    externalPort: map.externalPort,
    externalAddress: map.externalAddress
  })
}
