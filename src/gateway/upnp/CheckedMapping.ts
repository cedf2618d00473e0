/**
 * AddPortMapping, checked before and after. Before: miniupnpd silently overwrites a mapping
 * held by the same internal client, so one under another description is a conflict unless
 * forced, and one of another host is never touched. After: some routers report success and
 * create nothing, so the entry is read back (unless the caller says it need not be), and the
 * lease it reports is the one the router applies.
 */
import { Effect } from "effect"
import { GatewayProtocolError, PortConflict } from "../GatewayError.ts"
import type { GrantedMapping, MappingEntry, MappingRequest } from "../Mapping.ts"
import * as IgdClient from "./IgdClient.ts"

/** The WAN service a mapping is added on: its client, its control URL, our address toward it. */
export interface MappingTarget {
  readonly client: IgdClient.IgdClient
  readonly router: string
  /** The internal client when the request names none. */
  readonly localAddress: string
}

const describe = (entry: MappingEntry) => `${entry.internalClient}:${entry.internalPort} ${JSON.stringify(entry.description)}`

/** Adds the request's mapping on the target, refusing another's port, and reads it back. */
export const addChecked = Effect.fnUntraced(function*({ client, localAddress, router }: MappingTarget, request: MappingRequest) {
  const args: IgdClient.PortMappingArgs = {
    externalPort: request.externalPort,
    protocol: request.protocol,
    internalPort: request.internalPort,
    internalClient: request.internalClient ?? localAddress,
    description: request.description,
    leaseSeconds: request.leaseSeconds
  }
  yield* IgdClient.validatePortMappingArgs(router, "AddPortMapping", args)
  if (request.ownershipVerified !== true) {
    const existing = yield* client.getSpecificPortMappingEntry(args.externalPort, args.protocol)
    if (existing !== undefined && existing.internalClient !== args.internalClient) {
      return yield* new PortConflict({
        router,
        externalPort: args.externalPort,
        protocol: args.protocol,
        holder: describe(existing),
        reason: "the port is mapped to another host; it is left alone"
      })
    }
    if (existing !== undefined && existing.description !== args.description && request.force !== true) {
      return yield* new PortConflict({
        router,
        externalPort: args.externalPort,
        protocol: args.protocol,
        holder: describe(existing),
        reason: "the port is mapped to this host under another description; force to take it over"
      })
    }
  }
  const granted = yield* client.addPortMapping(args)
  const mapped = {
    externalPort: args.externalPort,
    protocol: args.protocol,
    internalClient: args.internalClient,
    internalPort: args.internalPort,
    description: args.description
  }
  if (request.readBack === false) return { ...mapped, leaseSeconds: granted.leaseSeconds } satisfies GrantedMapping
  // Some routers report success and create nothing.
  const created = yield* client.getSpecificPortMappingEntry(args.externalPort, args.protocol)
  if (created === undefined) {
    return yield* new GatewayProtocolError({
      router,
      action: "AddPortMapping",
      reason: "the router reported success but holds no such mapping"
    })
  }
  if (created.internalClient !== args.internalClient) {
    return yield* new PortConflict({
      router,
      externalPort: args.externalPort,
      protocol: args.protocol,
      holder: describe(created),
      reason: "after adding, the port maps to another host"
    })
  }
  return { ...mapped, leaseSeconds: effectiveLease(granted.leaseSeconds, created.leaseDuration) } satisfies GrantedMapping
})

/**
 * The lease the router actually applies. IGDv2 routers turn a permanent (0) lease into a week,
 * and some shorten long leases; a remaining lease a few seconds under the one sent is just
 * the time the call took.
 */
export const effectiveLease = (sent: number, reported: number | undefined): number => {
  if (reported === undefined || reported === 0) return sent
  if (sent === 0 || reported < sent - 5) return reported
  return sent
}
