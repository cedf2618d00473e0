/**
 * What NAT-PMP and PCP gateways have in common as services: beside its `PortMapper`, each
 * offers the gateway in use and its epoch, both from the shared port control, and is built over
 * Node's file system (the default route is read from /proc/net/route).
 */
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { Context, Effect, Layer } from "effect"
import { type GatewayError, InvalidMapping } from "../GatewayError.ts"
import { isMappablePort, type MappingRequest } from "../Mapping.ts"
import { PortMapper } from "../PortMapper.ts"
import type { EpochReport, EpochRule } from "./Epoch.ts"
import type { Endpoint } from "./Exchange.ts"
import { makePortControl, type PortControl, type PortControlOptions } from "./PortControl.ts"

/** A NAT-PMP or PCP gateway beside its `PortMapper`. */
export interface PortControlGatewayShape {
  /** The gateway in use and our address toward it. */
  readonly endpoint: Effect.Effect<Endpoint, GatewayError>
  /** The last epoch and whether the gateway lost its state; clears `lostState` like `status`. */
  readonly epoch: Effect.Effect<EpochReport>
}

/**
 * The `PortMapper` and the gateway service `key` names, over a port control speaking `rule`
 * with these settings; the gateway is found on first use.
 */
export const portControlGatewayLayer = <I, Settings extends PortControlOptions>(
  key: Context.Key<I, PortControlGatewayShape>,
  rule: EpochRule,
  settings: Settings,
  makePortMapper: (control: PortControl, settings: Settings) => Effect.Effect<PortMapper["Service"]>
): Layer.Layer<PortMapper | I> =>
  Layer.effectContext(
    Effect.gen(function*() {
      const control = yield* makePortControl(rule, settings)
      const portMapper = yield* makePortMapper(control, settings)
      return Context.make(PortMapper, portMapper).pipe(
        Context.add(key, { endpoint: control.endpoint, epoch: control.epochs.report })
      )
    })
  ).pipe(Layer.provide(NodeFileSystem.layer))

/**
 * What NAT-PMP and PCP check before a MAP is sent: ports in range, a lease of whole seconds that
 * fits their 32-bit field, and no internal client but the address that asks (both protocols map
 * only to the requester).
 */
export const checkMapRequest = Effect.fnUntraced(function*(
  endpoint: Endpoint,
  action: string,
  request: MappingRequest,
  protocol: string
) {
  const invalid = (field: string, reason: string) => new InvalidMapping({ router: endpoint.router, action, field, reason })
  if (!isMappablePort(request.externalPort)) return yield* invalid("externalPort", "must be 1-65535")
  if (!isMappablePort(request.internalPort)) return yield* invalid("internalPort", "must be 1-65535")
  if (!Number.isInteger(request.leaseSeconds) || request.leaseSeconds < 0 || request.leaseSeconds > 0xffff_ffff) {
    return yield* invalid("leaseSeconds", "must be a whole number of seconds")
  }
  if (request.internalClient !== undefined && request.internalClient !== endpoint.localAddress) {
    return yield* invalid(
      "internalClient",
      `${protocol} maps only to the address that asks (${endpoint.localAddress}), not ${request.internalClient}`
    )
  }
})
