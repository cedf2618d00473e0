/**
 * The words of the Events a pass raises: what a Service asks that cannot be done, what failed
 * on which port, why a router is down or hides behind a double NAT, what a record held that was
 * not believed. Pure: each is built from what the pass saw.
 */
import type { GatewayError } from "../gateway/GatewayError.ts"
import type { Announcement } from "./Announcer.ts"
import type { ReadRecord } from "./MappingRecord.ts"
import type { GatewayView } from "./planner.ts"
import type { PortOutcome } from "./status.ts"
import { ABANDON_MAPPINGS_ANNOTATION, type DesiredService, MAPPINGS_ANNOTATION } from "./ServiceSpec.ts"

/** `TCP 8080`, as Events and logs name a port. */
export const describePort = (port: { readonly protocol: string; readonly externalPort: number }): string =>
  `${port.protocol} ${port.externalPort}`

/** `TCP 8080, UDP 53`, or `no ports`. */
export const describePorts = (ports: ReadonlyArray<{ readonly protocol: string; readonly externalPort: number }>) =>
  ports.length === 0 ? "no ports" : ports.map(describePort).join(", ")

/**
 * What the Service asks that cannot be done: source ranges, a bad lease, a port without nodePort.
 * An IPv6-only Service is not among them: its pinholes serve it, and the IPv6 half says when they cannot.
 */
export const warningsOf = (desired: DesiredService): Array<Announcement> => [
  ...desired.warnings.filter((warning) => warning.reason !== "IPv6Only").map((warning): Announcement => ({
    type: "Warning",
    reason: warning.reason,
    action: "Validate",
    note: warning.message
  })),
  ...desired.unmappable.map((port): Announcement => ({
    type: "Warning",
    reason: port.reason === "UnsupportedProtocol" ? "UnsupportedProtocol" : "NoNodePort",
    action: "Validate",
    note: port.message
  }))
]

/** One Warning per failed port; one DoubleNAT per Service, not one per port. */
export const portConditions = (outcomes: ReadonlyArray<PortOutcome>, desired: DesiredService): Array<Announcement> => {
  const conditions: Array<Announcement> = []
  for (const outcome of outcomes) {
    if (outcome._tag !== "Failed") continue
    const reason = outcome.reason === "PortConflict" || outcome.reason === "DoubleNAT" ||
        outcome.reason === "QuotaExceeded"
      ? outcome.reason
      : "SyncLoadBalancerFailed"
    conditions.push({ type: "Warning", reason, action: "Ensure", note: `${describePort(outcome.port)}: ${outcome.message}` })
  }
  const doubleNat = conditions.filter((c) => c.reason === "DoubleNAT")
  return doubleNat.length > 1
    ? [
      ...conditions.filter((c) => c.reason !== "DoubleNAT"),
      { ...doubleNat[0]!, note: `${desired.ports.length} ports not published: ${outcomesNote(doubleNat[0]!.note)}` }
    ]
    : conditions
}

const outcomesNote = (note: string) => note.slice(note.indexOf(": ") + 2)

/** The router could not be found or did not answer. */
export const gatewayDown = (error: GatewayError): Announcement => ({
  type: "Warning",
  reason: error._tag === "GatewayNotFound" ? "GatewayNotFound" : "SyncLoadBalancerFailed",
  action: "Ensure",
  note: error.message
})

/** Why nothing is published behind this router. */
export const doubleNatNote = (gateway: GatewayView): string =>
  gateway.externalAddress.class === "missing"
    ? `${gateway.router} reports no usable external address (its WAN link is down, or it hides a private ` +
      "address behind a double NAT): nothing can be published"
    : `${gateway.router} has the external address ${gateway.externalAddress.ip}, which is private or reserved ` +
      "(double NAT or CGNAT): the Service would not be reachable from the Internet, so no address is published"

/** The InvalidRecord Warning for what a record held that was not believed. */
export const invalidRecord = (read: ReadRecord): Array<Announcement> =>
  read.refused.length === 0 ? [] : [{
    type: "Warning",
    reason: "InvalidRecord",
    action: "Validate",
    note: `annotation ${MAPPINGS_ANNOTATION}: ignoring what this controller did not record for this Service, and ` +
      `dropping it from the record: ${read.refused.slice(0, 3).join("; ")}` +
      (read.refused.length > 3 ? `; and ${read.refused.length - 3} more` : "")
  }]

/**
 * Which router the Service uses and why (the node's default gateway, the address or URL the
 * operator gave); `auto` also says which protocol it chose. Announced once, and again when it
 * changes.
 */
export const gatewaySelected = (
  desired: DesiredService,
  backend: string,
  autoReason: string | undefined,
  router: string | undefined
): Array<Announcement> => {
  const protocol = desired.backend === "auto" && autoReason !== undefined ? `auto uses ${backend}: ${autoReason}` : undefined
  const gateway = router === undefined ? undefined : `${backend} router ${router}`
  const note = [protocol, gateway].filter((part) => part !== undefined).join("; ")
  return note === "" ? [] : [{ type: "Normal", reason: "GatewaySelected", action: "Ensure", note }]
}

/** A deleted Service's mappings could not be removed yet, and how to give up on them. */
export const cleanupBlocked = (reason: string): Announcement => ({
  type: "Warning",
  reason: "SyncLoadBalancerFailed",
  action: "Delete",
  note: `cannot remove the router mappings yet (${reason}); retrying with backoff. ` +
    `To give up and leave them, annotate the Service ${ABANDON_MAPPINGS_ANNOTATION}="true"`
})
