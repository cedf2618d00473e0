/**
 * The IPv4 default gateway, for the unicast copy of each M-SEARCH: some routers answer only
 * unicast. Read from Linux's /proc/net/route, which needs nothing installed in a container.
 */
import * as Os from "node:os"
import { Effect, FileSystem } from "effect"

/** Where Linux lists the IPv4 routes. */
export const PROC_NET_ROUTE = "/proc/net/route"

const RTF_UP = 0x1
const RTF_GATEWAY = 0x2

/** A /proc/net/route address: 8 hex digits of a 32-bit word in the kernel's byte order. */
const hexAddress = (hex: string, endianness: "LE" | "BE"): string | undefined => {
  if (!/^[0-9A-Fa-f]{8}$/.test(hex)) return undefined
  const octets = [0, 2, 4, 6].map((i) => Number.parseInt(hex.slice(i, i + 2), 16))
  return (endianness === "LE" ? octets.reverse() : octets).join(".")
}

/**
 * The gateway of the up IPv4 default route with the lowest metric, or undefined when there
 * is none. Lines that do not parse are skipped.
 */
export const parseDefaultGateway = (
  procNetRoute: string,
  endianness: "LE" | "BE" = Os.endianness()
): string | undefined => {
  let best: { readonly gateway: string; readonly metric: number } | undefined
  for (const line of procNetRoute.split("\n").slice(1)) {
    const [, destination, gateway, flags, , , metric, mask] = line.trim().split(/\s+/)
    if (destination !== "00000000" || mask !== "00000000" || gateway === undefined) continue
    const flagBits = Number.parseInt(flags ?? "", 16)
    if (!Number.isFinite(flagBits) || (flagBits & (RTF_UP | RTF_GATEWAY)) !== (RTF_UP | RTF_GATEWAY)) continue
    const address = hexAddress(gateway, endianness)
    const metricValue = Number.parseInt(metric ?? "", 10)
    if (address === undefined || address === "0.0.0.0") continue
    const rank = Number.isFinite(metricValue) ? metricValue : Number.MAX_SAFE_INTEGER
    if (best === undefined || rank < best.metric) best = { gateway: address, metric: rank }
  }
  return best?.gateway
}

/** The default gateway, or undefined where there is none or the table cannot be read. */
export const readDefaultGateway: Effect.Effect<string | undefined, never, FileSystem.FileSystem> = Effect.gen(
  function*() {
    const fs = yield* FileSystem.FileSystem
    const table = yield* fs.readFileString(PROC_NET_ROUTE)
    return parseDefaultGateway(table)
  }
).pipe(
  Effect.catch((error) =>
    Effect.logDebug("no IPv4 default route readable", { path: PROC_NET_ROUTE, reason: error.message }).pipe(
      Effect.as(undefined)
    )
  )
)
