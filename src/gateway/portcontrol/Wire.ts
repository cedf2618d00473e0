/**
 * Fixed-layout binary packets through Schema, shared by NAT-PMP and PCP (both big-endian, both
 * on port 5351). A struct schema holds each field's meaning and checks; a layout says where the
 * field sits on the wire; `fixedLayout` joins them into one codec from bytes to the struct and
 * back. Decoding never throws: a short packet or a bad field is a Schema issue naming the field.
 */
import { Effect, Option, Result, Schema, type SchemaAST, SchemaIssue, SchemaTransformation } from "effect"
import { NetAddress } from "effect/net"

/** How a field is stored: an unsigned big-endian integer, or raw bytes. */
export type Width = "u8" | "u16" | "u32" | { readonly bytes: number }

/** Fields in wire order. Reserved fields are named too, so that they are written as zeros. */
export type Layout<K extends string> = ReadonlyArray<readonly [K, Width]>

type WireValue = number | Uint8Array

/** An unsigned byte. */
export const Uint8 = Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 0xff }))
/** An unsigned 16-bit field. */
export const Uint16 = Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 0xffff }))
/** An unsigned 32-bit field. */
export const Uint32 = Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 0xffff_ffff }))

const widthOf = (width: Width): number =>
  width === "u8" ? 1 : width === "u16" ? 2 : width === "u32" ? 4 : width.bytes

/** A layout's length in bytes. */
export const layoutLength = <K extends string>(layout: Layout<K>): number =>
  layout.reduce((total, [, width]) => total + widthOf(width), 0)

/** Raw bytes of exactly `length`, as a field of a struct. */
export const bytesOfLength = (length: number) =>
  Schema.Uint8Array.check(Schema.makeFilter((bytes: Uint8Array) =>
    bytes.length === length ? undefined : `expected ${length} bytes, got ${bytes.length}`
  ))

const toHex = (bytes: Uint8Array): string => Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("")

/** `length` bytes on the wire, lower-case hex in the struct (PCP's 96-bit nonce). */
export const hexBytes = (length: number) =>
  bytesOfLength(length).pipe(
    Schema.decodeTo(
      Schema.String.check(Schema.isPattern(new RegExp(`^[0-9a-f]{${length * 2}}$`), {
        message: `expected ${length * 2} lower-case hex digits`
      })),
      SchemaTransformation.transform<string, Uint8Array>({
        decode: toHex,
        encode: (hex) => Uint8Array.from(hex.match(/../g) ?? [], (pair) => Number.parseInt(pair, 16))
      })
    )
  )

const issue = (message: string, input: unknown, options: SchemaAST.ParseOptions) =>
  new SchemaIssue.InvalidValue({ message }, input, options)

/** An IPv4 address in 4 bytes (NAT-PMP), dotted quad in the struct. */
export const Ipv4Bytes = bytesOfLength(4).pipe(
  Schema.decodeTo(
    Schema.String,
    SchemaTransformation.transformEffect({
      decode: (bytes: Uint8Array) => Effect.succeed(NetAddress.formatIp(NetAddress.ipv4FromBytesUnsafe(bytes))),
      encode: (text: string, options) => {
        const parsed = NetAddress.ipv4FromString(text)
        return Result.isSuccess(parsed)
          ? Effect.succeed(Uint8Array.from(NetAddress.ipv4ToOctets(parsed.success)))
          : Effect.fail(issue(`not an IPv4 address: ${parsed.failure.message}`, text, options))
      }
    })
  )
)

/**
 * A 128-bit address field (PCP): an IPv4-mapped address (`::ffff:a.b.c.d`) reads as the dotted
 * IPv4 address, anything else as IPv6 text. Both are accepted when encoding.
 */
export const Ipv6Bytes = bytesOfLength(16).pipe(
  Schema.decodeTo(
    Schema.String,
    SchemaTransformation.transformEffect({
      decode: (bytes: Uint8Array) => {
        const address = NetAddress.ipv6FromBytesUnsafe(bytes)
        return Effect.succeed(Option.match(NetAddress.fromIpv4Mapped(address), {
          onNone: () => NetAddress.formatIp(address),
          onSome: NetAddress.formatIp
        }))
      },
      encode: (text: string, options) => {
        const parsed = NetAddress.ipFromString(text)
        if (Result.isFailure(parsed)) return Effect.fail(issue(`not an IP address: ${parsed.failure.message}`, text, options))
        const address = NetAddress.isIpv4Address(parsed.success) ? NetAddress.toIpv4Mapped(parsed.success) : parsed.success
        return Effect.succeed(Uint8Array.from(NetAddress.ipv6ToOctets(address)))
      }
    })
  )
)

const read = (view: DataView, bytes: Uint8Array, offset: number, width: Width): WireValue => {
  switch (width) {
    case "u8":
      return view.getUint8(offset)
    case "u16":
      return view.getUint16(offset)
    case "u32":
      return view.getUint32(offset)
    default:
      return bytes.slice(offset, offset + width.bytes)
  }
}

const write = (view: DataView, bytes: Uint8Array, offset: number, width: Width, value: unknown): string | undefined => {
  if (typeof width === "object") {
    if (!(value instanceof Uint8Array) || value.length !== width.bytes) return `expected ${width.bytes} bytes`
    bytes.set(value, offset)
    return undefined
  }
  if (typeof value !== "number") return "expected a number"
  if (width === "u8") view.setUint8(offset, value)
  else if (width === "u16") view.setUint16(offset, value)
  else view.setUint32(offset, value)
  return undefined
}

/**
 * The codec from a packet's bytes to `fields`. Decoding needs at least the layout's length and
 * ignores what follows (PCP options, padding); encoding writes exactly the layout.
 */
export const fixedLayout = <S extends Schema.Codec<unknown, { readonly [key: string]: WireValue }>>(
  fields: S,
  layout: Layout<keyof S["Encoded"] & string>
) => {
  const length = layoutLength(layout)
  return Schema.Uint8Array.pipe(
    Schema.decodeTo(
      fields,
      SchemaTransformation.transformEffect({
        decode: (bytes: Uint8Array, options) => {
          if (bytes.length < length) {
            return Effect.fail(issue(`${bytes.length} bytes, expected at least ${length}`, bytes, options))
          }
          const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength)
          const record: Record<string, WireValue> = {}
          let offset = 0
          for (const [name, width] of layout) {
            record[name] = read(view, bytes, offset, width)
            offset += widthOf(width)
          }
          // The record has exactly the layout's keys and wire types; `fields` checks the rest.
          return Effect.succeed(record as S["Encoded"])
        },
        encode: (value: S["Encoded"], options) => {
          const bytes = new Uint8Array(length)
          const view = new DataView(bytes.buffer)
          let offset = 0
          for (const [name, width] of layout) {
            const problem = write(view, bytes, offset, width, value[name])
            if (problem !== undefined) return Effect.fail(issue(`field ${name}: ${problem}`, value, options))
            offset += widthOf(width)
          }
          return Effect.succeed(bytes)
        }
      })
    )
  )
}

/** What went wrong with a packet: the field at fault where there is one. */
export interface WireProblem {
  readonly field: string | undefined
  readonly reason: string
}

const formatter = SchemaIssue.makeFormatterStandardSchemaV1()

/** A decoding failure as one field and reason. */
export const wireProblem = (error: Schema.SchemaError): WireProblem => {
  const [first] = formatter(error.issue).issues
  const segment = first?.path?.[0]
  const key = typeof segment === "object" && segment !== null ? segment.key : segment
  return {
    field: typeof key === "string" ? key : undefined,
    reason: first?.message ?? "invalid packet"
  }
}
