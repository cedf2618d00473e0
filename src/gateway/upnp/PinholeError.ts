/**
 * A router's refusal of one IPv6 pinhole action (`WANIPv6FirewallControl:1`), with what it
 * means for the user. The same UPnP code means different things per action and per request:
 * miniupnpd 2.3.1 answers 606 both for a port below 1024 and for an InternalClient that is not
 * the request's source, and 402 both for a bad lease and for a UniqueID it does not know
 * (docs/ipv6-field-notes.md).
 */
import { Schema } from "effect"
import { upnpErrorMeaning } from "../GatewayError.ts"

/** The lowest InternalPort miniupnpd opens over UPnP (it refuses 1-1023 with 606). */
export const LOWEST_UPNP_PINHOLE_PORT = 1024

/** Leases a pinhole may have, in seconds: miniupnpd refuses 0 and anything above a day (402). */
export const PINHOLE_LEASE_SECONDS = { min: 1, max: 86_400 } as const

/** What the request was, as far as explaining a refusal needs. */
export interface PinholeRequestContext {
  readonly internalClient?: string | undefined
  readonly internalPort?: number | undefined
  readonly uniqueId?: number | undefined
}

/** A UPnP fault on a pinhole action, with the meaning a user can act on. */
export class PinholeError extends Schema.TaggedError<PinholeError>()("PinholeError", {
  router: Schema.String,
  action: Schema.String,
  code: Schema.Int,
  /** The router's own errorDescription. */
  description: Schema.String,
  /** What the code means for this request, and what to do about it. */
  meaning: Schema.String,
  uniqueId: Schema.optional(Schema.Int)
}) {
  /** Whether the same request may succeed later without a change (a busy or full router). */
  get retryable(): boolean {
    return this.code === 501 || this.code === 701
  }
  /** The pinhole is gone from the router (expired, deleted, rebooted away): add it again. */
  get pinholeGone(): boolean {
    return this.action !== "AddPinhole" && (this.code === 402 || this.code === 704)
  }
  override get message(): string {
    const name = this.description || upnpErrorMeaning(this.code) || PINHOLE_ERROR_NAMES[this.code] || "unknown"
    return `${this.action}${this.uniqueId === undefined ? "" : ` of pinhole ${this.uniqueId}`} on ${this.router} failed: UPnP error ${this.code} (${name}): ${this.meaning}`
  }
}

/** The WANIPv6FirewallControl:1 error names (its specification, §2.6.5). */
export const PINHOLE_ERROR_NAMES: Readonly<Record<number, string>> = {
  701: "PinholeSpaceExhausted",
  702: "FirewallDisabled",
  703: "InboundPinholeNotAllowed",
  704: "NoSuchEntry",
  705: "ProtocolNotSupported",
  706: "InternalPortWildcardingNotAllowed",
  707: "ProtocolWildcardingNotAllowed",
  708: "WildCardNotPermittedInSrcIP",
  709: "NoPacketSent"
}

/** What a fault code means for this action and request. */
export const pinholeFaultMeaning = (action: string, code: number, request: PinholeRequestContext): string => {
  const pinhole = request.uniqueId === undefined ? "the pinhole" : `pinhole ${request.uniqueId}`
  switch (code) {
    case 401:
      return "the router does not implement this action"
    case 402:
      return action === "AddPinhole"
        ? `an argument was refused: leases must be ${PINHOLE_LEASE_SECONDS.min}-${PINHOLE_LEASE_SECONDS.max} seconds`
        : `the router has no ${pinhole} (it expired, was deleted, or the router restarted and numbers pinholes from 1 again): add it again`
    case 501:
      return action === "GetOutboundPinholeTimeout"
        ? "miniupnpd 2.3.1 fails this action whatever the arguments"
        : "the router could not carry out the action; it may succeed later"
    case 606:
      if (action !== "AddPinhole") {
        return `${pinhole} was opened for another address than the one this request comes from; only that address may change it`
      }
      if (request.internalPort !== undefined && request.internalPort < LOWEST_UPNP_PINHOLE_PORT) {
        return `the router opens no pinhole to a port below ${LOWEST_UPNP_PINHOLE_PORT} over UPnP (port ${request.internalPort}); use PCP for it`
      }
      return `the router opens a pinhole only for the address the request comes from, written as it writes it: InternalClient ${
        request.internalClient ?? "(none)"
      } must be this node's source address toward the router, in canonical form, and the request must travel over IPv6`
    case 701:
      return "the router's pinhole table is full"
    case 702:
      return "the router's IPv6 firewall is off: it has nothing to open (inbound IPv6 already passes, or IPv6 is off)"
    case 703:
      return "the router does not allow inbound pinholes (InboundPinholeAllowed is 0): allow them in its settings"
    case 704:
      return `the router has no ${pinhole}: add it again`
    case 705:
      return "the router does not open pinholes for this protocol"
    case 706:
    case 707:
      return "the router refuses a wildcard port or protocol"
    case 708:
      return "InternalClient was empty: the router refuses a wildcard client"
    case 709:
      return `no traffic has been seen through ${pinhole} yet (miniupnpd 2.3.1 says so even after traffic: its rules count nothing)`
    default:
      return "an error the router does not explain"
  }
}
