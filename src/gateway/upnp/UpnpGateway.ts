/**
 * The `PortMapper` for UPnP IGD. It finds the gateway (a configured root description URL, or
 * SSDP discovery of the trusted router: the node's default gateway or `--gateway-address`),
 * chooses the WAN service by miniupnpc's ranking, and keeps that choice until the gateway
 * stops answering. Descriptions are fetched and probed outside the selection lock: only the
 * final choice is taken under it, so a stalled description never holds up `selected`. The
 * ranking and the rows it prints are WanRanking's; a mapping is added by CheckedMapping.
 */
import { NodeHttpClient } from "@effect/platform-node"
import { Config, Context, Duration, Effect, Layer, Option, Ref, Result, Semaphore, Stream } from "effect"
import { NetAddress } from "effect/net"
import type { HttpClient } from "effect/http"
import { BoundedMap } from "../BoundedMap.ts"
import { externalAddressOf } from "../classifyExternalIp.ts"
import { type GatewayError, GatewayNotFound } from "../GatewayError.ts"
import { localAddressToward } from "../localAddress.ts"
import type { GatewayStatus, MappingEntry, MappingRequest } from "../Mapping.ts"
import { PortMapper } from "../PortMapper.ts"
import { describeTrustedRouter, noTrustedRouter, type TrustedRouter } from "../TrustedRouter.ts"
import { makeBootIdMemory } from "./BootIdMemory.ts"
import { addChecked } from "./CheckedMapping.ts"
import { Description, type RootDescription, type WanService } from "./Description.ts"
import { Discovery, type DiscoveryOptions, type IgnoredResponder } from "./Discovery.ts"
import { EventSubscriptionFailed, watchWanEvents } from "./Eventing.ts"
import * as IgdClient from "./IgdClient.ts"
import { isOnDirectlyConnectedLan } from "./LanGuard.ts"
import { makePortReads } from "./PortReads.ts"
import { type RetryOptions, SoapTransport } from "./SoapTransport.ts"
import { candidateRows, type GatewayCandidate, noGateway, type Probed, rank } from "./WanRanking.ts"

/** How the UPnP gateway is found and called. */
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

/** The defaults of `edge-ccm run`. */
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

/** Control URLs whose lease habit (permanent leases only) is remembered. */
export const MAX_LEASE_MEMORY = 64

/** UPnP IGD discovery, selection and table listing, beside its `PortMapper`. */
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

    const probe = (root: RootDescription, service: WanService) =>
      Effect.gen(function*() {
        const client = yield* makeClient(service)
        const [status, externalIp] = yield* Effect.all(
          [Effect.result(client.getStatusInfo), Effect.result(client.getExternalIPAddress)],
          { concurrency: 2 }
        )
        return { service, description: root, client, status, externalIp } satisfies Probed
      })

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
      const { best, ranked } = rank(probed)
      const rows = candidateRows({ ranked, best, fetched, found, ignored, router })
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

    const map = Effect.fn("UpnpGateway.map")(function*(request: MappingRequest) {
      return yield* withGateway((gateway) =>
        addChecked({ client: gateway.client, router: gateway.service.controlUrl, localAddress: gateway.localAddress }, request)
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

    /** The selected WAN service's events, with the callback server on our address toward it. */
    const events = Stream.unwrap(Effect.map(selected, (gateway) => {
      const eventUrl = gateway.service.eventSubUrl
      return eventUrl === undefined
        ? Stream.fail(
          new EventSubscriptionFailed({
            router: gateway.service.controlUrl,
            eventUrl: "",
            reason: "the WAN service's description has no usable eventSubURL"
          })
        )
        : watchWanEvents({ eventUrl, localAddress: gateway.localAddress })
    }))

    const portMapper = PortMapper.of({
      capabilities: { readsTable: true, deletesByInternalPort: false, drawNonce: undefined },
      externalAddress,
      status,
      map,
      unmap,
      get,
      list: Effect.map(listing, (listed) => listed.entries),
      restarts,
      events,
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
