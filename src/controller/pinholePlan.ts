/**
 * The IPv6 half of a pass, as plain data (docs/architecture.md, "IPv6 pinholes"): which ports a
 * Service wants opened, and what to do about each given its record and the firewall's view.
 * Pure: `pinholes.ts` carries the plan out.
 *
 * The one rule that matters: a recorded handle (UPnP UniqueID, PCP nonce) is renewed or deleted
 * only while it is provably the one the router gave us, i.e. the same route, the same node
 * address, and no reboot since (miniupnpd numbers pinholes from 1 again after one). Otherwise it
 * is forgotten without a call. A new pinhole goes through the first route that opens its port.
 *
 * And among Services: only the ports the claims and the quota grant (familyClaims.ts) are asked
 * for. Two Services' pinholes on one port are one pinhole on the router (the same node address,
 * port and protocol: miniupnpd answers a second AddPinhole with the first one's UniqueID), so a
 * recorded pinhole on a port another Service asks for or records is never deleted for this one:
 * it is left to that Service, which opens (and so adopts) it, or to its lease.
 */
import { LOWEST_UPNP_PINHOLE_PORT } from "../gateway/upnp/PinholeError.ts"
import type { FirewallRoute, FirewallView } from "../gateway/Firewall.ts"
import type { Protocol } from "../gateway/Mapping.ts"
import type { Service } from "../kube/objects.ts"
import { isOpened, pinholeKey, type RecordedPinhole } from "./PinholeRecord.ts"
import { portNameOf } from "./ServiceSpec.ts"

/** How far apart two readings of one boot's time may be: whole-second uptime plus the calls' own time. */
export const PINHOLE_BOOT_TOLERANCE_MS = 3_000

/** One port a Service wants opened over IPv6. */
export interface PinholePort {
  readonly portName: string
  readonly protocol: Protocol
  /** The Service port: the pinhole's InternalPort. */
  readonly port: number
}

/** Whether the Service has an IPv6 family (dual-stack or IPv6-only). */
export const wantsIpv6 = (service: Service): boolean => (service.spec?.ipFamilies ?? []).includes("IPv6")

/** The TCP and UDP ports of a Service with an IPv6 family; none otherwise. */
export const pinholePorts = (service: Service): ReadonlyArray<PinholePort> =>
  wantsIpv6(service)
    ? (service.spec?.ports ?? []).flatMap((port): Array<PinholePort> => {
      const protocol = port.protocol ?? "TCP"
      return protocol === "TCP" || protocol === "UDP" ? [{ portName: portNameOf(port), protocol, port: port.port }] : []
    })
    : []

/** A router step for one pinhole. */
export type PinholeStep =
  /** Open it through `router`; `settle`: an earlier pass may have added it already, so a renewal follows at once. */
  | { readonly _tag: "Add"; readonly port: PinholePort; readonly router: string; readonly settle: boolean }
  /** Renew a provably ours pinhole. */
  | { readonly _tag: "Renew"; readonly port: PinholePort; readonly entry: RecordedPinhole }
  /** Delete a provably ours pinhole no longer wanted. */
  | { readonly _tag: "Delete"; readonly entry: RecordedPinhole }

/** What became of one wanted port. */
export type PinholeOutcome =
  | { readonly _tag: "Open"; readonly port: PinholePort }
  | {
    readonly _tag: "Failed"
    readonly port: PinholePort
    /** PortConflict, QuotaExceeded: withheld by the claims or the quota, never asked for. */
    readonly reason: "LowPort" | "PinholeFailed" | "PortConflict" | "QuotaExceeded"
    readonly message: string
    readonly retryable: boolean
  }

/** What the IPv6 half will do, before it does it. */
export interface PinholePlan {
  /** The record to write before any router call. */
  readonly recordBefore: ReadonlyArray<RecordedPinhole>
  readonly steps: ReadonlyArray<PinholeStep>
  /** Ports open and not due for renewal: no call. */
  readonly open: ReadonlyArray<PinholePort>
  /**
   * Ports not asked for: no call. Withheld by the claims or the quota, or no route opens them
   * (below 1024 with UPnP only).
   */
  readonly refused: ReadonlyArray<PinholeOutcome>
  /** Recorded entries dropped without a call: their UniqueID may now name another pinhole. */
  readonly forgotten: ReadonlyArray<RecordedPinhole>
  /** Recorded entries dropped without a call: another Service asks for the port, and the pinhole is its now. */
  readonly handedOver: ReadonlyArray<RecordedPinhole>
}

/** What the claims and the quota leave a Service's pinholes (familyClaims.ts). */
export interface PinholeClaims {
  /** The ports it may open. */
  readonly granted: ReadonlyArray<PinholePort>
  /** The ports it asks for and may not open (contested, over quota): their outcome, without a call. */
  readonly withheld: ReadonlyArray<PinholeOutcome>
  /**
   * Ports (`pinholeKey`) another live Service asks for, or another Service's record names: a
   * pinhole on one is never deleted for this one, and one added may be open already.
   */
  readonly heldElsewhere: ReadonlySet<string>
}

/** What the plan is made from. */
export interface PinholeInputs {
  readonly claims: PinholeClaims
  readonly record: ReadonlyArray<RecordedPinhole>
  readonly view: FirewallView
  /** Clock ms. */
  readonly now: number
  readonly leaseSeconds: number
  /** When this process last opened or renewed each recorded pinhole (by `pinholeKey`, Clock ms), if it did. */
  readonly renewedAt: ReadonlyMap<string, number>
}

const routeOf = (entry: RecordedPinhole, view: FirewallView): FirewallRoute | undefined =>
  view.routes.find((route) => route.router === entry.router)

/** Whether a recorded handle is, beyond doubt, the one this router gave for this node in its current boot. */
export const provablyOurs = (entry: RecordedPinhole, view: FirewallView): boolean => {
  const route = routeOf(entry, view)
  return isOpened(entry) && route !== undefined && entry.internalClient === view.nodeAddress &&
    entry.bootedAt !== undefined && route.bootedAt !== undefined &&
    Math.abs(entry.bootedAt - route.bootedAt) <= PINHOLE_BOOT_TOLERANCE_MS
}

/**
 * Whether a recorded handle may stand until its renewal on a route that gives no boot time:
 * never renewed or deleted (no proof), but not re-added on every pass either.
 */
const standsUnproven = (entry: RecordedPinhole, view: FirewallView): boolean => {
  const route = routeOf(entry, view)
  return route !== undefined && route.bootedAt === undefined && isOpened(entry) && entry.internalClient === view.nodeAddress
}

/** The route a new pinhole on `port` goes through: the first that opens it. */
const routeFor = (port: number, view: FirewallView): FirewallRoute | undefined =>
  view.routes.find((route) => port >= LOWEST_UPNP_PINHOLE_PORT || route.opensLowPorts)

/** A pending entry: recorded before its add. */
export const pendingEntry = (port: PinholePort, router: string, nodeAddress: string): RecordedPinhole => ({
  protocol: port.protocol,
  port: port.port,
  internalClient: nodeAddress,
  router
})

/** Plans the IPv6 half of a pass over a live Service. */
export const planPinholes = (inputs: PinholeInputs): PinholePlan => {
  const { view } = inputs
  const recorded = new Map(inputs.record.map((entry) => [pinholeKey(entry), entry]))
  const wanted = new Set<string>()
  const recordBefore: Array<RecordedPinhole> = []
  const steps: Array<PinholeStep> = []
  const open: Array<PinholePort> = []
  const refused: Array<PinholeOutcome> = [...inputs.claims.withheld]
  const forgotten: Array<RecordedPinhole> = []
  const handedOver: Array<RecordedPinhole> = []
  const { heldElsewhere } = inputs.claims
  const due = (entry: RecordedPinhole) => {
    const last = inputs.renewedAt.get(pinholeKey(entry))
    return last === undefined || inputs.now >= last + (inputs.leaseSeconds * 1000) / 2
  }

  for (const port of inputs.claims.granted) {
    const key = pinholeKey(port)
    if (wanted.has(key)) continue
    const route = routeFor(port.port, view)
    if (route === undefined) {
      refused.push({
        _tag: "Failed",
        port,
        reason: "LowPort",
        message: `the router opens no IPv6 pinhole to a port below ${LOWEST_UPNP_PINHOLE_PORT} over UPnP (miniupnpd refuses it), ` +
          "and it does not answer PCP, which could",
        retryable: false
      })
      continue
    }
    wanted.add(key)
    const entry = recorded.get(key)
    if (entry !== undefined && provablyOurs(entry, view)) {
      recordBefore.push(entry)
      if (due(entry)) steps.push({ _tag: "Renew", port, entry })
      else open.push(port)
      continue
    }
    if (entry !== undefined && standsUnproven(entry, view) && !due(entry)) {
      recordBefore.push(entry)
      open.push(port)
      continue
    }
    if (entry !== undefined && isOpened(entry)) forgotten.push(entry)
    recordBefore.push(pendingEntry(port, route.router, view.nodeAddress))
    // The router may hold it already, perhaps under another spelling of its URL, or opened for a
    // Service that asked for the port before (miniupnpd then spoils its expiry).
    steps.push({ _tag: "Add", port, router: route.router, settle: entry !== undefined || heldElsewhere.has(key) })
  }

  for (const entry of inputs.record) {
    if (wanted.has(pinholeKey(entry))) continue
    if (heldElsewhere.has(pinholeKey(entry))) {
      handedOver.push(entry)
    } else if (provablyOurs(entry, view)) {
      recordBefore.push(entry)
      steps.push({ _tag: "Delete", entry })
    } else {
      forgotten.push(entry)
    }
  }
  return { recordBefore, steps, open, refused, forgotten, handedOver }
}

/**
 * The cleanup of a Service that goes: the deletes its record allows, the rest forgotten (a
 * pinhole on a port another Service asks for or records, in `heldElsewhere`, is left to it).
 */
export const planPinholeRemoval = (
  record: ReadonlyArray<RecordedPinhole>,
  view: FirewallView | undefined,
  heldElsewhere: ReadonlySet<string>
): { readonly deletes: ReadonlyArray<PinholeStep & { readonly _tag: "Delete" }>; readonly forgotten: ReadonlyArray<RecordedPinhole> } => {
  const deletes: Array<PinholeStep & { readonly _tag: "Delete" }> = []
  const forgotten: Array<RecordedPinhole> = []
  for (const entry of record) {
    if (view !== undefined && provablyOurs(entry, view) && !heldElsewhere.has(pinholeKey(entry))) deletes.push({ _tag: "Delete", entry })
    else forgotten.push(entry)
  }
  return { deletes, forgotten }
}

/** `TCP 8080 (IPv6)`: how Events and logs name a pinhole's port. */
export const describePinhole = (port: { readonly protocol: string; readonly port: number }): string =>
  `${port.protocol} ${port.port} (IPv6)`
