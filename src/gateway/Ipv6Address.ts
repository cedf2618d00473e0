/**
 * IPv6 addresses as text, in the one spelling routers compare: RFC 5952's canonical form
 * (lower case, no leading zeros, the first longest run of two or more zero groups written
 * `::`). miniupnpd 2.3.1 checks a pinhole's InternalClient against the request's source by
 * comparing text, so `2001:0db8:2::10` or `2001:DB8:2:0:0:0:0:10` for the node's own address is
 * refused (docs/ipv6-field-notes.md, section 3). Every address we send is written here first.
 */
import { Effect, Result, Schema, SchemaIssue, SchemaTransformation } from "effect"
import { NetAddress } from "effect/net"

/** Why a text is not an IPv6 address we can use. */
export interface Ipv6TextProblem {
  readonly input: string
  readonly reason: string
}

/**
 * The RFC 5952 form of an IPv6 address, or why the text is not one. Zone indexes (`%eth0`)
 * are refused: a router cannot use them, and a scoped address is never a pinhole's client.
 */
export const canonicalIpv6 = (text: string): Result.Result<string, Ipv6TextProblem> => {
  if (text.includes("%")) return Result.fail({ input: text, reason: "has a zone index" })
  const parsed = NetAddress.ipv6FromString(text)
  if (Result.isFailure(parsed)) return Result.fail({ input: text, reason: "is not an IPv6 address" })
  return Result.succeed(NetAddress.formatIp(parsed.success))
}

/** An address as the kernel names a link-local one (`fe80::1%eth0`), without its interface. */
export const withoutZone = (text: string): string => text.replace(/%.*$/, "")

/** Whether two texts name the same IPv6 address, whatever their spelling. */
export const sameIpv6 = (a: string, b: string): boolean => {
  const x = canonicalIpv6(a)
  const y = canonicalIpv6(b)
  return Result.isSuccess(x) && Result.isSuccess(y) && x.success === y.success
}

/** Any IPv6 text, decoded to its canonical form; the failure says why the text is not one. */
export const CanonicalIpv6FromString = Schema.String.pipe(
  Schema.decodeTo(
    Schema.String,
    SchemaTransformation.transformEffect<string, string>({
      decode: (text, options) => {
        const canonical = canonicalIpv6(text)
        return Result.isSuccess(canonical)
          ? Effect.succeed(canonical.success)
          : Effect.fail(
            new SchemaIssue.InvalidValue({ message: `${JSON.stringify(text)} ${canonical.failure.reason}` }, text, options)
          )
      },
      encode: (text) => Effect.succeed(text)
    })
  )
)

/** What kind of unicast address an IPv6 address is, as far as reaching it from the Internet goes. */
export type Ipv6Scope = "global" | "link-local" | "unique-local" | "loopback" | "unspecified" | "multicast" | "ipv4-mapped"

/** The scope of a (valid) IPv6 address; undefined for text that is not one. */
export const ipv6Scope = (text: string): Ipv6Scope | undefined => {
  const parsed = NetAddress.ipv6FromString(text)
  if (Result.isFailure(parsed)) return undefined
  const address = parsed.success
  if (NetAddress.isUnspecified(address)) return "unspecified"
  if (NetAddress.isLoopback(address)) return "loopback"
  if (NetAddress.isMulticast(address)) return "multicast"
  if (NetAddress.isIpv4Mapped(address)) return "ipv4-mapped"
  if (NetAddress.isLinkLocal(address)) return "link-local"
  if (NetAddress.isUniqueLocal(address)) return "unique-local"
  return "global"
}
