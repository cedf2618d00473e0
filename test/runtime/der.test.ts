import { describe, expect, it } from "@effect/vitest"
import {
  bitString,
  encodeLength,
  ipAddressBytes,
  objectIdentifier,
  sequence,
  smallInteger,
  time,
  unsignedInteger
} from "../../src/runtime/der.ts"

const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex")

describe("DER", () => {
  it("writes lengths in the short form below 128 and the long form from 128", () => {
    expect(hex(encodeLength(0))).toBe("00")
    expect(hex(encodeLength(127))).toBe("7f")
    expect(hex(encodeLength(128))).toBe("8180")
    expect(hex(encodeLength(255))).toBe("81ff")
    expect(hex(encodeLength(256))).toBe("820100")
    expect(hex(encodeLength(65_536))).toBe("83010000")
    expect(() => encodeLength(-1)).toThrow(RangeError)
  })

  it("wraps a long SEQUENCE with a long-form length", () => {
    const content = new Uint8Array(300)
    const encoded = sequence(content)
    expect(hex(encoded.subarray(0, 4))).toBe("3082012c")
    expect(encoded.length).toBe(304)
  })

  it("writes INTEGERs minimal and non-negative", () => {
    expect(hex(unsignedInteger(Uint8Array.of(0x00, 0x00, 0x05)))).toBe("020105")
    expect(hex(unsignedInteger(Uint8Array.of(0x80)))).toBe("02020080")
    expect(hex(unsignedInteger(Uint8Array.of(0x00)))).toBe("020100")
    expect(hex(unsignedInteger(new Uint8Array(0)))).toBe("020100")
    expect(hex(smallInteger(2))).toBe("020102")
    expect(hex(smallInteger(0))).toBe("020100")
    expect(hex(smallInteger(65_535))).toBe("020300ffff")
  })

  it("writes OIDs with the first two arcs joined and base-128 arcs", () => {
    // ecdsa-with-SHA256, as in every ECDSA certificate.
    expect(hex(objectIdentifier("1.2.840.10045.4.3.2"))).toBe("06082a8648ce3d040302")
    expect(hex(objectIdentifier("2.5.29.17"))).toBe("0603551d11")
    expect(hex(objectIdentifier("1.3.6.1.5.5.7.3.1"))).toBe("06082b06010505070301")
    expect(() => objectIdentifier("1.40.1")).toThrow(RangeError)
    expect(() => objectIdentifier("1.2.x")).toThrow(RangeError)
  })

  it("writes BIT STRINGs with their count of unused bits", () => {
    expect(hex(bitString(Uint8Array.of(0x80), 1))).toBe("03020780")
    expect(hex(bitString(Uint8Array.of(0xab, 0xcd)))).toBe("030300abcd")
    expect(() => bitString(Uint8Array.of(0x80), 9)).toThrow(RangeError)
  })

  it("writes UTCTime up to 2049 and GeneralizedTime from 2050 (RFC 5280)", () => {
    expect(Buffer.from(time(new Date("2049-12-31T23:59:59Z"))).toString("latin1")).toBe("\x17\x0d491231235959Z")
    expect(Buffer.from(time(new Date("2050-01-01T00:00:00Z"))).toString("latin1")).toBe("\x18\x0f20500101000000Z")
    expect(Buffer.from(time(new Date("2026-03-04T05:06:07.890Z"))).toString("latin1")).toBe("\x17\x0d260304050607Z")
  })

  it("writes IPv4 addresses as 4 bytes and IPv6 as 16, with :: and an IPv4 tail expanded", () => {
    expect(hex(ipAddressBytes("192.168.77.10"))).toBe("c0a84d0a")
    expect(hex(ipAddressBytes("::1"))).toBe("00000000000000000000000000000001")
    expect(hex(ipAddressBytes("fe80::1:2"))).toBe("fe800000000000000000000000010002")
    expect(hex(ipAddressBytes("2001:db8:1:2:3:4:5:6"))).toBe("20010db8000100020003000400050006")
    expect(hex(ipAddressBytes("::ffff:10.0.0.1"))).toBe("00000000000000000000ffff0a000001")
    expect(hex(ipAddressBytes("1::"))).toBe("00010000000000000000000000000000")
    expect(() => ipAddressBytes("node-1")).toThrow(RangeError)
  })
})
