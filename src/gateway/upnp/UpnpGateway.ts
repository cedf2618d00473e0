/**
 * The `PortMapper` for UPnP IGD. It finds the gateway (a configured root description URL, or
 * SSDP discovery of the trusted router: the node's default gateway or `--gateway-address`),
 * chooses the WAN service by miniupnpc's ranking, and keeps that choice until the gateway
 * stops answering. Descriptions are fetched and probed outside the selection lock: only the
 * final choice is taken under it, so a stalled description never holds up `selected`. Mappings are checked before they are made: miniupnpd silently
 * overwrites a mapping held by the same internal client, so one under another description is
 * a conflict unless forced, and one of another host is never touched.
 */
import { NodeHttpClient } from "@effect/platform-node"
import { Config, Context, Duration, Effect, Layer, Option, Ref, Result, Semaphore, Stream } from "effect"
import { NetAddress } from "effect/net"
import { BoundedMap } from "../BoundedMap.ts"
import type { HttpClient } from "effect/http"
import { externalAddressOf } from "../classifyExternalIp.ts"
import {
  type GatewayError,
  GatewayNotFound,
  GatewayProtocolError,
  PortConflict
} from "../GatewayError.ts"
import { localAddressToward } from "../localAddress.ts"
import type { ExternalIpClass, GatewayStatus, GrantedMapping, MappingEntry, MappingRequest } from "../Mapping.ts"
import { PortMapper } from "../PortMapper.ts"
import { describeTrustedRouter, noTrustedRouter, notTrustedReason, type TrustedRouter } from "../TrustedRouter.ts"
import { Description, type RootDescription, type WanService } from "./Description.ts"
import { Discovery, type DiscoveryOptions, type IgnoredResponder, type SsdpResponse } from "./Discovery.ts"
import * as IgdClient from "./IgdClient.ts"
import { isOnDirectlyConnectedLan } from "./LanGuard.ts"
import { makePortReads } from "./PortReads.ts"
import { type RetryOptions, SoapTransport } from "./SoapTransport.ts"

export interface UpnpGatewayOptions {
  /** The root description URL: skips discovery. */
  readonly gatewayUrl: string | undefined
  /**
   * The IPv4 address of the only router whose IGD is used (`--gateway-address`). Default: the
   * node's default gateway. Sets `discovery.gatewayAddress`.
   */
  readonly gatewayAddress: string | undefined
  /** Per SOAP call (each attempt) and per description fetch. */
  readonly soapTimeout: Duration.Input
  /** How long SSDP replies are collected. */
  readonly discoveryTimeout: Duration.Input
  /** Cap on description and SOAP response bodies. */
  readonly maxResponseBytes: number
  /** SOAP calls in flight per router. */
  readonly concurrency: number
  /** Backoff for transient failures (connection refused/reset, timeout, bare 5xx). */
  readonly retry: RetryOptions
  /** Where SSDP searches go (used only without `gatewayUrl`). */
  readonly discovery: Partial<DiscoveryOptions> | undefined
  /**
   * Whether a control URL host other than the description's own may be called. Default:
   * on a directly connected LAN subnet.
   */
  readonly isAllowedHost: ((ip: string) => boolean) | undefined
}

export const defaultUpnpGatewayOptions: UpnpGatewayOptions = {
  gatewayUrl: undefined,
  gatewayAddress: undefined,
  soapTimeout: "5 seconds",
  discoveryTimeout: "2 seconds",
  maxResponseBytes: 64 * 1024,
  concurrency: 4,
  retry: { times: 2, base: "250 millis", cap: "2 seconds" },
  discovery: undefined,
  isAllowedHost: undefined
}

/** One WAN service found, probed and ranked: a row of `edge-ccm gateway discover`. */
export interface GatewayCandidate {
  readonly location: string
  readonly deviceType: string | undefined
  readonly serviceType: string | undefined
  readonly controlUrl: string | undefined
  /** GetStatusInfo's ConnectionStatus, or why there is none (unreachable, refused, …). */
  readonly status: string
  readonly connected: boolean
  readonly externalIp: string | undefined
  readonly externalIpClass: ExternalIpClass | undefined
  readonly uptimeSeconds: number | undefined
  readonly selected: boolean
  /** Why it was chosen, or why not. */
  readonly reason: string
}

/** The gateway in use: its description, the chosen WAN service, and a client for it. */
export interface SelectedGateway {
  readonly description: RootDescription
  readonly service: WanService
  readonly client: IgdClient.IgdClient
  /** Our address toward the router: the default internal client. */
  readonly localAddress: string
  /** Which router this is and why it is used, e.g. "192.168.77.1, the node's default gateway". */
  readonly selection: string
}

/** Root devices whose BOOTID is remembered (by LOCATION), least recently heard forgotten first. */
export const MAX_BOOT_IDS = 64

/** The last BOOTID.UPNP.ORG heard from each root device, by LOCATION (at most MAX_BOOT_IDS). */
export interface BootIdMemory {
  /** Records a root device's BOOTID; true when it differs from the one heard before (it rebooted). */
  readonly observe: (response: SsdpResponse) => boolean
  /** Root devices remembered now. */
  readonly size: () => number
}

/**
 * By LOCATION, not USN: a root device's embedded devices announce the same boot under UUIDs
 * of their own, and one boot must count once.
 */
export const makeBootIdMemory = (): BootIdMemory => {
  const bootIds = new BoundedMap<string, number>(MAX_BOOT_IDS)
  return {
    observe: (response) => {
      if (response.bootId === undefined) return false
      const previous = bootIds.get(response.location)
      bootIds.set(response.location, response.bootId)
      return previous !== undefined && previous !== response.bootId
    },
    size: () => bootIds.size
  }
}

/** Control URLs whose lease habit (permanent leases only) is remembered. */
export const MAX_LEASE_MEMORY = 64

export class UpnpGateway extends Context.Service<UpnpGateway, {
  /** Finds and probes every gateway, ranks them, and selects the best for later calls. */
  readonly discover: Effect.Effect<ReadonlyArray<GatewayCandidate>, GatewayError>
  /** The gateway in use, discovering it when there is none yet. */
  readonly selected: Effect.Effect<SelectedGateway, GatewayError>
  /** The whole table with the count of entries that could not be read. */
  readonly listing: Effect.Effect<IgdClient.Listing, GatewayError>
  /** Drops the cached choice: the next call discovers again. */
  readonly invalidate: Effect.Effect<void>
}>()("edge-ccm/gateway/upnp/UpnpGateway") {
  /**
   * Builds both services. Needs `Description` and `SoapTransport`; uses `Discovery` when it is
   * in the context (it must be, unless `gatewayUrl` is set).
   */
  static make = Effect.fnUntraced(function*(options?: Partial<UpnpGatewayOptions>) {
    const settings = { ...defaultUpnpGatewayOptions, ...options }
    const description = yield* Description
    const soap = yield* SoapTransport
    const discovery = yield* Effect.serviceOption(Discovery)
    const cache = yield* Ref.make(Option.none<SelectedGateway>())
    // Taken only to adopt a final choice: never while descriptions are fetched or probed.
    const selecting = yield* Semaphore.make(1)
    // The router last announced, kept when the cache is dropped: a rediscovery of the same
    // router is not a new choice.
    let announced: SelectedGateway | undefined
    // What a router taught us about its leases outlives a rediscovery of the same router.
    const leaseMemory = new BoundedMap<string, Ref.Ref<boolean>>(MAX_LEASE_MEMORY)
    const { observe: rememberBootId } = makeBootIdMemory()

    const makeClient = Effect.fnUntraced(function*(service: WanService) {
      let permanentOnly = leaseMemory.get(service.controlUrl)
      if (permanentOnly === undefined) {
        permanentOnly = yield* Ref.make(false)
        leaseMemory.set(service.controlUrl, permanentOnly)
      }
      return yield* IgdClient.make(service, { permanentOnly }).pipe(Effect.provideService(SoapTransport, soap))
    })

    interface Located {
      readonly found: ReadonlyArray<string>
      /** Why these locations: the URL given, or the trusted router. */
      readonly selection: string
      readonly router: TrustedRouter | undefined
      readonly ignored: ReadonlyArray<IgnoredResponder>
    }

    const locations: Effect.Effect<Located, GatewayError> = Effect.gen(function*() {
      if (settings.gatewayUrl !== undefined) {
        const url = settings.gatewayUrl
        const refusal = refuseGatewayUrl(url, settings.isAllowedHost ?? isOnDirectlyConnectedLan)
        if (refusal !== undefined) {
          return yield* new GatewayNotFound({ reason: `--gateway-url ${url} is refused: ${refusal}`, candidates: [url] })
        }
        return { found: [url], selection: `${url}, the URL given by --gateway-url`, router: undefined, ignored: [] }
      }
      if (Option.isNone(discovery)) {
        return yield* new GatewayNotFound({ reason: "no gateway URL configured and SSDP discovery unavailable", candidates: [] })
      }
      const searched = yield* discovery.value.search({ timeout: settings.discoveryTimeout })
      if (searched.router === undefined) return yield* noTrustedRouter()
      for (const reply of searched.responses) rememberBootId(reply)
      return {
        found: Array.from(new Set(searched.responses.map((reply) => reply.location))),
        selection: describeTrustedRouter(searched.router),
        router: searched.router,
        ignored: searched.ignored
      }
    })

    interface Probed {
      readonly service: WanService
      readonly description: RootDescription
      readonly client: IgdClient.IgdClient
      readonly status: Result.Result<IgdClient.StatusInfo, GatewayError>
      readonly externalIp: Result.Result<string, GatewayError>
    }

    const probe = (root: RootDescription, service: WanService) =>
      Effect.gen(function*() {
        const client = yield* makeClient(service)
        const [status, externalIp] = yield* Effect.all(
          [Effect.result(client.getStatusInfo), Effect.result(client.getExternalIPAddress)],
          { concurrency: 2 }
        )
        return { service, description: root, client, status, externalIp } satisfies Probed
      })

    const reachable = (probed: Probed) =>
      !(Result.isFailure(probed.status) && probed.status.failure._tag === "GatewayUnreachable" &&
        Result.isFailure(probed.externalIp) && probed.externalIp.failure._tag === "GatewayUnreachable")

    const ipClassOf = (probed: Probed): ExternalIpClass =>
      Result.isSuccess(probed.externalIp) ? externalAddressOf(probed.externalIp.success).class : "missing"

    const isConnected = (probed: Probed) => Result.isSuccess(probed.status) && probed.status.success.connected

    /**
     * miniupnpc: connected with a public address, then connected with a private (or no)
     * address, then any; unreachable ones are never chosen.
     */
    const tier = (probed: Probed): number => {
      if (!reachable(probed)) return 3
      if (!isConnected(probed)) return 2
      return ipClassOf(probed) === "public" ? 0 : 1
    }

    const tierReason = (probed: Probed): string => {
      switch (tier(probed)) {
        case 0:
          return "connected with a public external address"
        case 1:
          return ipClassOf(probed) === "private"
            ? "connected, but the external address is private (double NAT)"
            : "connected, but no external address reported (a private WAN address hidden by the router: double NAT)"
        case 2:
          return Result.isSuccess(probed.status)
            ? `not connected (${probed.status.success.connectionStatus})`
            : `connection status unknown (${probed.status.failure.message})`
        default:
          return "unreachable"
      }
    }

    const discoverAll = Effect.gen(function*() {
      const { found, selection, router, ignored } = yield* locations
      if (found.length === 0 && ignored.length === 0) {
        return yield* new GatewayNotFound({
          reason: router === undefined
            ? "no Internet gateway answered the SSDP search"
            : `the router (${selection}) did not answer the SSDP search`,
          candidates: []
        })
      }
      const fetched = yield* Effect.forEach(found, (location) => Effect.result(description.fetch(location)), {
        concurrency: 4
      })
      const probed = yield* Effect.forEach(
        fetched.flatMap((result) => Result.isSuccess(result) ? result.success.wanServices.map((service) => [result.success, service] as const) : []),
        ([root, service]) => probe(root, service),
        { concurrency: 4 }
      )
      const ranked = probed
        .map((entry, order) => ({ entry, order, tier: tier(entry) }))
        .sort((a, b) => a.tier - b.tier || a.entry.service.preference - b.entry.service.preference || a.order - b.order)
      const best = ranked.find((candidate) => candidate.tier < 3)
      const rows: Array<GatewayCandidate> = ranked.map(({ entry, tier }) => {
        const status = Result.isSuccess(entry.status)
          ? entry.status.success.connectionStatus
          : entry.status.failure._tag === "GatewayUnreachable" ? "unreachable" : "unknown"
        const address = Result.isSuccess(entry.externalIp) ? externalAddressOf(entry.externalIp.success) : undefined
        const selected = best !== undefined && best.entry === entry
        return {
          location: entry.description.location,
          deviceType: entry.description.deviceType,
          serviceType: entry.service.serviceType,
          controlUrl: entry.service.controlUrl,
          status,
          connected: Result.isSuccess(entry.status) && entry.status.success.connected,
          externalIp: address?.ip,
          externalIpClass: address?.class,
          uptimeSeconds: Result.isSuccess(entry.status) ? entry.status.success.uptimeSeconds : undefined,
          selected,
          reason: selected
            ? `selected: ${tierReason(entry)}, ${entry.service.kind}`
            : best === undefined
            ? tierReason(entry)
            : tier > best.tier
            ? `not selected: ${tierReason(entry)}`
            : `not selected: ${best.entry.service.kind} at ${best.entry.service.controlUrl} ranks first`
        }
      })
      fetched.forEach((result, index) => {
        const location = found[index]!
        if (Result.isFailure(result)) {
          rows.push(unusableRow(location, "unreachable", `description unusable: ${result.failure.message}`))
          return
        }
        for (const refused of result.success.refused) {
          rows.push({
            ...unusableRow(location, "refused", `control URL refused: ${refused.reason}`),
            deviceType: result.success.deviceType,
            serviceType: refused.serviceType,
            controlUrl: refused.controlUrl
          })
        }
        if (result.success.wanServices.length === 0 && result.success.refused.length === 0) {
          rows.push({
            ...unusableRow(location, "not a gateway", "no WANIPConnection or WANPPPConnection service"),
            deviceType: result.success.deviceType
          })
        }
      })
      // Gateways of other hosts: shown, never fetched or used.
      for (const other of ignored) {
        // What it answered as: a device type (IGD) or a service type (WANIPConnection).
        const isDevice = other.searchTarget.includes(":device:")
        rows.push({
          ...unusableRow(other.location, "ignored", notTrustedReason(router)),
          ...(isDevice ? { deviceType: other.searchTarget } : { serviceType: other.searchTarget })
        })
      }
      const chosen: SelectedGateway | undefined = best === undefined ? undefined : {
        description: best.entry.description,
        service: best.entry.service,
        client: best.entry.client,
        localAddress: yield* localAddressOf(best.entry.service),
        selection
      }
      const failures = fetched.flatMap((result) => Result.isFailure(result) ? [result.failure] : [])
      return { rows, chosen, found, failures, selection, ignored }
    })

    /**
     * Keeps a final choice for the calls that follow, under the selection lock (held only for
     * this), and says which router it is and why when it is a new one.
     */
    const adopt = (chosen: SelectedGateway) =>
      Semaphore.withPermit(
        selecting,
        Effect.gen(function*() {
          yield* Ref.set(cache, Option.some(chosen))
          const previous = announced
          if (
            previous !== undefined && previous.service.controlUrl === chosen.service.controlUrl &&
            previous.selection === chosen.selection
          ) return
          announced = chosen
          yield* Effect.logInfo(`UPnP gateway: ${chosen.selection}`, {
            location: chosen.description.location,
            controlUrl: chosen.service.controlUrl,
            serviceType: chosen.service.serviceType,
            ...(previous === undefined ? {} : { previous: previous.selection, previousControlUrl: previous.service.controlUrl })
          })
        })
      )

    const localAddressOf = (service: WanService) => {
      const url = new URL(service.controlUrl)
      return localAddressToward(url.hostname, url.port === "" ? 80 : Number(url.port))
    }

    const noGateway = (
      rows: ReadonlyArray<GatewayCandidate>,
      found: ReadonlyArray<string>,
      failures: ReadonlyArray<GatewayError>,
      selection: string,
      ignored: ReadonlyArray<IgnoredResponder>
    ): GatewayError => {
      // One gateway, and its description could not be read: that error says it best.
      if (found.length === 1 && failures.length === 1) return failures[0]!
      if (found.length === 0) {
        return new GatewayNotFound({
          reason: `the router (${selection}) did not answer the SSDP search; other hosts did (${
            ignored.map((other) => other.responder).join(", ")
          }) and are not used: name one with --gateway-address to use it`,
          candidates: ignored.map((other) => other.location)
        })
      }
      const refused = rows.find((row) => row.status === "refused")
      if (refused !== undefined && rows.every((row) => row.status === "refused" || row.status === "not a gateway")) {
        return new GatewayProtocolError({
          router: refused.location,
          action: "root description",
          field: "controlURL",
          reason: refused.reason
        })
      }
      return new GatewayNotFound({
        reason: rows.length === 0
          ? "no WAN connection service found"
          : `no usable WAN connection service (${rows.map((row) => row.reason).join("; ")})`,
        candidates: [...found]
      })
    }

    const discover = discoverAll.pipe(
      Effect.tap(({ chosen }) => chosen === undefined ? Effect.void : adopt(chosen)),
      Effect.map(({ rows }): ReadonlyArray<GatewayCandidate> => rows)
    )

    // Concurrent callers share one discovery in flight (a zero TTL caches nothing after it).
    const discoverOnce: Effect.Effect<SelectedGateway, GatewayError> = yield* Effect.cachedWithTTL(
      Effect.gen(function*() {
        const { rows, chosen, found, failures, selection, ignored } = yield* discoverAll
        if (chosen === undefined) return yield* noGateway(rows, found, failures, selection, ignored)
        yield* adopt(chosen)
        return chosen
      }),
      Duration.zero
    )

    // The gateway in use: a cached choice is returned at once, whatever discovery is under way.
    const selected = Effect.flatMap(
      Ref.get(cache),
      (cached) => Option.isSome(cached) ? Effect.succeed(cached.value) : discoverOnce
    )

    const invalidate = Ref.set(cache, Option.none<SelectedGateway>())

    /** Runs against the gateway in use; one that stops answering is forgotten, to be found again. */
    const withGateway = <A, E extends GatewayError>(f: (gateway: SelectedGateway) => Effect.Effect<A, E>) =>
      Effect.flatMap(selected, f).pipe(
        Effect.tapError((error) => error._tag === "GatewayUnreachable" ? invalidate : Effect.void)
      )

    const readPort = makePortReads()

    const listing = withGateway((gateway) =>
      gateway.client.listPortMappings.pipe(
        Effect.tap((listed) =>
          listed.unreadable > 0
            ? Effect.logWarning(`${listed.unreadable} mapping entries could not be read; treating them as foreign`, {
              router: gateway.service.controlUrl
            })
            : Effect.void
        )
      )
    )

    const describe = (entry: MappingEntry) =>
      `${entry.internalClient}:${entry.internalPort} ${JSON.stringify(entry.description)}`

    const map = Effect.fn("UpnpGateway.map")(function*(request: MappingRequest) {
      return yield* withGateway((gateway) =>
        Effect.gen(function*() {
          const router = gateway.service.controlUrl
          const args: IgdClient.PortMappingArgs = {
            externalPort: request.externalPort,
            protocol: request.protocol,
            internalPort: request.internalPort,
            internalClient: request.internalClient ?? gateway.localAddress,
            description: request.description,
            leaseSeconds: request.leaseSeconds
          }
          yield* IgdClient.validatePortMappingArgs(router, "AddPortMapping", args)
          if (request.ownershipVerified !== true) {
            const existing = yield* gateway.client.getSpecificPortMappingEntry(args.externalPort, args.protocol)
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
          const granted = yield* gateway.client.addPortMapping(args)
          const mapped = {
            externalPort: args.externalPort,
            protocol: args.protocol,
            internalClient: args.internalClient,
            internalPort: args.internalPort,
            description: args.description
          }
          if (request.readBack === false) return { ...mapped, leaseSeconds: granted.leaseSeconds } satisfies GrantedMapping
          // Some routers report success and create nothing.
          const created = yield* gateway.client.getSpecificPortMappingEntry(args.externalPort, args.protocol)
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
      )
    })

    const unmap = Effect.fn("UpnpGateway.unmap")(function*(mapping: Parameters<PortMapper["Service"]["unmap"]>[0]) {
      return yield* withGateway((gateway) => gateway.client.deletePortMapping(mapping.externalPort, mapping.protocol))
    })

    const get = Effect.fn("UpnpGateway.get")(function*(externalPort: number, protocol: MappingEntry["protocol"]) {
      return yield* withGateway((gateway) => readPort(gateway.client, externalPort, protocol))
    })

    const externalAddress = withGateway((gateway) =>
      Effect.map(gateway.client.getExternalIPAddress, externalAddressOf)
    ).pipe(Effect.withSpan("UpnpGateway.externalAddress"))

    const status = withGateway((gateway) =>
      Effect.gen(function*() {
        const [info, ip] = yield* Effect.all([gateway.client.getStatusInfo, gateway.client.getExternalIPAddress], {
          concurrency: 2
        })
        return {
          router: gateway.service.controlUrl,
          protocol: "upnp-igd",
          connected: info.connected,
          uptimeSeconds: info.uptimeSeconds,
          externalAddress: externalAddressOf(ip),
          localAddress: gateway.localAddress,
          selection: gateway.selection
        } satisfies GatewayStatus
      })
    ).pipe(Effect.withSpan("UpnpGateway.status"))

    /**
     * A router announces each boot with a new BOOTID.UPNP.ORG (UPnP Device Architecture 1.1):
     * a change on the router in use means its table is gone, however recently it was probed.
     */
    const restarts = Option.isNone(discovery) ? undefined : discovery.value.advertisements.pipe(
      Stream.filter((advertisement) => advertisement.kind === "alive" && rememberBootId(advertisement)),
      Stream.filterEffect((advertisement) =>
        Effect.map(Ref.get(cache), (selected) =>
          Option.isSome(selected) && hostOf(selected.value.service.controlUrl) === hostOf(advertisement.location))
      ),
      Stream.map((advertisement) => `${advertisement.location} announced BOOTID.UPNP.ORG ${advertisement.bootId}`),
      Stream.catchCause((cause) =>
        Stream.fromEffect(Effect.logWarning("not listening for SSDP announcements", cause)).pipe(Stream.drain)
      )
    )

    const portMapper = PortMapper.of({
      capabilities: { readsTable: true, deletesByInternalPort: false, drawNonce: undefined },
      externalAddress,
      status,
      map,
      unmap,
      get,
      list: Effect.map(listing, (listed) => listed.entries),
      restarts,
      selection: Effect.sync(() => announced?.selection)
    })
    const upnp = UpnpGateway.of({ discover, selected, listing, invalidate })
    return { portMapper, upnp }
  })

  /**
   * `PortMapper` and `UpnpGateway` over an `HttpClient` you provide; `Discovery` is used when
   * present in the context.
   */
  static layerWithoutHttp(
    options?: Partial<UpnpGatewayOptions>
  ): Layer.Layer<PortMapper | UpnpGateway, never, HttpClient.HttpClient> {
    const settings = { ...defaultUpnpGatewayOptions, ...options }
    const built = Layer.effectContext(
      Effect.map(UpnpGateway.make(settings), ({ portMapper, upnp }) =>
        Context.make(PortMapper, portMapper).pipe(Context.add(UpnpGateway, upnp)))
    )
    return built.pipe(
      Layer.provide(Layer.mergeAll(
        Description.layer({
          timeout: settings.soapTimeout,
          maxResponseBytes: settings.maxResponseBytes,
          ...(settings.isAllowedHost !== undefined ? { isAllowedHost: settings.isAllowedHost } : {})
        }),
        SoapTransport.layer({
          timeout: settings.soapTimeout,
          maxResponseBytes: settings.maxResponseBytes,
          concurrency: settings.concurrency,
          retry: settings.retry
        })
      ))
    )
  }

  /** The UPnP gateway over Node's HTTP client, with SSDP discovery unless `gatewayUrl` is set. */
  static layer(options?: Partial<UpnpGatewayOptions>): Layer.Layer<PortMapper | UpnpGateway> {
    const base = UpnpGateway.layerWithoutHttp(options)
    const discovering = options?.gatewayUrl === undefined
      ? base.pipe(Layer.provide(Discovery.layer({
        ...options?.discovery,
        ...(options?.gatewayAddress === undefined ? {} : { gatewayAddress: options.gatewayAddress })
      })))
      : base
    return discovering.pipe(Layer.provide(NodeHttpClient.layerNodeHttp))
  }

  /** `layer` with its options read from `Config` (environment variables by default). */
  static layerConfig(
    options: Config.Wrap<Partial<UpnpGatewayOptions>>
  ): Layer.Layer<PortMapper | UpnpGateway, Config.ConfigError> {
    return Layer.unwrap(Effect.map(Config.unwrap(options), (resolved) => UpnpGateway.layer(resolved)))
  }
}

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

const unusableRow = (location: string, status: string, reason: string): GatewayCandidate => ({
  location,
  deviceType: undefined,
  serviceType: undefined,
  controlUrl: undefined,
  status,
  connected: false,
  externalIp: undefined,
  externalIpClass: undefined,
  uptimeSeconds: undefined,
  selected: false,
  reason
})

const hostOf = (url: string): string | undefined => URL.parse(url)?.host

/**
 * Why a `--gateway-url` is not followed, or undefined: it must be http on a numeric IPv4
 * host that is on a directly connected LAN (or loopback, where an operator's own proxy runs).
 */
const refuseGatewayUrl = (location: string, isAllowedHost: (ip: string) => boolean): string | undefined => {
  const url = URL.parse(location)
  if (url === null || url.protocol !== "http:") return "not an absolute http URL"
  const host = NetAddress.ipv4FromString(url.hostname)
  if (Result.isFailure(host)) return `host ${url.hostname} is not a numeric IPv4 address`
  if (NetAddress.isLoopback(host.success) || isAllowedHost(url.hostname)) return undefined
  return `host ${url.hostname} is not on a directly connected LAN subnet`
}
