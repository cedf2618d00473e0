/**
 * Lenient reading of the XML routers send. Real devices send invalid UTF-8, Latin-1
 * documents and stray control characters, which a strict decoder refuses; a listing must
 * not break on them. The parser itself (`effect/encoding/Xml`) never expands entities, and
 * documents with a DOCTYPE are refused outright: no UPnP document has one, and it is how an
 * entity bomb starts.
 */
import { Effect, Option, Stream } from "effect"
import { Xml } from "effect/encoding"

/** An element of a parsed document. */
export type XmlElement = Xml.Element

const LATIN1_LABELS = new Set(["iso-8859-1", "iso8859-1", "latin1", "latin-1", "iso-8859-15", "windows-1252", "cp1252"])

// XML 1.0 forbids C0 controls other than tab, LF and CR, and the noncharacters U+FFFE/U+FFFF.
const FORBIDDEN_CHARACTERS = /[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]/g

const declaredEncoding = (bytes: Uint8Array): string | undefined => {
  const head = new TextDecoder("latin1").decode(bytes.subarray(0, 256))
  const match = /^\s*<\?xml[^>]*?encoding\s*=\s*["']([A-Za-z0-9._-]+)["']/.exec(head)
  return match?.[1]?.toLowerCase()
}

/**
 * Bytes to text without ever failing: a UTF-16 BOM or a Latin-1 declaration is honoured,
 * anything else is read as UTF-8 with invalid sequences replaced by U+FFFD, and the
 * characters XML forbids are removed.
 */
export const decodeText = (bytes: Uint8Array): string => {
  let label = "utf-8"
  if (bytes[0] === 0xfe && bytes[1] === 0xff) label = "utf-16be"
  else if (bytes[0] === 0xff && bytes[1] === 0xfe) label = "utf-16le"
  else {
    const declared = declaredEncoding(bytes)
    if (declared !== undefined && LATIN1_LABELS.has(declared)) label = "windows-1252"
  }
  return new TextDecoder(label, { fatal: false, ignoreBOM: false }).decode(bytes).replace(FORBIDDEN_CHARACTERS, "")
}

/** Why a document could not be read; the caller turns it into a typed gateway error. */
export interface XmlProblem {
  readonly reason: string
}

/**
 * Parses a whole document into its root element. Never throws: any malformed input,
 * a DOCTYPE, an entity reference or an oversize token is an `XmlProblem`.
 */
export const parseDocument = (
  text: string,
  options?: { readonly maxSize?: number | undefined }
): Effect.Effect<XmlElement, XmlProblem> => {
  const maxSize = options?.maxSize ?? 256 * 1024
  return Stream.make(text).pipe(
    Stream.pipeThroughChannel(Xml.decodeString({ maxTokenSize: maxSize, maxDepth: 64 })),
    Stream.mapEffect((event) =>
      event._tag === "Doctype"
        ? Effect.fail<XmlProblem>({ reason: "document type declarations (DOCTYPE) are refused" })
        : Effect.succeed(event)
    ),
    Stream.pipeThroughChannel(Xml.elements(["*"], { maxElementSize: maxSize * 2 })),
    Stream.runHead,
    Effect.mapError((error): XmlProblem => Xml.isXmlError(error) ? { reason: `malformed XML: ${error.message}` } : error),
    Effect.flatMap(Option.match({
      onNone: () => Effect.fail<XmlProblem>({ reason: "empty document" }),
      onSome: Effect.succeed
    })),
    // The parser is total on strings, but the message bytes come from the network: keep any
    // surprise a typed failure rather than a defect.
    Effect.catchDefect((defect) => Effect.fail<XmlProblem>({ reason: `unreadable XML: ${String(defect)}` }))
  )
}

/** The name without its namespace prefix: routers use `s:`, `SOAP-ENV:`, `m:` or none. */
export const localName = (name: string): string => {
  const colon = name.lastIndexOf(":")
  return colon === -1 ? name : name.slice(colon + 1)
}

/** An element's child elements. */
export const childElements = (element: XmlElement): ReadonlyArray<XmlElement> =>
  element.children.filter((child): child is XmlElement => typeof child !== "string")

/** The first child with this local name, compared case-insensitively. */
export const findChild = (element: XmlElement, name: string): XmlElement | undefined => {
  const wanted = name.toLowerCase()
  return childElements(element).find((child) => localName(child.name).toLowerCase() === wanted)
}

/** An element's children of this local name. */
export const findChildren = (element: XmlElement, name: string): ReadonlyArray<XmlElement> => {
  const wanted = name.toLowerCase()
  return childElements(element).filter((child) => localName(child.name).toLowerCase() === wanted)
}

/** Follows a path of local names from an element; undefined where one step is missing. */
export const findPath = (element: XmlElement, path: ReadonlyArray<string>): XmlElement | undefined => {
  let current: XmlElement | undefined = element
  for (const step of path) {
    if (current === undefined) return undefined
    current = findChild(current, step)
  }
  return current
}

/** The element's own text, trimmed: Huawei pads values with newlines and spaces. */
export const textOf = (element: XmlElement | undefined): string | undefined => {
  if (element === undefined) return undefined
  return element.children.filter((child): child is string => typeof child === "string").join("").trim()
}

/** The element's text children as a record keyed by local name (the first of each name wins). */
export const childTexts = (element: XmlElement): Record<string, string> => {
  const values = new Map<string, string>()
  for (const child of childElements(element)) {
    const key = localName(child.name)
    if (!values.has(key)) values.set(key, textOf(child) ?? "")
  }
  // fromEntries defines own properties, so a `__proto__` element stays an ordinary key.
  return Object.fromEntries(values)
}
