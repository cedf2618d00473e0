/**
 * The `PortMapper` for a Service's load-balancer type: `upnp-igd`, `nat-pmp`, `pcp`, or `auto`.
 * Each backend is built on first use and kept. `auto` probes the backends in the configured
 * order (default: UPnP IGD, then PCP, then NAT-PMP) and takes the first whose `status` answers
 * with a connected WAN; when none is connected, the first that answered at all, so that its own
 * error (a double NAT, say) reaches the Service. The choice is logged with its reason, kept, and
 * made again only after the chosen backend fails in a way another one might not (unreachable,
 * not found, protocol not spoken).
 */
import { Context, Duration, Effect, Layer, Option, Ref, Result, Schema, Semaphore } from "effect"
import { type GatewayError, GatewayNotFound } from "./GatewayError.ts"
import { Backend, type GatewayStatus } from "./Mapping.ts"
import { NatPmpGateway, type NatPmpGatewayOptions } from "./natpmp/NatPmpGateway.ts"
import { PcpGateway, type PcpGatewayOptions } from "./pcp/PcpGateway.ts"
import { PortMapper } from "./PortMapper.ts"
import { UpnpGateway, type UpnpGatewayOptions } from "./upnp/UpnpGateway.ts"

export { Backend } from "./Mapping.ts"

/**
 * The values of the `midokura.com/load-balancer-type` annotation: a backend, or `auto` (UPnP
 * when a valid IGD answers, else PCP, else NAT-PMP; the order is `AutoOptions.preference`).
 */
export const LoadBalancerType = Schema.Literals([...Backend.literals, "auto"])
/** A backend or `auto`. */
export type LoadBalancerType = typeof LoadBalancerType.Type

/** The order `auto` tries the backends in by default. */
export const BACKENDS: ReadonlyArray<Backend> = ["upnp-igd", "pcp", "nat-pmp"]

/** The backend a load-balancer type resolves to, and its mapper. */
export interface GatewayChoice {
  readonly backend: Backend
  readonly mapper: PortMapper["Service"]
  /** Why `auto` chose this backend, for a log line and an Event; undefined for a named type. */
  readonly reason?: string | undefined
}

/** How `auto` chooses. */
export interface AutoOptions {
  /**
   * The controller-wide default for `auto`: the backends it may use, in the order it tries
   * them. Default `["upnp-igd", "pcp", "nat-pmp"]`; a single entry pins `auto` to it.
   */
  readonly preference: ReadonlyArray<Backend>
  /** How long each backend's probe (`status`) may take. Default 10 s. */
  readonly probeTimeout: Duration.Input
}

/** `auto`'s defaults: every backend, UPnP first; 10 s per probe. */
export const defaultAutoOptions: AutoOptions = {
  preference: BACKENDS,
  probeTimeout: "10 seconds"
}

/** Each backend's options, and `auto`'s. */
export interface GatewaysOptions {
  readonly upnp: Partial<UpnpGatewayOptions>
  readonly natpmp: Partial<NatPmpGatewayOptions>
  readonly pcp: Partial<PcpGatewayOptions>
  readonly auto: Partial<AutoOptions>
}

/** Errors after which `auto` tries the other backends again. */
const unusable = (error: GatewayError): boolean => {
  switch (error._tag) {
    case "GatewayUnreachable":
    case "GatewayNotFound":
      return true
    case "PortControlError":
      // The protocol itself is not spoken there: unsupported version or opcode.
      return error.code === 1 || (error.protocol === "nat-pmp" ? error.code === 5 : error.code === 4)
    default:
      return false
  }
}

interface Probe {
  readonly backend: Backend
  readonly status: Result.Result<GatewayStatus, GatewayError | { readonly message: string }>
}

const describeStatus = (status: GatewayStatus): string => {
  const address = status.externalAddress.ip === undefined
    ? "no external address"
    : `${status.externalAddress.class} external address ${status.externalAddress.ip}`
  return `${status.connected ? "connected" : "not connected"}, ${address} (${status.router})`
}

const describeProbe = (probe: Probe): string =>
  `${probe.backend}: ${Result.isSuccess(probe.status) ? describeStatus(probe.status.success) : probe.status.failure.message}`

/** The router for each load-balancer type, each backend built on first use. */
export class Gateways extends Context.Service<Gateways, {
  /** The mapper for a load-balancer type; `auto` probes once and keeps its choice. */
  readonly forType: (type: LoadBalancerType) => Effect.Effect<GatewayChoice, GatewayError>
  /**
   * The backend whose table can be listed (UPnP IGD), where orphaned mappings are found: looked
   * for at startup even when no Service asks for it. Fails where none is configured.
   */
  readonly tableReader: Effect.Effect<GatewayChoice, GatewayError>
  /** What `auto` uses now, without probing; undefined before the first choice or after a failure. */
  readonly autoChoice: Effect.Effect<GatewayChoice | undefined>
}>()("edge-ccm/gateway/Gateways") {
  /**
   * Builds the service over one `PortMapper` layer per backend; each is built on first use, in
   * the scope of the service.
   */
  static make = Effect.fnUntraced(function*(
    layers: { readonly [B in Backend]: Layer.Layer<PortMapper> },
    auto?: Partial<AutoOptions>
  ) {
    const settings: AutoOptions = { ...defaultAutoOptions, ...auto }
    const scope = yield* Effect.scope
    const chosen = yield* Ref.make(Option.none<GatewayChoice>())
    const choosing = yield* Semaphore.make(1)

    /** A failure that says the backend `auto` uses is no good drops that choice. */
    const forget = (backend: Backend, error: GatewayError) =>
      Effect.gen(function*() {
        const current = yield* Ref.get(chosen)
        if (Option.isNone(current) || current.value.backend !== backend) return
        yield* Ref.set(chosen, Option.none())
        yield* Effect.logWarning(`load-balancer type auto: ${backend} failed; choosing again on next use`, {
          reason: error.message
        })
      })

    /**
     * Each backend's one mapper, reporting its failures to `auto` whoever calls it (a Service of
     * a named type may be the first to find the router gone).
     */
    const watched = (backend: Backend, mapper: PortMapper["Service"]): PortMapper["Service"] => {
      const watch = <A, R>(effect: Effect.Effect<A, GatewayError, R>) =>
        Effect.tapError(effect, (error) => unusable(error) ? forget(backend, error) : Effect.void)
      return PortMapper.of({
        capabilities: mapper.capabilities,
        restarts: mapper.restarts,
        events: mapper.events,
        selection: mapper.selection,
        externalAddress: watch(mapper.externalAddress),
        status: watch(mapper.status),
        map: (request) => watch(mapper.map(request)),
        unmap: (mapping) => watch(mapper.unmap(mapping)),
        get: (externalPort, protocol) => watch(mapper.get(externalPort, protocol)),
        list: watch(mapper.list)
      })
    }

    const build = (backend: Backend) =>
      Effect.cached(
        Effect.map(Layer.buildWithScope(layers[backend], scope), (context) => watched(backend, Context.get(context, PortMapper)))
      )
    const mappers = {
      "upnp-igd": yield* build("upnp-igd"),
      "nat-pmp": yield* build("nat-pmp"),
      "pcp": yield* build("pcp")
    } satisfies Record<Backend, Effect.Effect<PortMapper["Service"]>>

    const probe = (backend: Backend) =>
      Effect.gen(function*() {
        const mapper = yield* mappers[backend]
        const status = yield* mapper.status.pipe(
          Effect.timeoutOrElse({
            duration: settings.probeTimeout,
            orElse: () =>
              Effect.fail({ message: `no answer within ${Duration.format(Duration.fromInputUnsafe(settings.probeTimeout))}` })
          }),
          Effect.result
        )
        return { backend, status } satisfies Probe
      })

    const choose = Effect.gen(function*() {
      const probes: Array<Probe> = []
      let choice: Probe | undefined
      for (const backend of settings.preference) {
        const probed = yield* probe(backend)
        probes.push(probed)
        if (Result.isSuccess(probed.status) && probed.status.success.connected) {
          choice = probed
          break
        }
      }
      const fallback = choice ?? probes.find((p) => Result.isSuccess(p.status))
      if (fallback === undefined) {
        return yield* new GatewayNotFound({
          reason: probes.length === 0
            ? "no backend is allowed for load-balancer type auto"
            : `no gateway answered UPnP IGD, PCP or NAT-PMP (${probes.map(describeProbe).join("; ")})`,
          candidates: probes.map((p) => p.backend)
        })
      }
      const passed = probes.filter((p) => p !== fallback)
      const reason = `${choice === undefined ? "none is connected; first to answer" : "first connected"}: ${
        describeProbe(fallback)
      }${passed.length > 0 ? `; passed over ${passed.map(describeProbe).join("; ")}` : ""}`
      const result: GatewayChoice = { backend: fallback.backend, mapper: yield* mappers[fallback.backend], reason }
      yield* Ref.set(chosen, Option.some(result))
      yield* Effect.logInfo(`load-balancer type auto uses ${fallback.backend}`, { reason })
      return result
    })

    const forAuto = Semaphore.withPermit(
      choosing,
      Effect.flatMap(Ref.get(chosen), Option.match({ onNone: () => choose, onSome: Effect.succeed }))
    )

    const forType = Effect.fn("Gateways.forType")(function*(type: LoadBalancerType) {
      if (type === "auto") return yield* forAuto
      const mapper = yield* mappers[type]
      return { backend: type, mapper } satisfies GatewayChoice
    })

    return Gateways.of({
      forType,
      tableReader: forType("upnp-igd"),
      autoChoice: Effect.map(Ref.get(chosen), Option.getOrUndefined)
    })
  })

  /** The service over the given backend layers (tests give in-memory ones). */
  static layerFrom(
    layers: { readonly [B in Backend]: Layer.Layer<PortMapper> },
    auto?: Partial<AutoOptions>
  ): Layer.Layer<Gateways> {
    return Layer.effect(Gateways, Gateways.make(layers, auto))
  }

  /**
   * One router spoken to in one protocol: the given `PortMapper` answers for its own type and
   * for `auto`; other types fail with a clear error. For embedding and tests.
   */
  static layerSingle(backend: Backend): Layer.Layer<Gateways, never, PortMapper> {
    return Layer.effect(
      Gateways,
      Effect.gen(function*() {
        const choice: GatewayChoice = { backend, mapper: yield* PortMapper }
        const notConfigured = (what: string) =>
          Effect.fail(new GatewayNotFound({ reason: `${what} is not configured: this controller speaks ${backend} only`, candidates: [] }))
        return Gateways.of({
          forType: Effect.fn("Gateways.forType")(function*(type: LoadBalancerType) {
            return type === backend || type === "auto" ? choice : yield* notConfigured(type)
          }),
          tableReader: choice.mapper.capabilities.readsTable ? Effect.succeed(choice) : notConfigured("a router that lists its table"),
          autoChoice: Effect.succeed(choice)
        })
      })
    )
  }

  /** UPnP IGD, NAT-PMP and PCP over the network, each configured by its own options. */
  static layer(options?: Partial<GatewaysOptions>): Layer.Layer<Gateways> {
    return Gateways.layerFrom({
      "upnp-igd": UpnpGateway.layer(options?.upnp),
      "nat-pmp": NatPmpGateway.layer(options?.natpmp),
      "pcp": PcpGateway.layer(options?.pcp)
    }, options?.auto)
  }
}
