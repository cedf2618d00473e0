/**
 * The routers in use, one per protocol (created when a Service or a record first needs it):
 * each one's mapper, what we know of its table, and its last answer. Probing lives here too,
 * with what a probe means: a reboot (uptime or epoch going backwards), another router, a router
 * back after failing, or a new external address. The registry is a `SubscriptionRef` (the
 * restart listeners follow it), each router's last answer a `Ref`.
 */
import { Clock, Context, Effect, HashMap, Layer, Option, Ref, SubscriptionRef } from "effect"
import type { GatewayError } from "../gateway/GatewayError.ts"
import { type Backend, Gateways, type LoadBalancerType } from "../gateway/Gateways.ts"
import type { GatewayStatus } from "../gateway/Mapping.ts"
import type { PortMapper } from "../gateway/PortMapper.ts"
import * as metrics from "./metrics.ts"
import type { GatewayView } from "./planner.ts"
import { reassertedSinceBoot } from "./rebootJudgement.ts"
import { makeTableCache, type TableCache } from "./TableCache.ts"

/** One router protocol in use: its mapper, and what we know of its table. */
export interface Router {
  readonly backend: Backend
  readonly mapper: PortMapper["Service"]
  readonly table: TableCache
}

/** A router as a load-balancer type resolves to it, and why (`auto`). */
export interface ChosenRouter {
  readonly router: Router
  /** Why `auto` chose this backend; undefined for a named type. */
  readonly reason: string | undefined
}

/** A router's last answer, and when it was last listed, probed and announced a restart (Clock time). */
interface RouterState {
  readonly status: GatewayStatus | undefined
  readonly error: GatewayError | undefined
  readonly listedAt: number | undefined
  readonly probedAt: number | undefined
  readonly announcedAt: number | undefined
}

const fresh: RouterState = { status: undefined, error: undefined, listedAt: undefined, probedAt: undefined, announcedAt: undefined }

/** What a probe found, and what it calls for. */
export type ProbeVerdict =
  | { readonly _tag: "Quiet" }
  /** The router lost its table, is another one, or answers again: every mapping is re-asserted. */
  | { readonly _tag: "Reassert"; readonly why: string; readonly rebooted: boolean }
  /** A reboot that a listing made since has already followed. */
  | { readonly _tag: "AlreadyReasserted"; readonly why: string }
  /** A new external address: every Service's status follows it. */
  | { readonly _tag: "AddressChanged"; readonly ip: string | undefined }
  | { readonly _tag: "Failed"; readonly error: GatewayError }

/** How the routers in use answer, for the health report. */
export interface RoutersHealth {
  /** Every router in use answers (none in use yet: nothing to wait for). */
  readonly reachable: boolean
  readonly error: string | undefined
  /** When the probe loop last went round (Clock time): a stuck loop fails the liveness probe. */
  readonly lastProbeAt: number
}

/** The registry of routers in use, their state, and probing. */
export class Routers extends Context.Service<Routers, {
  /** The router for a load-balancer type (or a record's backend), registered on first use. */
  readonly forType: (type: LoadBalancerType) => Effect.Effect<ChosenRouter, GatewayError>
  /** The router that lists its table (UPnP IGD), registered on first use. */
  readonly tableReader: Effect.Effect<Router, GatewayError>
  /**
   * Orphans are found only on a router that lists its table: looks for one once at startup even
   * when no Service needs it, and forgets it when none answers.
   */
  readonly lookForTableReader: Effect.Effect<void>
  /** Every router registered, as it changes. */
  readonly registry: SubscriptionRef.SubscriptionRef<ReadonlyMap<Backend, Router>>
  readonly inUse: Effect.Effect<ReadonlyArray<Router>>
  /** What the planner needs of the router: its cached status, or a fresh probe. */
  readonly view: (router: Router) => Effect.Effect<GatewayView, GatewayError>
  /** The router failed or contradicted our view of it: ask it afresh next time, and forget its table. */
  readonly failed: (router: Router, error: GatewayError) => Effect.Effect<void>
  /** Whether the router's last answer was a failure. */
  readonly failing: (router: Router) => Effect.Effect<boolean>
  /** Asks the router for its state, and says what the answer calls for. */
  readonly probe: (router: Router) => Effect.Effect<ProbeVerdict>
  /**
   * Reads only the router's external address (a cue said it may have changed): a new one is
   * `AddressChanged`, as a probe would say. With nothing to compare it to, a whole probe.
   * `holdMissing`: no address at all is taken for a passing state (a WAN reconnect) and
   * changes nothing; a later read decides. A failed read is recorded as a failed probe's is:
   * the router's next answer is met as its return, with a full pass.
   */
  readonly reread: (router: Router, options?: { readonly holdMissing?: boolean }) => Effect.Effect<ProbeVerdict>
  /** When the router last answered a probe (Clock time), by any loop. */
  readonly probedAt: (router: Router) => Effect.Effect<number | undefined>
  /** A listing of the router's table was asked for at this Clock time. */
  readonly listed: (router: Router, at: number) => Effect.Effect<void>
  /** The router announced a restart now. */
  readonly announced: (router: Router) => Effect.Effect<void>
  /** The probe loop went round now. */
  readonly probeTick: Effect.Effect<void>
  /** Our addresses toward the routers (the internal client of our mappings). */
  readonly localAddresses: Effect.Effect<ReadonlySet<string>>
  readonly health: Effect.Effect<RoutersHealth>
}>()("edge-ccm/controller/Routers") {
  /** Routers from `Gateways`. */
  static readonly layer: Layer.Layer<Routers, never, Gateways> = Layer.effect(
    Routers,
    Effect.gen(function*() {
      const gateways = yield* Gateways
      const registry = yield* SubscriptionRef.make<ReadonlyMap<Backend, Router>>(new Map())
      const states = yield* Ref.make(HashMap.empty<Backend, RouterState>())
      const lastProbeAt = yield* Ref.make(yield* Clock.currentTimeMillis)

      const stateOf = (router: Router) =>
        Effect.map(Ref.get(states), (all) => Option.getOrElse(HashMap.get(all, router.backend), () => fresh))
      const change = (router: Router, f: (state: RouterState) => RouterState) =>
        Ref.update(states, (all) => HashMap.set(all, router.backend, f(Option.getOrElse(HashMap.get(all, router.backend), () => fresh))))

      const register = Effect.fnUntraced(function*(backend: Backend, mapper: PortMapper["Service"]) {
        const known = (yield* SubscriptionRef.get(registry)).get(backend)
        if (known !== undefined) return known
        const router: Router = { backend, mapper, table: yield* makeTableCache }
        return yield* SubscriptionRef.modify(registry, (all) => {
          const raced = all.get(backend)
          return raced !== undefined ? [raced, all] as const : [router, new Map(all).set(backend, router)] as const
        })
      })

      const forType = Effect.fn("Routers.forType")(function*(type: LoadBalancerType) {
        const choice = yield* gateways.forType(type)
        return { router: yield* register(choice.backend, choice.mapper), reason: choice.reason } satisfies ChosenRouter
      })

      /** A failed answer: the router is failing until it answers again, and is asked afresh then. */
      const noteFailure = (router: Router, error: GatewayError) =>
        change(router, (state) => ({ ...state, status: undefined, error }))

      /** Asks the router for its state; records the answer, and returns the one before it. */
      const ask = (router: Router) =>
        Effect.gen(function*() {
          const before = yield* stateOf(router)
          const next = yield* router.mapper.status.pipe(Effect.tapError((error) => noteFailure(router, error)))
          yield* metrics.setExternalIp(before.status?.externalAddress, next.externalAddress)
          const now = yield* Clock.currentTimeMillis
          yield* change(router, (state) => ({ ...state, status: next, probedAt: now, error: undefined }))
          return { before, next, now }
        })

      const view = Effect.fn("Routers.view")(function*(router: Router) {
        const cached = (yield* stateOf(router)).status
        return viewOf(cached ?? (yield* ask(router)).next)
      })

      const probe = Effect.fn("Routers.probe")(function*(router: Router) {
        const answer = yield* Effect.result(ask(router))
        if (answer._tag === "Failure") return { _tag: "Failed", error: answer.failure } satisfies ProbeVerdict
        const { before, next, now } = answer.success
        const previous = before.status
        // A reboot: the uptime (UPnP) or the epoch (NAT-PMP, PCP) went backwards, or the
        // router's own epoch check says it lost its mappings.
        const rebooted = previous !== undefined && previous.router === next.router &&
          ((previous.uptimeSeconds !== undefined && next.uptimeSeconds !== undefined &&
            next.uptimeSeconds < previous.uptimeSeconds) ||
            (next.stateLosses ?? 0) > (previous.stateLosses ?? 0))
        const routerChanged = previous !== undefined && previous.router !== next.router
        if (rebooted || routerChanged || before.error !== undefined) {
          const why = rebooted
            ? `router ${next.router} rebooted (uptime went down to ${next.uptimeSeconds}s)`
            : routerChanged
            ? `the gateway is now ${next.router}`
            : `router ${next.router} is reachable again`
          if (rebooted && next.uptimeSeconds !== undefined && reassertedSinceBoot({ ...before, now, uptimeSeconds: next.uptimeSeconds })) {
            return { _tag: "AlreadyReasserted", why } satisfies ProbeVerdict
          }
          if (rebooted) yield* metrics.count(metrics.gatewayReboots)
          yield* router.table.invalidate
          return { _tag: "Reassert", why, rebooted } satisfies ProbeVerdict
        }
        const addressChanged = previous !== undefined &&
          (previous.externalAddress.ip !== next.externalAddress.ip || previous.externalAddress.class !== next.externalAddress.class)
        return addressChanged
          ? { _tag: "AddressChanged", ip: next.externalAddress.ip } satisfies ProbeVerdict
          : { _tag: "Quiet" } satisfies ProbeVerdict
      })

      const reread = Effect.fn("Routers.reread")(function*(router: Router, options?: { readonly holdMissing?: boolean }) {
        const previous = (yield* stateOf(router)).status
        if (previous === undefined) return yield* probe(router)
        const read = yield* Effect.result(router.mapper.externalAddress)
        if (read._tag === "Failure") {
          // As a failed probe: the next answer is met as the router's return, with a full pass.
          yield* noteFailure(router, read.failure)
          return { _tag: "Failed", error: read.failure } satisfies ProbeVerdict
        }
        const next = read.success
        if (options?.holdMissing === true && next.class === "missing") return { _tag: "Quiet" } satisfies ProbeVerdict
        yield* metrics.setExternalIp(previous.externalAddress, next)
        yield* change(router, (state) => ({
          ...state,
          status: state.status === undefined ? undefined : { ...state.status, externalAddress: next }
        }))
        return previous.externalAddress.ip !== next.ip || previous.externalAddress.class !== next.class
          ? { _tag: "AddressChanged", ip: next.ip } satisfies ProbeVerdict
          : { _tag: "Quiet" } satisfies ProbeVerdict
      })

      const tableReader = gateways.tableReader.pipe(
        Effect.flatMap((choice) => register(choice.backend, choice.mapper)),
        Effect.withSpan("Routers.tableReader")
      )

      const lookForTableReader = Effect.gen(function*() {
        const registered = yield* SubscriptionRef.get(registry)
        if ([...registered.values()].some((router) => router.mapper.capabilities.readsTable)) return
        const found = yield* Effect.result(
          tableReader.pipe(
                Effect.tap((router) =>
                  view(router).pipe(
                    // Nobody answers: forget it, unless a Service registered it meanwhile.
                    Effect.tapError(() =>
                      registered.has(router.backend) ? Effect.void : SubscriptionRef.update(registry, (all) => {
                        const left = new Map(all)
                        left.delete(router.backend)
                        return left
                      })
                    )
                  )
                )
          )
        )
        if (found._tag === "Failure") {
          yield* Effect.logInfo(`no router that lists its table answered (${found.failure.message}): orphan sweeping is off`)
        }
      }).pipe(Effect.withSpan("Routers.lookForTableReader"))

      const health = Effect.gen(function*() {
        const all = yield* Ref.get(states)
        const inUse = yield* SubscriptionRef.get(registry)
        const errors = [...inUse.keys()].flatMap((backend) => {
          const error = Option.getOrUndefined(HashMap.get(all, backend))?.error
          return error === undefined ? [] : [error]
        })
        return { reachable: errors.length === 0, error: errors[0]?.message, lastProbeAt: yield* Ref.get(lastProbeAt) }
      })

      return Routers.of({
        forType,
        tableReader,
        lookForTableReader,
        registry,
        inUse: Effect.map(SubscriptionRef.get(registry), (all) => [...all.values()]),
        view,
        failed: Effect.fn("Routers.failed")(function*(router: Router, error: GatewayError) {
          // A double NAT is the router's answer, not its failure: the probe reads it again.
          yield* change(router, (state) => ({ ...state, status: undefined, error: error._tag === "DoubleNat" ? state.error : error }))
          yield* router.table.invalidate
        }),
        failing: Effect.fn("Routers.failing")(function*(router: Router) {
          return (yield* stateOf(router)).error !== undefined
        }),
        probe,
        reread,
        probedAt: (router) => Effect.map(stateOf(router), (state) => state.probedAt),
        listed: Effect.fn("Routers.listed")(function*(router: Router, at: number) {
          yield* change(router, (state) => ({ ...state, listedAt: at }))
        }),
        announced: Effect.fn("Routers.announced")(function*(router: Router) {
          const at = yield* Clock.currentTimeMillis
          yield* change(router, (state) => ({ ...state, announcedAt: at }))
        }),
        probeTick: Effect.flatMap(Clock.currentTimeMillis, (now) => Ref.set(lastProbeAt, now)),
        localAddresses: Effect.gen(function*() {
          const all = yield* Ref.get(states)
          const inUse = yield* SubscriptionRef.get(registry)
          const addresses = new Set<string>()
          for (const backend of inUse.keys()) {
            const status = Option.getOrUndefined(HashMap.get(all, backend))?.status
            if (status !== undefined) addresses.add(status.localAddress)
          }
          return addresses
        }),
        health
      })
    })
  )

  /**
   * One router, spoken to in `backend` through the given mapper (an in-memory one in tests):
   * it answers for its own type and for `auto`, with no discovery (`Gateways.layerSingle`).
   */
  static layerTest(backend: Backend, mapper: Layer.Layer<PortMapper>): Layer.Layer<Routers> {
    return Routers.layer.pipe(Layer.provide(Gateways.layerSingle(backend)), Layer.provide(mapper))
  }
}

/** What the planner needs to know of a router's answer. */
export const viewOf = (status: GatewayStatus): GatewayView => ({
  router: status.router,
  backend: status.protocol,
  localAddress: status.localAddress,
  externalAddress: status.externalAddress
})
