/**
 * SSDP on the wire: the M-SEARCH we send, and the search replies and NOTIFY advertisements
 * we hear. Routers are sloppy here (header case, missing spaces, bare LF line ends), so the
 * framing is lenient and the fields are checked by Schema. Decoding never throws: every
 * datagram becomes either a typed message or a typed `SsdpDecodeError`.
 */
import { Option, Result, Schema, SchemaIssue, SchemaTransformation } from "effect"

/** The SSDP multicast group and port (UPnP Device Architecture 1.1, section 1). */
export const SSDP_MULTICAST_ADDRESS = "239.255.255.250"
/** SSDP's port. */
export const SSDP_PORT = 1900

/** What we search for, in the order the field guide gives (IGD first, then its WAN services). */
export const GATEWAY_SEARCH_TARGETS: ReadonlyArray<string> = [
  "urn:schemas-upnp-org:device:InternetGatewayDevice:1",
  "urn:schemas-upnp-org:device:InternetGatewayDevice:2",
  "urn:schemas-upnp-org:service:WANIPConnection:1",
  "urn:schemas-upnp-org:service:WANIPConnection:2",
  "urn:schemas-upnp-org:service:WANPPPConnection:1",
  "ssdp:all"
]

// ---------------------------------------------------------------------------------------------
// M-SEARCH
// ---------------------------------------------------------------------------------------------

/** What an M-SEARCH asks. */
export interface MSearchRequest {
  /** The destination: the multicast group, or a unicast address (the default gateway, a fake). */
  readonly host: string
  readonly port: number
  readonly searchTarget: string
  /** Seconds a device may wait before answering. Clamped to 1..5: strict miniupnpd drops MX 0 or none. */
  readonly mx: number
}

/** Clamps MX to what UDA allows and miniupnpd accepts (an integer in 1..5). */
export const clampMx = (mx: number): number => Number.isFinite(mx) ? Math.min(5, Math.max(1, Math.floor(mx))) : 1

/**
 * The M-SEARCH datagram, byte for byte as strict routers want it: HOST first, the quoted
 * `"ssdp:discover"`, an MX of at least 1, CRLF line ends and an empty line at the end.
 */
export const encodeMSearch = (request: MSearchRequest): string =>
  `M-SEARCH * HTTP/1.1\r\nHOST: ${request.host}:${request.port}\r\nST: ${request.searchTarget}\r\n` +
  `MAN: "ssdp:discover"\r\nMX: ${clampMx(request.mx)}\r\n\r\n`

// ---------------------------------------------------------------------------------------------
// Decoding
// ---------------------------------------------------------------------------------------------

/** A datagram that is not a usable SSDP message, with the header at fault when there is one. */
export class SsdpDecodeError extends Schema.TaggedError<SsdpDecodeError>()("SsdpDecodeError", {
  responder: Schema.String,
  field: Schema.optional(Schema.String),
  reason: Schema.String
}) {
  override get message(): string {
    return `unusable SSDP message from ${this.responder}${this.field ? ` (header ${this.field})` : ""}: ${this.reason}`
  }
}

/** Headers every kind of SSDP message may carry. */
export interface SsdpCommonHeaders {
  readonly usn: string | undefined
  readonly server: string | undefined
  /** BOOTID.UPNP.ORG: changes when the device reboots. */
  readonly bootId: number | undefined
  /** CONFIGID.UPNP.ORG: changes when the device's description changes. */
  readonly configId: number | undefined
}

/** `HTTP/1.1 200 OK` in answer to an M-SEARCH. LOCATION is as the device sent it (not yet repaired). */
export interface SsdpSearchReply extends SsdpCommonHeaders {
  readonly _tag: "SearchReply"
  readonly location: string
  readonly searchTarget: string
}

/** The NTS of a NOTIFY: ssdp:alive, ssdp:byebye, ssdp:update. */
export type SsdpNotifyKind = "alive" | "byebye" | "update"

/** `NOTIFY * HTTP/1.1` on the multicast group. A byebye usually has no LOCATION. */
export interface SsdpNotify extends SsdpCommonHeaders {
  readonly _tag: "Notify"
  readonly kind: SsdpNotifyKind
  readonly notificationType: string
  readonly location: string | undefined
  /** NEXTBOOTID.UPNP.ORG of an ssdp:update: the BOOTID the device uses from now on. */
  readonly nextBootId: number | undefined
}

/** Somebody's M-SEARCH (ours looped back, or another control point's). Never an answer. */
export interface SsdpSearchRequest {
  readonly _tag: "SearchRequest"
  readonly searchTarget: string | undefined
}

/** An SSDP datagram, decoded. */
export type SsdpMessage = SsdpSearchReply | SsdpNotify | SsdpSearchRequest

/** A datagram larger than this is not SSDP (real ones are a few hundred bytes). */
export const MAX_SSDP_DATAGRAM_BYTES = 8192

const HeaderText = Schema.String.check(Schema.isMaxLength(2048, { message: "longer than 2048 characters" }))
const RequiredHeader = HeaderText.check(Schema.isNonEmpty({ message: "empty" }))

/** BOOTID / CONFIGID / NEXTBOOTID: a 31-bit non-negative decimal (UDA 1.1). */
export const UpnpCounter = Schema.String.check(
  Schema.isPattern(/^[0-9]{1,10}$/, { message: "not a decimal number" })
).pipe(
  Schema.decodeTo(
    Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 2 ** 31 - 1 }, { message: "out of range" })),
    SchemaTransformation.numberFromString
  )
)

const CommonHeaderFields = {
  usn: Schema.optional(HeaderText),
  server: Schema.optional(HeaderText),
  "bootid.upnp.org": Schema.optional(Schema.String),
  "configid.upnp.org": Schema.optional(Schema.String)
}

/** The headers of a search reply, keyed by lower-cased header name. */
export const SearchReplyHeaders = Schema.Struct({
  location: RequiredHeader,
  st: RequiredHeader,
  ...CommonHeaderFields
})

/** The headers of a NOTIFY, keyed by lower-cased header name. */
export const NotifyHeaders = Schema.Struct({
  nt: RequiredHeader,
  nts: Schema.String.pipe(
    Schema.decodeTo(
      Schema.String.check(
        Schema.isPattern(/^ssdp:(alive|byebye|update)$/, { message: "not ssdp:alive, ssdp:byebye or ssdp:update" })
      ),
      SchemaTransformation.toLowerCase()
    )
  ),
  location: Schema.optional(HeaderText),
  "nextbootid.upnp.org": Schema.optional(Schema.String),
  ...CommonHeaderFields
})

const decodeSearchReplyHeaders = Schema.decodeUnknownResult(SearchReplyHeaders)
const decodeNotifyHeaders = Schema.decodeUnknownResult(NotifyHeaders)
const decodeCounter = Schema.decodeUnknownOption(UpnpCounter)
const issueFormatter = SchemaIssue.makeFormatterStandardSchemaV1()

/** Optional counters are read leniently: a malformed BOOTID costs us reboot detection, not the reply. */
const counter = (value: string | undefined): number | undefined =>
  value === undefined || value === "" ? undefined : Option.getOrUndefined(decodeCounter(value.trim()))

const optionalText = (value: string | undefined): string | undefined => value === undefined || value === "" ? undefined : value

/** How header names appear in errors: as a router's manual would print them. */
const headerLabel = (segment: PropertyKey | { readonly key: PropertyKey } | undefined): string | undefined => {
  const key = typeof segment === "object" ? segment.key : segment
  return typeof key === "string" ? key.toUpperCase() : undefined
}

const schemaFailure = (responder: string, issue: SchemaIssue.Issue): SsdpDecodeError => {
  const [first] = issueFormatter(issue).issues
  const field = headerLabel(first?.path?.[0])
  return new SsdpDecodeError({
    responder,
    ...(field === undefined ? {} : { field }),
    reason: first === undefined ? "invalid headers" : first.message
  })
}

interface Framed {
  readonly startLine: string
  /** Lower-cased names, trimmed values; the first occurrence of a name wins. */
  readonly headers: Readonly<Record<string, string>>
}

const utf8 = new TextDecoder("utf-8", { fatal: false })

/**
 * Splits a datagram into its start line and headers. Tolerates LF-only line ends, any case in
 * header names, no space after the colon (Linksys `Location:http://…`) and stray lines
 * without a colon; stops at the first empty line, since SSDP has no body.
 */
const frame = (payload: Uint8Array): Framed => {
  const text = utf8.decode(payload)
  const lines = text.split(/\r?\n/)
  const headers: Record<string, string> = Object.create(null)
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]!
    if (line.trim() === "") break
    const colon = line.indexOf(":")
    if (colon <= 0) continue
    const name = line.slice(0, colon).trim().toLowerCase()
    if (name === "" || Object.hasOwn(headers, name)) continue
    headers[name] = line.slice(colon + 1).trim()
  }
  return { startLine: (lines[0] ?? "").trim(), headers }
}

const RESPONSE_LINE = /^HTTP\/1\.[01]\s+(\d{3})(?:\s.*)?$/i
const NOTIFY_LINE = /^NOTIFY\s+\*\s+HTTP\/1\.[01]$/i
const SEARCH_LINE = /^M-SEARCH\s+\*\s+HTTP\/1\.[01]$/i

/**
 * Decodes one datagram. `responder` is the datagram's source address, used only to say who
 * sent something unusable. Never throws, whatever the bytes.
 */
export const decodeMessage = (payload: Uint8Array, responder: string): Result.Result<SsdpMessage, SsdpDecodeError> => {
  if (payload.byteLength === 0) return Result.fail(new SsdpDecodeError({ responder, reason: "empty datagram" }))
  if (payload.byteLength > MAX_SSDP_DATAGRAM_BYTES) {
    return Result.fail(
      new SsdpDecodeError({ responder, reason: `datagram of ${payload.byteLength} bytes is too large for SSDP` })
    )
  }
  const { headers, startLine } = frame(payload)
  const response = RESPONSE_LINE.exec(startLine)
  if (response !== null) {
    if (response[1] !== "200") {
      return Result.fail(new SsdpDecodeError({ responder, reason: `status ${response[1]} instead of 200` }))
    }
    return decodeSearchReplyHeaders(headers).pipe(
      Result.mapError((error) => schemaFailure(responder, error.issue)),
      Result.map((decoded): SsdpSearchReply => ({
        _tag: "SearchReply",
        location: decoded.location,
        searchTarget: decoded.st,
        usn: optionalText(decoded.usn),
        server: optionalText(decoded.server),
        bootId: counter(decoded["bootid.upnp.org"]),
        configId: counter(decoded["configid.upnp.org"])
      }))
    )
  }
  if (NOTIFY_LINE.test(startLine)) {
    return decodeNotifyHeaders(headers).pipe(
      Result.mapError((error) => schemaFailure(responder, error.issue)),
      Result.map((decoded): SsdpNotify => ({
        _tag: "Notify",
        kind: notifyKind(decoded.nts),
        notificationType: decoded.nt,
        location: optionalText(decoded.location),
        usn: optionalText(decoded.usn),
        server: optionalText(decoded.server),
        bootId: counter(decoded["bootid.upnp.org"]),
        configId: counter(decoded["configid.upnp.org"]),
        nextBootId: counter(decoded["nextbootid.upnp.org"])
      }))
    )
  }
  if (SEARCH_LINE.test(startLine)) {
    return Result.succeed({ _tag: "SearchRequest", searchTarget: optionalText(headers["st"]) })
  }
  return Result.fail(
    new SsdpDecodeError({
      responder,
      reason: `not an SSDP message (start line ${JSON.stringify(startLine.slice(0, 60))})`
    })
  )
}

// The schema admits only these three (lower-cased) values.
const notifyKind = (nts: string): SsdpNotifyKind =>
  nts === "ssdp:byebye" ? "byebye" : nts === "ssdp:update" ? "update" : "alive"

// ---------------------------------------------------------------------------------------------
// Search targets
// ---------------------------------------------------------------------------------------------

const GATEWAY_TYPE =
  /^urn:(schemas-upnp-org|dslforum-org):(device:(InternetGatewayDevice|WANDevice|WANConnectionDevice)|service:(WANIPConnection|WANPPPConnection|WANCommonInterfaceConfig)):(\d+)$/

/**
 * Whether an ST (or NT) names part of an Internet gateway, in any version: miniupnpd echoes
 * the version searched for, and an `ssdp:all` answer lists every device and service type.
 * Legacy `urn:dslforum-org` (Huawei) types count too.
 */
export const isGatewaySearchTarget = (searchTarget: string): boolean => GATEWAY_TYPE.test(searchTarget.trim())

/**
 * How well an ST identifies a gateway, higher is better: the IGD device type, then the
 * connection services (IP over PPP), then its other parts; a higher version wins a tie.
 * Used to pick the one ST reported for a LOCATION that answered several searches.
 */
export const searchTargetRank = (searchTarget: string): number => {
  const match = GATEWAY_TYPE.exec(searchTarget.trim())
  if (match === null) return 0
  const type = match[3] ?? match[4]
  const base = type === "InternetGatewayDevice"
    ? 600
    : type === "WANIPConnection"
    ? 500
    : type === "WANPPPConnection"
    ? 400
    : type === "WANConnectionDevice"
    ? 300
    : type === "WANDevice"
    ? 200
    : 100
  const standard = match[1] === "schemas-upnp-org" ? 50 : 0
  return base + standard + Math.min(Number(match[5]), 49)
}
