/**
 * RFC 5952 text for IPv6 addresses: miniupnpd 2.3.1 compares a pinhole's InternalClient with
 * the request's source as text, so the one spelling must come out of any spelling. The
 * properties check it against the WHATWG URL serializer (Node's own, an independent RFC 5952
 * implementation) and against the rules of the RFC itself.
 */
import { assert, describe, it } from "@effect/vitest"
import { Arbitrary, Result, Schema } from "effect"
import { canonicalIpv6, CanonicalIpv6FromString, ipv6Scope, sameIpv6 } from "../../src/gateway/Ipv6Address.ts"

const U16 = Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 0xffff }))

/** A group, zero half of the time: zero runs of every length are what compression is about. */
const group = Arbitrary.all({ zero: Arbitrary.schema(Schema.Boolean), value: Arbitrary.schema(U16) }).pipe(
  Arbitrary.map(({ value, zero }) => (zero ? 0 : value))
)

/** Eight groups, never an IPv4-mapped address (written with a dotted tail, which URL does not use). */
const groups = Arbitrary.array(group, { minLength: 8, maxLength: 8 }).pipe(
  Arbitrary.filter((g) => !(g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff))
)

/** How to spell the groups: leading zeros, letter case, and which zero run (if any) becomes `::`. */
const spelling = Arbitrary.all({
  padding: Arbitrary.array(Arbitrary.schema(Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 3 }))), {
    minLength: 8,
    maxLength: 8
  }),
  upper: Arbitrary.array(Arbitrary.schema(Schema.Boolean), { minLength: 8, maxLength: 8 }),
  compress: Arbitrary.schema(Schema.Int.check(Schema.isBetween({ minimum: -1, maximum: 7 })))
})

interface Spelling {
  readonly padding: ReadonlyArray<number>
  readonly upper: ReadonlyArray<boolean>
  readonly compress: number
}

/** One valid (RFC 4291) spelling of the groups: not necessarily canonical. */
const spell = (g: ReadonlyArray<number>, s: Spelling): string => {
  const texts = g.map((value, i) => {
    const hex = value.toString(16).padStart(Math.min(4, value.toString(16).length + s.padding[i]!), "0")
    return s.upper[i] ? hex.toUpperCase() : hex
  })
  // `::` may stand for any run of zero groups starting at `compress` (RFC 4291 allows even one).
  const start = s.compress
  if (start < 0 || g[start] !== 0) return texts.join(":")
  let end = start
  while (end < 8 && g[end] === 0) end++
  return `${texts.slice(0, start).join(":")}::${texts.slice(end).join(":")}`
}

/** The WHATWG URL host serializer: RFC 5952 compression and lower case, independently of ours. */
const urlSerialized = (text: string): string => new URL(`http://[${text}]/`).hostname.slice(1, -1)

const canonical = (text: string): string => Result.getOrThrow(canonicalIpv6(text))

const runs = { arbitrary: { runs: 500 } }

describe("canonicalIpv6 properties", () => {
  it.prop("every spelling of an address canonicalises to the same text", [groups, spelling, spelling], ([g, a, b]) => {
    assert.strictEqual(canonical(spell(g, a)), canonical(spell(g, b)))
  }, runs)

  it.prop("the canonical text is what the WHATWG URL serializer writes", [groups, spelling], ([g, s]) => {
    const text = spell(g, s)
    assert.strictEqual(canonical(text), urlSerialized(text))
  }, runs)

  it.prop("the canonical text keeps RFC 5952's rules", [groups, spelling], ([g, s]) => {
    const text = canonical(spell(g, s))
    assert.notMatch(text, /[A-F]/, "lower case only")
    assert.notMatch(text, /(^|:)0[0-9a-f]/, "no leading zeros")
    assert.isAtMost(text.split("::").length, 2, "at most one ::")
    const zeros = g.map((x) => (x === 0 ? "0" : "x")).join("")
    const longest = Math.max(0, ...(zeros.match(/0+/g) ?? []).map((run) => run.length))
    // `::` exactly when some run has two or more zero groups, and then for the first longest one.
    assert.strictEqual(text.includes("::"), longest >= 2)
    if (longest >= 2) {
      const first = zeros.indexOf("0".repeat(longest))
      const head = text.split("::")[0]!
      assert.strictEqual(head === "" ? 0 : head.split(":").length, first)
    }
  }, runs)

  it.prop("canonicalising is idempotent and keeps the address", [groups, spelling], ([g, s]) => {
    const text = canonical(spell(g, s))
    assert.strictEqual(canonical(text), text)
    const back = text.split("::")
    const expanded = back.length === 1
      ? back[0]!.split(":")
      : [...(back[0] ? back[0].split(":") : []), ...Array(8 - (back[0] ? back[0].split(":").length : 0) - (back[1] ? back[1].split(":").length : 0)).fill("0"), ...(back[1] ? back[1].split(":") : [])]
    assert.deepStrictEqual(expanded.map((h) => Number.parseInt(h, 16)), [...g])
  }, runs)

  it.prop("sameIpv6 holds between any two spellings of one address", [groups, spelling, spelling], ([g, a, b]) => {
    assert.isTrue(sameIpv6(spell(g, a), spell(g, b)))
  }, runs)
})

describe("canonicalIpv6 examples", () => {
  it("writes RFC 5952's examples in their recommended form", () => {
    const examples: ReadonlyArray<readonly [string, string]> = [
      ["2001:0db8:0002:0000:0000:0000:0000:0010", "2001:db8:2::10"], // the lab node, expanded (refused by miniupnpd)
      ["2001:DB8:2:0:0:0:0:10", "2001:db8:2::10"],
      ["2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"], // equal runs: the first is compressed (4.2.3)
      ["2001:0:0:1:0:0:0:1", "2001:0:0:1::1"], // the longest run (4.2.3)
      ["2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"], // one zero group is never `::` (4.2.2)
      ["2001:db8::0001", "2001:db8::1"],
      ["0:0:0:0:0:0:0:0", "::"],
      ["::ffff:192.0.2.1", "::ffff:192.0.2.1"] // IPv4-mapped keeps its dotted tail (5)
    ]
    for (const [input, expected] of examples) assert.strictEqual(canonical(input), expected, input)
  })

  it("refuses what is not an IPv6 address a router could use", () => {
    for (const input of ["", "192.0.2.1", "2001:db8::1::2", "2001:db8::g", "fe80::1%eth0", "[2001:db8::1]", " 2001:db8::1"]) {
      assert.isTrue(Result.isFailure(canonicalIpv6(input)), input)
    }
    assert.strictEqual(Result.getOrThrow(Result.flip(canonicalIpv6("fe80::1%eth0"))).reason, "has a zone index")
  })

  it("CanonicalIpv6FromString decodes any spelling and names a bad one", () => {
    assert.strictEqual(Schema.decodeUnknownSync(CanonicalIpv6FromString)("2001:DB8:0:0::A"), "2001:db8::a")
    assert.throws(() => Schema.decodeUnknownSync(CanonicalIpv6FromString)("192.0.2.1"), /is not an IPv6 address/)
  })
})

describe("ipv6Scope", () => {
  it("tells the addresses the Internet can reach from the others", () => {
    const scopes: ReadonlyArray<readonly [string, string | undefined]> = [
      ["2001:db8:2::10", "global"],
      ["2a01:cb00::1", "global"],
      ["fe80::1", "link-local"],
      ["febf::1", "link-local"],
      ["fd12:3456::1", "unique-local"],
      ["fc00::1", "unique-local"],
      ["::1", "loopback"],
      ["::", "unspecified"],
      ["ff02::c", "multicast"],
      ["::ffff:192.0.2.1", "ipv4-mapped"],
      ["192.0.2.1", undefined]
    ]
    for (const [address, scope] of scopes) assert.strictEqual(ipv6Scope(address), scope, address)
  })
})
