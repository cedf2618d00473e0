/**
 * Just enough ASN.1 DER (ITU-T X.690) to write one X.509 certificate: Node's `crypto` signs and
 * parses certificates but cannot build one, and a certificate library would weigh more than
 * the rest of the controller's TLS.
 */
import { isIPv4, isIPv6 } from "node:net"
import { withoutZone } from "../gateway/Ipv6Address.ts"

/** A DER length: short form below 128, else 0x80 | count followed by the big-endian bytes. */
export const encodeLength = (length: number): Uint8Array => {
  if (!Number.isSafeInteger(length) || length < 0) throw new RangeError(`invalid DER length ${length}`)
  if (length < 0x80) return Uint8Array.of(length)
  const bytes: Array<number> = []
  for (let rest = length; rest > 0; rest = Math.floor(rest / 256)) bytes.unshift(rest % 256)
  return Uint8Array.of(0x80 | bytes.length, ...bytes)
}

/** Tag, length, value. */
export const tlv = (tag: number, value: Uint8Array): Uint8Array =>
  Buffer.concat([Uint8Array.of(tag), encodeLength(value.length), value])

const concat = (parts: ReadonlyArray<Uint8Array>): Uint8Array => Buffer.concat(parts)

/** A DER SEQUENCE of the items. */
export const sequence = (...items: ReadonlyArray<Uint8Array>): Uint8Array => tlv(0x30, concat(items))

/** A DER SET of the items. */
export const set = (...items: ReadonlyArray<Uint8Array>): Uint8Array => tlv(0x31, concat(items))

/** A non-negative INTEGER from its big-endian magnitude: minimal, with a 0x00 when the top bit is set. */
export const unsignedInteger = (magnitude: Uint8Array): Uint8Array => {
  let start = 0
  while (start < magnitude.length - 1 && magnitude[start] === 0) start++
  const trimmed = magnitude.length === 0 ? Uint8Array.of(0) : magnitude.subarray(start)
  return tlv(0x02, (trimmed[0] ?? 0) & 0x80 ? concat([Uint8Array.of(0), trimmed]) : trimmed)
}

/** A DER INTEGER of a non-negative safe integer. */
export const smallInteger = (value: number): Uint8Array => {
  if (!Number.isSafeInteger(value) || value < 0) throw new RangeError(`not a small non-negative integer: ${value}`)
  const bytes: Array<number> = []
  for (let rest = value; rest > 0; rest = Math.floor(rest / 256)) bytes.unshift(rest % 256)
  return unsignedInteger(Uint8Array.from(bytes))
}

/** A DER BOOLEAN. */
export const boolean = (value: boolean): Uint8Array => tlv(0x01, Uint8Array.of(value ? 0xff : 0x00))

/** OBJECT IDENTIFIER from dotted text, e.g. `1.2.840.10045.4.3.2`. */
export const objectIdentifier = (dotted: string): Uint8Array => {
  const arcs = dotted.split(".").map((arc) => {
    if (!/^\d+$/.test(arc)) throw new RangeError(`invalid OID ${dotted}`)
    return Number(arc)
  })
  const [first, second, ...rest] = arcs
  if (first === undefined || second === undefined || first > 2 || (first < 2 && second > 39)) {
    throw new RangeError(`invalid OID ${dotted}`)
  }
  const bytes: Array<number> = []
  for (const arc of [first * 40 + second, ...rest]) {
    const base128: Array<number> = [arc % 128]
    for (let rest = Math.floor(arc / 128); rest > 0; rest = Math.floor(rest / 128)) base128.unshift(0x80 | (rest % 128))
    bytes.push(...base128)
  }
  return tlv(0x06, Uint8Array.from(bytes))
}

/** A DER UTF8String. */
export const utf8String = (text: string): Uint8Array => tlv(0x0c, Buffer.from(text, "utf8"))

/** A DER OCTET STRING. */
export const octetString = (bytes: Uint8Array): Uint8Array => tlv(0x04, bytes)

/** BIT STRING of whole bytes, or of `bits` bits (the rest of the last byte unused). */
export const bitString = (bytes: Uint8Array, bits = bytes.length * 8): Uint8Array => {
  const unused = bytes.length * 8 - bits
  if (unused < 0 || unused > 7) throw new RangeError(`${bits} bits do not fit ${bytes.length} bytes`)
  return tlv(0x03, concat([Uint8Array.of(unused), bytes]))
}

/** `[n] EXPLICIT`: a constructed context-specific tag around one encoded value. */
export const explicit = (tagNumber: number, value: Uint8Array): Uint8Array => tlv(0xa0 | tagNumber, value)

/** `[n] IMPLICIT` of a primitive value (a GeneralName's dNSName is [2], iPAddress [7]). */
export const implicitPrimitive = (tagNumber: number, value: Uint8Array): Uint8Array => tlv(0x80 | tagNumber, value)

const twoDigits = (n: number) => String(n).padStart(2, "0")

/**
 * X.509 Time (RFC 5280 4.1.2.5): UTCTime up to 2049, GeneralizedTime from 2050; seconds, no
 * fractions, always Z.
 */
export const time = (at: Date): Uint8Array => {
  const year = at.getUTCFullYear()
  const rest = `${twoDigits(at.getUTCMonth() + 1)}${twoDigits(at.getUTCDate())}${twoDigits(at.getUTCHours())}` +
    `${twoDigits(at.getUTCMinutes())}${twoDigits(at.getUTCSeconds())}Z`
  if (year >= 1950 && year < 2050) return tlv(0x17, Buffer.from(`${twoDigits(year % 100)}${rest}`, "ascii"))
  return tlv(0x18, Buffer.from(`${String(year).padStart(4, "0")}${rest}`, "ascii"))
}

/** The 4 or 16 bytes of an IP address (an iPAddress GeneralName). */
export const ipAddressBytes = (address: string): Uint8Array => {
  if (isIPv4(address)) return Uint8Array.from(address.split(".").map(Number))
  if (!isIPv6(address)) throw new RangeError(`not an IP address: ${address}`)
  let text = withoutZone(address)
  // An embedded IPv4 tail (::ffff:192.0.2.1) becomes its two 16-bit groups.
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text)
  if (v4 !== null) {
    const [a, b, c, d] = v4[1]!.split(".").map(Number) as [number, number, number, number]
    text = `${text.slice(0, v4.index)}${((a << 8) | b).toString(16)}:${((c << 8) | d).toString(16)}`
  }
  const [head, tail] = text.includes("::") ? text.split("::") as [string, string] : [text, undefined]
  const groups = (part: string | undefined) => (part === undefined || part === "" ? [] : part.split(":"))
  const before = groups(head)
  const after = groups(tail)
  const all = tail === undefined ? before : [...before, ...Array<string>(8 - before.length - after.length).fill("0"), ...after]
  const bytes = new Uint8Array(16)
  all.forEach((group, index) => {
    const value = parseInt(group, 16)
    bytes[2 * index] = value >> 8
    bytes[2 * index + 1] = value & 0xff
  })
  return bytes
}
