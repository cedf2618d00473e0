/**
 * The IGD client of one router, with the reactions real routers need (field guide, "Error codes
 * and the reaction each needs"): 725 and 402-on-lease fall back to a permanent lease and
 * remember it; 714 on delete is success; 718/606 are conflicts; 501 is checked against the
 * external address so a double NAT is never reported as success. The actions themselves are in
 * IgdActions.ts, the safe listing of a large table in TableListing.ts.
 */
import { Effect, Ref, Result } from "effect"
import { classifyExternalIp } from "../classifyExternalIp.ts"
import { DoubleNat, type InvalidMapping, PortConflict, UpnpError } from "../GatewayError.ts"
import type { MappingEntry, Protocol } from "../Mapping.ts"
import {
  addAnyPortMapping,
  addPortMapping,
  deletePortMapping,
  getExternalIPAddress,
  getSpecificPortMappingEntry,
  getStatusInfo,
  type IgdEndpoint,
  isUpnp,
  type Listing,
  type PortMappingArgs,
  type StatusInfo
} from "./IgdActions.ts"
import { type SoapError, SoapTransport } from "./SoapTransport.ts"
import { type ListingOptions, makeTableListing } from "./TableListing.ts"

export * from "./IgdActions.ts"
export { defaultListingOptions, type ListingOptions } from "./TableListing.ts"

/** One router's WAN service, with the reactions. */
export interface IgdClient {
  readonly endpoint: IgdEndpoint
  readonly getExternalIPAddress: Effect.Effect<string, SoapError>
  readonly getStatusInfo: Effect.Effect<StatusInfo, SoapError>
  /**
   * AddPortMapping with the reactions: 725 (only permanent leases) and 402 on a non-zero
   * lease retry once with lease 0 and remember it for this router; 718/606 are a
   * `PortConflict`; 501 with a private or missing external address is `DoubleNat`; 724 says
   * the router wants equal ports. Returns the lease actually granted.
   */
  readonly addPortMapping: (
    args: PortMappingArgs
  ) => Effect.Effect<{ readonly leaseSeconds: number }, SoapError | InvalidMapping | PortConflict | DoubleNat>
  /**
   * AddAnyPortMapping where the router has IGDv2, falling back to AddPortMapping on 401 (or
   * without IGDv2). Returns the port the router reserved: renew and delete that one.
   */
  readonly addAnyPortMapping: (
    args: PortMappingArgs
  ) => Effect.Effect<
    { readonly externalPort: number; readonly leaseSeconds: number },
    SoapError | InvalidMapping | PortConflict | DoubleNat
  >
  /** DeletePortMapping; 714 (already gone) is success, 606 (another host's, secure mode) a conflict. */
  readonly deletePortMapping: (
    externalPort: number,
    protocol: Protocol
  ) => Effect.Effect<void, SoapError | InvalidMapping | PortConflict>
  /** The mapping on one port, or undefined (714). */
  readonly getSpecificPortMappingEntry: (
    externalPort: number,
    protocol: Protocol
  ) => Effect.Effect<MappingEntry | undefined, SoapError>
  /** The whole table, the safe way (TableListing.ts). */
  readonly listPortMappings: Effect.Effect<Listing, SoapError>
  /** The first port of the `rangeCapacity`-port range that holds this port. */
  readonly rangeOf: (port: number) => number
  /**
   * One protocol's mappings on the ports from `first` to `last` (within one
   * `rangeCapacity`-port range), by GetListOfPortMappings (IGDv2): a span miniupnpd can always answer.
   */
  readonly listSpan: (protocol: Protocol, first: number, last: number) => Effect.Effect<Listing, SoapError>
  /** Whether this router has been found to accept only permanent leases. */
  readonly permanentLeasesOnly: Effect.Effect<boolean>
}

/**
 * A client for one router's WAN service. `permanentOnly` carries what was learnt about its
 * leases across clients made for the same router (after a rediscovery, for instance).
 */
export const make = Effect.fnUntraced(function*(
  endpoint: IgdEndpoint,
  options?: {
    readonly permanentOnly?: Ref.Ref<boolean> | undefined
    readonly listing?: Partial<ListingOptions> | undefined
  }
) {
  const soap = yield* SoapTransport
  const provide = <A, E>(effect: Effect.Effect<A, E, SoapTransport>) => Effect.provideService(effect, SoapTransport, soap)
  const permanentOnly = options?.permanentOnly ?? (yield* Ref.make(false))
  const table = yield* makeTableListing(endpoint, provide, options?.listing)
  const router = endpoint.controlUrl

  const conflict = (args: PortMappingArgs, error: UpnpError) =>
    new PortConflict({
      router,
      externalPort: args.externalPort,
      protocol: args.protocol,
      holder: "another host",
      reason: error.code === 606
        ? "the router refused: not authorized (606), it maps ports only for the host asking"
        : `ConflictInMappingEntry (718): the port is mapped to another host, or the router maps ports only for the host asking`
    })

  /**
   * 501: forwarding disabled. Only a public external address leaves it a plain failure.
   * miniupnpd hides a private or reserved WAN address (it reports an empty one while
   * "Connected"), so connected-without-address is a double NAT too.
   */
  const explainActionFailed = (error: UpnpError): Effect.Effect<never, UpnpError | DoubleNat> =>
    Effect.gen(function*() {
      const ip = yield* provide(getExternalIPAddress(endpoint)).pipe(Effect.orElseSucceed(() => undefined))
      if (ip === undefined) return yield* error
      const ipClass = classifyExternalIp(ip)
      if (ipClass === "public") return yield* error
      const status = yield* provide(getStatusInfo(endpoint)).pipe(Effect.orElseSucceed(() => undefined))
      const refused = `so it refuses to forward (${error.action}: UPnP ${error.code} ${error.description || "Action Failed"})`
      return yield* new DoubleNat({
        router,
        ...(ip !== "" ? { externalIp: ip } : {}),
        reason: ipClass === "private"
          ? `double NAT: the router's external address ${ip} is private or reserved, ${refused}`
          : status?.connected === false
          ? `the router's WAN link is ${status.connectionStatus} and has no external address, ${refused}`
          : `double NAT: the router is connected but reports no public external address (a private or reserved WAN address is hidden), ${refused}`
      })
    })

  const withReactions = <A>(
    args: PortMappingArgs,
    send: (args: PortMappingArgs) => Effect.Effect<A, SoapError | InvalidMapping>
  ): Effect.Effect<{ readonly result: A; readonly leaseSeconds: number }, SoapError | InvalidMapping | PortConflict | DoubleNat> =>
    Effect.gen(function*() {
      const lease = (yield* Ref.get(permanentOnly)) ? 0 : args.leaseSeconds
      const first = yield* Effect.result(send({ ...args, leaseSeconds: lease }))
      if (Result.isSuccess(first)) return { result: first.success, leaseSeconds: lease }
      const error = first.failure
      if (lease !== 0 && isUpnp(error, 725, 402)) {
        // 725: only permanent leases; 402: some routers say "invalid args" to a finite lease.
        const retried = yield* Effect.result(send({ ...args, leaseSeconds: 0 }))
        if (Result.isSuccess(retried)) {
          yield* Ref.set(permanentOnly, true)
          yield* Effect.logWarning(`${router} accepts only permanent leases (${error.message}); using lease 0`)
          return { result: retried.success, leaseSeconds: 0 }
        }
        return yield* react(args, retried.failure)
      }
      return yield* react(args, error)
    })

  const react = (
    args: PortMappingArgs,
    error: SoapError | InvalidMapping
  ): Effect.Effect<never, SoapError | InvalidMapping | PortConflict | DoubleNat> => {
    if (!(error instanceof UpnpError)) return Effect.fail(error)
    if (isUpnp(error, 718, 606)) return Effect.fail(conflict(args, error))
    if (isUpnp(error, 501)) return explainActionFailed(error)
    if (isUpnp(error, 724)) {
      return Effect.fail(
        new UpnpError({
          router,
          action: error.action,
          code: 724,
          description: `SamePortValuesRequired: this router maps only to the same internal port (asked ${args.externalPort} -> ${args.internalPort})`
        })
      )
    }
    return Effect.fail(error)
  }

  const add = Effect.fn("IgdClient.add")(function*(args: PortMappingArgs) {
    const { leaseSeconds } = yield* withReactions(args, (sent) => provide(addPortMapping(endpoint, sent)))
    yield* table.noteMapped(args.protocol, args.externalPort)
    return { leaseSeconds }
  })

  const addAny = Effect.fn("IgdClient.addAny")(function*(args: PortMappingArgs) {
    const viaAdd = Effect.map(add(args), ({ leaseSeconds }) => ({ externalPort: args.externalPort, leaseSeconds }))
    if (!endpoint.igdV2) return yield* viaAdd
    return yield* withReactions(args, (sent) => provide(addAnyPortMapping(endpoint, sent))).pipe(
      Effect.map(({ result, leaseSeconds }) => ({ externalPort: result, leaseSeconds })),
      Effect.tap(({ externalPort }) => table.noteMapped(args.protocol, externalPort)),
      Effect.catchIf((error) => isUpnp(error, 401), () => viaAdd)
    )
  })

  const remove = (externalPort: number, protocol: Protocol) =>
    provide(deletePortMapping(endpoint, externalPort, protocol)).pipe(
      Effect.catchIf((error) => isUpnp(error, 714), () => Effect.void),
      Effect.catchIf(
        (error) => isUpnp(error, 606),
        () =>
          Effect.fail(
            new PortConflict({
              router,
              externalPort,
              protocol,
              holder: "another host",
              reason: "the router refused to delete it: not authorized (606), the mapping belongs to another host"
            })
          )
      )
    )

  const getSpecific = (externalPort: number, protocol: Protocol) =>
    provide(getSpecificPortMappingEntry(endpoint, externalPort, protocol)).pipe(
      Effect.catchIf((error) => isUpnp(error, 714), () => Effect.succeed(undefined))
    )

  return {
    endpoint,
    getExternalIPAddress: provide(getExternalIPAddress(endpoint)),
    getStatusInfo: provide(getStatusInfo(endpoint)),
    addPortMapping: add,
    addAnyPortMapping: addAny,
    deletePortMapping: remove,
    getSpecificPortMappingEntry: getSpecific,
    listPortMappings: table.listAll,
    rangeOf: table.rangeOf,
    listSpan: table.listSpan,
    permanentLeasesOnly: Ref.get(permanentOnly)
  } satisfies IgdClient
})
