/**
 * Claims and the quota over both families. A Service's router entries are its IPv4 mappings and
 * its IPv6 pinholes: both are contended for by the one rule of the planner (`resolveClaims`:
 * the older Service wins, then the one whose record holds the port) and counted by its one
 * quota (`resolveQuota`), under family-qualified keys (`claimKey`: `TCP/443` for a mapping,
 * `TCP/443/IPv6` for a pinhole), then split back into the IPv4 plan's claims and the pinhole
 * plan's. Pure, like the planner.
 */
import type { Service } from "../kube/objects.ts"
import { perServiceObject } from "./perServiceObject.ts"
import { describePinhole, type PinholeClaims, type PinholeOutcome, type PinholePort, pinholePorts } from "./pinholePlan.ts"
import { type Claimant, type ClaimedPort, claimKey, type Claims, contestedReason, overQuotaReason } from "./planner.ts"
import type { DesiredPort, DesiredService } from "./ServiceSpec.ts"

/** A pinhole's port as claims and the quota see it. */
export interface PinholeClaim extends ClaimedPort {
  readonly family: "IPv6"
  readonly pinhole: PinholePort
}

/** A router entry a Service asks for: an IPv4 mapping or an IPv6 pinhole. */
export type EntryPort = DesiredPort | PinholeClaim

/** The claim on a pinhole's port. */
export const pinholeClaim = (pinhole: PinholePort): PinholeClaim => ({
  protocol: pinhole.protocol,
  externalPort: pinhole.port,
  family: "IPv6",
  pinhole
})

/** `TCP/443/IPv6`: the claim key of a pinhole (or recorded pinhole) on this port. */
export const pinholeClaimKey = (pinhole: Pick<PinholePort, "protocol" | "port">): string =>
  claimKey({ protocol: pinhole.protocol, externalPort: pinhole.port, family: "IPv6" })

/**
 * The router entries a live Service asks for, in the quota's order: its IPv4 mappings, then its
 * pinholes (computed once per object version).
 */
export const claimantOf = perServiceObject((service: Service, desired: DesiredService): Claimant<EntryPort> => ({
  key: desired.key,
  createdAt: desired.createdAt,
  ports: [...desired.ports, ...pinholePorts(service).map(pinholeClaim)]
}))

const isPinhole = (port: EntryPort): port is PinholeClaim => "family" in port
const isMapping = (port: EntryPort): port is DesiredPort => !isPinhole(port)

/** The IPv4 part of a Service's claims: what the IPv4 planner works from. */
export const ipv4Claims = (claims: Claims<EntryPort>): Claims => ({
  granted: claims.granted.filter(isMapping),
  contested: claims.contested.flatMap(({ holder, port }) => isMapping(port) ? [{ port, holder }] : []),
  overQuota: claims.overQuota.filter(isMapping)
})

/**
 * The IPv6 part: the pinholes it may open, and an outcome (a port error, no router call) for each
 * it may not, worded as the IPv4 planner words a conflict and a full quota.
 */
export const pinholeClaims = (
  claims: Claims<EntryPort>,
  context: {
    readonly namespace: string
    readonly quota: number
    /** Ports (`pinholeKey`) another Service asks for or records (neighbours.ts `pinholesHeldElsewhere`). */
    readonly heldElsewhere: ReadonlySet<string>
  }
): PinholeClaims => ({
  granted: claims.granted.filter(isPinhole).map((port) => port.pinhole),
  withheld: [
    ...claims.contested.flatMap(({ holder, port }): Array<PinholeOutcome> =>
      isPinhole(port)
        ? [{
          _tag: "Failed",
          port: port.pinhole,
          reason: "PortConflict",
          message: contestedReason(holder, describePinhole(port.pinhole)),
          // The holder going requeues this Service (neighbours.ts `contenders`): no retry until then.
          retryable: false
        }]
        : []
    ),
    ...claims.overQuota.filter(isPinhole).map((port): PinholeOutcome => ({
      _tag: "Failed",
      port: port.pinhole,
      reason: "QuotaExceeded",
      message: overQuotaReason(context.namespace, context.quota),
      retryable: false
    }))
  ],
  heldElsewhere: context.heldElsewhere
})
