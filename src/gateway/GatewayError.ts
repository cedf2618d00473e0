/**
 * Every way a router can fail us, each carrying what a user needs to act on it:
 * which router, which action, the protocol's own code, and whether trying again can help.
 */
import { Schema } from "effect"

/** A UPnP fault (`UPnPError/errorCode`) returned by the router for one SOAP action. */
export class UpnpError extends Schema.TaggedError<UpnpError>()("UpnpError", {
  router: Schema.String,
  action: Schema.String,
  code: Schema.Int,
  description: Schema.String
}) {
  get retryable(): boolean {
    return this.code === 501 || this.code === 728
  }
  override get message(): string {
    const meaning = upnpErrorMeaning(this.code)
    return `${this.action} on ${this.router} failed: UPnP error ${this.code} (${this.description || meaning}${
      this.description && meaning && this.description !== meaning ? `: ${meaning}` : ""
    })`
  }
}

/** The router could not be reached, stalled, reset the connection, or answered 5xx without a UPnP fault. */
export class GatewayUnreachable extends Schema.TaggedError<GatewayUnreachable>()("GatewayUnreachable", {
  router: Schema.String,
  action: Schema.String,
  reason: Schema.String
}) {
  get retryable(): boolean {
    return true
  }
  override get message(): string {
    return `${this.action} on ${this.router}: gateway unreachable (${this.reason})`
  }
}

/** The router answered, but with something we cannot use (garbage, oversize, a missing field). */
export class GatewayProtocolError extends Schema.TaggedError<GatewayProtocolError>()("GatewayProtocolError", {
  router: Schema.String,
  action: Schema.String,
  field: Schema.optional(Schema.String),
  reason: Schema.String
}) {
  get retryable(): boolean {
    return false
  }
  override get message(): string {
    return `${this.action} on ${this.router}: unusable response${this.field ? ` (field ${this.field})` : ""}: ${this.reason}`
  }
}

/** No usable Internet gateway answered discovery (or the configured URL is not one). */
export class GatewayNotFound extends Schema.TaggedError<GatewayNotFound>()("GatewayNotFound", {
  reason: Schema.String,
  candidates: Schema.Array(Schema.String)
}) {
  get retryable(): boolean {
    return true
  }
  override get message(): string {
    return `no usable Internet gateway found: ${this.reason}${
      this.candidates.length > 0 ? ` (tried ${this.candidates.join(", ")})` : ""
    }`
  }
}

/**
 * The router's external address is private, reserved or missing: a mapping would not make
 * anything reachable from the Internet, so this is never reported as success.
 */
export class DoubleNat extends Schema.TaggedError<DoubleNat>()("DoubleNat", {
  router: Schema.String,
  externalIp: Schema.optional(Schema.String),
  reason: Schema.String
}) {
  get retryable(): boolean {
    return true
  }
  override get message(): string {
    return `${this.router}: ${this.reason}${this.externalIp ? ` (external address ${this.externalIp})` : ""}`
  }
}

/** The external port is held by another mapping: another host, or ours under another description. */
export class PortConflict extends Schema.TaggedError<PortConflict>()("PortConflict", {
  router: Schema.String,
  externalPort: Schema.Int,
  protocol: Schema.String,
  holder: Schema.String,
  reason: Schema.String
}) {
  get retryable(): boolean {
    return true
  }
  override get message(): string {
    return `${this.protocol} ${this.externalPort} on ${this.router} is held by ${this.holder}: ${this.reason}`
  }
}

/**
 * A request we refuse to send: it could only fail or do harm on the router (port 0 is the
 * wildcard routers reject with 716; miniupnpd garbles descriptions of 64 bytes or more).
 */
export class InvalidMapping extends Schema.TaggedError<InvalidMapping>()("InvalidMapping", {
  router: Schema.String,
  action: Schema.String,
  field: Schema.String,
  reason: Schema.String
}) {
  get retryable(): boolean {
    return false
  }
  override get message(): string {
    return `${this.action} on ${this.router} not sent: ${this.field} ${this.reason}`
  }
}

/**
 * A NAT-PMP (RFC 6886 §3.5) or PCP (RFC 6887 §7.4) result code other than success, for one
 * request. Short-lifetime codes (network failure, out of resources, quota) may clear by
 * themselves; the others will not without a change on the gateway or in the request.
 */
export class PortControlError extends Schema.TaggedError<PortControlError>()("PortControlError", {
  router: Schema.String,
  protocol: Schema.Literals(["nat-pmp", "pcp"]),
  action: Schema.String,
  code: Schema.Int,
  /** What else the user needs, e.g. both addresses of an ADDRESS_MISMATCH. */
  detail: Schema.optional(Schema.String)
}) {
  get codeName(): string {
    return (this.protocol === "pcp" ? PCP_RESULT_CODES : NATPMP_RESULT_CODES)[this.code] ?? "unknown result code"
  }
  get retryable(): boolean {
    return this.protocol === "pcp" ? [7, 8, 10].includes(this.code) : [3, 4].includes(this.code)
  }
  override get message(): string {
    return `${this.action} on ${this.router} failed: ${this.protocol === "pcp" ? "PCP" : "NAT-PMP"} result ${this.code} (${this.codeName})${
      this.detail ? `: ${this.detail}` : ""
    }`
  }
}

const NATPMP_RESULT_CODES: Record<number, string> = {
  1: "UNSUPPORTED_VERSION",
  2: "NOT_AUTHORIZED",
  3: "NETWORK_FAILURE",
  4: "OUT_OF_RESOURCES",
  5: "UNSUPPORTED_OPCODE"
}

const PCP_RESULT_CODES: Record<number, string> = {
  1: "UNSUPP_VERSION",
  2: "NOT_AUTHORIZED",
  3: "MALFORMED_REQUEST",
  4: "UNSUPP_OPCODE",
  5: "UNSUPP_OPTION",
  6: "MALFORMED_OPTION",
  7: "NETWORK_FAILURE",
  8: "NO_RESOURCES",
  9: "UNSUPP_PROTOCOL",
  10: "USER_EX_QUOTA",
  11: "CANNOT_PROVIDE_EXTERNAL",
  12: "ADDRESS_MISMATCH",
  13: "EXCESSIVE_REMOTE_PEERS"
}

/**
 * The node has no IPv6 address the Internet can reach toward this router: none at all, or
 * only a link-local or unique-local one (which only a flag allows). IPv4 is unaffected.
 */
export class NoGlobalIpv6Address extends Schema.TaggedError<NoGlobalIpv6Address>()("NoGlobalIpv6Address", {
  router: Schema.String,
  /** The address the kernel chose, when it chose one. */
  address: Schema.String,
  reason: Schema.String
}) {
  get retryable(): boolean {
    return true
  }
  override get message(): string {
    return `no global IPv6 address toward ${this.router}: ${this.reason}${this.address ? ` (${this.address})` : ""}`
  }
}

/** Every way a router call can fail. */
export type GatewayError =
  | UpnpError
  | InvalidMapping
  | GatewayUnreachable
  | GatewayProtocolError
  | GatewayNotFound
  | DoubleNat
  | PortConflict
  | PortControlError

/** The meaning of each UPnP error code a gateway client meets in the field. */
export const upnpErrorMeaning = (code: number): string => UPNP_ERROR_MEANINGS[code] ?? ""

const UPNP_ERROR_MEANINGS: Record<number, string> = {
  401: "Invalid Action",
  402: "Invalid Args",
  501: "Action Failed",
  606: "Action not authorized",
  713: "SpecifiedArrayIndexInvalid",
  714: "NoSuchEntryInArray",
  715: "WildCardNotPermittedInSrcIP",
  716: "WildCardNotPermittedInExtPort",
  718: "ConflictInMappingEntry",
  724: "SamePortValuesRequired",
  725: "OnlyPermanentLeasesSupported",
  726: "RemoteHostOnlySupportsWildcard",
  727: "ExternalPortOnlySupportsWildcard",
  728: "NoPortMapsAvailable",
  729: "ConflictWithOtherMechanisms",
  732: "WildCardNotPermittedInIntPort"
}

/**
 * The router opens no IPv6 pinholes for us: no firewall service, inbound pinholes not
 * allowed, no usable node address, or nothing configured. Said once per Service, never an
 * error per pass: IPv4 goes on unaffected.
 */
export class FirewallUnavailable extends Schema.TaggedError<FirewallUnavailable>()("FirewallUnavailable", {
  reason: Schema.String
}) {
  override get message(): string {
    return this.reason
  }
}
