import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { childTexts, decodeText, localName, parseDocument } from "../../../src/gateway/upnp/XmlDocument.ts"

const bytes = (...values: ReadonlyArray<number | string>) =>
  new Uint8Array(values.flatMap((value) => typeof value === "string" ? Array.from(new TextEncoder().encode(value)) : [value]))

describe("decodeText", () => {
  it("reads UTF-8, replacing invalid sequences", () => {
    assert.strictEqual(decodeText(bytes("caf", 0xc3, 0xa9, " ", 0xff, "x")), "café \uFFFDx")
  })

  it("honours an ISO-8859-1 declaration", () => {
    assert.strictEqual(
      decodeText(bytes(`<?xml version="1.0" encoding="ISO-8859-1"?><a>caf`, 0xe9, "</a>")),
      `<?xml version="1.0" encoding="ISO-8859-1"?><a>café</a>`
    )
  })

  it("removes characters XML forbids, keeps tab, LF and CR", () => {
    assert.strictEqual(decodeText(bytes("a", 0x00, 0x07, 0x1b, "\t\n\r", 0x0c, "b")), "a\t\n\rb")
  })

  it("honours a UTF-16 byte order mark", () => {
    assert.strictEqual(decodeText(new Uint8Array([0xff, 0xfe, 0x3c, 0x00, 0x61, 0x00, 0x3e, 0x00])), "<a>")
  })
})

describe("parseDocument", () => {
  it.effect("collects the tree; names keep their prefixes, localName drops them", () =>
    Effect.gen(function*() {
      const root = yield* parseDocument(`<s:Envelope xmlns:s="x"><s:Body><a> 1 </a><b>&amp;&lt;</b><a>2</a><__proto__>p</__proto__></s:Body></s:Envelope>`)
      assert.strictEqual(root.name, "s:Envelope")
      assert.strictEqual(localName(root.name), "Envelope")
      const body = root.children[0]
      assert.isTrue(typeof body !== "string")
      if (typeof body === "string" || body === undefined) return
      const texts = childTexts(body)
      assert.deepStrictEqual(Object.entries(texts), [["a", "1"], ["b", "&<"], ["__proto__", "p"]])
      // An element named __proto__ is an ordinary key, never the record's prototype.
      assert.strictEqual(Object.getPrototypeOf(texts), Object.prototype)
    }))

  it.effect.each([
    ["a DOCTYPE", `<!DOCTYPE a [<!ENTITY x "y">]><a>1</a>`, /DOCTYPE/],
    ["an undeclared entity", `<a>&nbsp;</a>`, /malformed XML/],
    ["unclosed elements", `<a><b>`, /malformed XML/],
    ["nothing", ``, /malformed XML|empty document/]
  ] as const)("refuses %s", ([, text, reason]) =>
    Effect.gen(function*() {
      const problem = yield* Effect.flip(parseDocument(text))
      assert.match(problem.reason, reason)
    }))
})
