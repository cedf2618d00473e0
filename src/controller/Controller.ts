/**
 * The service controller: watches Services, Nodes and EndpointSlices, keeps one worker per
 * Service key, and drives the executor. Level-triggered: every watch event, resync tick and
 * detected router reboot recomputes the plan from the whole observed state, so a dropped event,
 * a restart or a rebooted router is repaired by the next pass.
 */
import type { EndpointSlice, Node, Service } from "../kube/objects.ts"
import { Clock, Context, Duration, Effect, FiberMap, Layer, Metric, Random, Schedule, Semaphore, Stream } from "effect"
import type { GatewayError } from "../gateway/GatewayError.ts"
import { type Backend, Gateways, type LoadBalancerType } from "../gateway/Gateways.ts"
import type { GatewayStatus, MappingEntry } from "../gateway/Mapping.ts"
import type { PortMapper } from "../gateway/PortMapper.ts"
import { Kube, type WatchEvent } from "../kube/Kube.ts"
import { makeAnnouncer } from "./Announcer.ts"
import { defaultLeaseRange } from "./DurationString.ts"
import { makeEventSink } from "./EventSink.ts"
import { makePortIndex, wantedPorts } from "./PortIndex.ts"
import {
  asBackend,
  describePort,
  type ExecutorContext,
  type ExecutorOptions,
  type GatewayHandle,
  reconcileService
} from "./executor.ts"
import { readRecord, type RecordCheck } from "./MappingRecord.ts"
import { atMostOncePer, RESTART_PASS_WINDOW } from "./restartWindow.ts"
import * as metrics from "./metrics.ts"
import { type GatewayView, isOwned, type Ownership, planOrphans } from "./planner.ts"
import { RecordKey } from "./RecordKey.ts"
import { FINALIZER, liveDesired, selectService, serviceKey } from "./ServiceSpec.ts"
import { makeTableCache, type TableCache } from "./TableCache.ts"
import { makeWorkQueue } from "./WorkQueue.ts"

export const EXCLUDE_FROM_LOAD_BALANCERS_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"

export interface ControllerOptions extends ExecutorOptions {
  /** How often the router is asked for its uptime and address, to notice a reboot quickly. */
  readonly probeInterval: Duration.Duration
  /** The Node this controller runs on (for the exclusion label and local endpoints). */
  readonly nodeName: string | undefined
  /** Services reconciled in parallel (the router's own limit applies beneath). */
  readonly workers: number
}

export const defaultControllerOptions: ControllerOptions = {
  clusterName: "kubernetes",
  loadBalancerClass: "midokura.com/edge",
  defaultLease: Duration.hours(1),
  leaseRange: defaultLeaseRange,
  maxMappingsPerNamespace: 256,
  ipMode: undefined,
  resyncInterval: Duration.seconds(30),
  probeInterval: Duration.seconds(2),
  nodeName: undefined,
  workers: 8
}

export interface ControllerHealth {
  readonly servicesSynced: boolean
  /** The first full pass (router found, table listed, every Service queued) has run. */
  readonly initialPassDone: boolean
  readonly gatewayReachable: boolean
  readonly gatewayError: string | undefined
  /** This node carries the exclude-from-external-load-balancers label: nothing is mapped to it. */
  readonly excluded: boolean
  readonly queueDepth: number
  /** Events waiting to be sent (they yield to the work). */
  readonly eventsQueued: number
  /** When the loops last made progress (ms since epoch): a stuck loop fails the liveness probe. */
  readonly lastProbeAt: number
  readonly lastResyncAt: number
}

export class Controller extends Context.Service<Controller, {
  readonly health: Effect.Effect<ControllerHealth>
  /** Lists the router's table and reconciles every Service now, as after a reboot. */
  readonly fullPass: Effect.Effect<void>
}>()("edge-ccm/controller/Controller") {
  static layer(options: Partial<ControllerOptions> = {}): Layer.Layer<Controller, never, Kube | Gateways | RecordKey> {
    return Layer.effect(Controller, make({ ...defaultControllerOptions, ...options }))
  }
}

const make = Effect.fnUntraced(function*(options: ControllerOptions) {
  const kube = yield* Kube
  const gateways = yield* Gateways
  // One object for the process: records are read (and memoized) against it.
  const recordCheck: RecordCheck = { key: yield* RecordKey, clusterName: options.clusterName }
  const queue = yield* makeWorkQueue
  const announcer = makeAnnouncer()
  const events = yield* makeEventSink(kube, { idle: queue.idle })
  const portIndex = makePortIndex(options)
  const timers = yield* FiberMap.make<string>()
  const restartListeners = yield* FiberMap.make<Backend>()
  const fullPassLock = yield* Semaphore.make(1)

  const services = new Map<string, Service>()
  // The versions of each Service this controller wrote lately: their watch echoes need no new
  // pass (a pass writes up to three times; the echo of the first may be taken before the last).
  const ownWrites = new Map<string, Array<string>>()
  const nodes = new Map<string, Node>()
  const slices = new Map<string, EndpointSlice>()
  const state = {
    servicesSynced: false,
    nodesSynced: false,
    initialPassStarted: false,
    initialPassDone: false,
    slicesSynced: false,
    failures: new Map<string, number>(),
    lastProbeAt: Date.now(),
    lastResyncAt: Date.now()
  }

  const isRelevant = (service: Service) =>
    selectService(service, options)._tag !== "NotOurs" || (service.metadata?.finalizers?.includes(FINALIZER) ?? false)

  const excluded = () => {
    if (options.nodeName === undefined) return false
    return nodes.get(options.nodeName)?.metadata?.labels?.[EXCLUDE_FROM_LOAD_BALANCERS_LABEL] !== undefined
  }

  const ownership = (): Ownership => {
    const addresses = new Set<string>()
    for (const node of nodes.values()) {
      for (const address of node.status?.addresses ?? []) {
        if (address.type === "InternalIP" || address.type === "ExternalIP") addresses.add(address.address)
      }
    }
    for (const backend of backends.values()) if (backend.status !== undefined) addresses.add(backend.status.localAddress)
    return { clusterName: options.clusterName, nodeAddresses: addresses }
  }

  /**
   * One entry per router protocol in use (created when a Service or a record first needs it):
   * its mapper, what we know of its table, and its last answer.
   */
  interface BackendState {
    readonly backend: Backend
    readonly mapper: PortMapper["Service"]
    readonly table: TableCache
    status: GatewayStatus | undefined
    error: GatewayError | undefined
    /** When the latest listing of its table was asked for (Clock time). */
    listedAt: number | undefined
    /** When the router last answered a probe (Clock time). */
    probedAt: number | undefined
    /** When the router last announced a restart (Clock time). */
    announcedAt: number | undefined
  }
  const backends = new Map<Backend, BackendState>()

  const viewOf = (status: GatewayStatus): GatewayView => ({
    router: status.router,
    backend: status.protocol,
    localAddress: status.localAddress,
    externalAddress: status.externalAddress
  })

  /** Asks the router for its state; returns what changed since the last answer. */
  const probe = (backend: BackendState) =>
    backend.mapper.status.pipe(
      Effect.tap((next) => metrics.setExternalIp(backend.status?.externalAddress, next.externalAddress)),
      Effect.flatMap((next) => Effect.map(Clock.currentTimeMillis, (now) => {
        const previous = backend.status
        const previousAt = backend.probedAt
        const recovered = backend.error !== undefined
        backend.status = next
        backend.probedAt = now
        backend.error = undefined
        // A reboot: the uptime (UPnP) or the epoch (NAT-PMP, PCP) went backwards, or the
        // router's own epoch check says it lost its mappings.
        const rebooted = previous !== undefined && previous.router === next.router &&
          ((previous.uptimeSeconds !== undefined && next.uptimeSeconds !== undefined &&
            next.uptimeSeconds < previous.uptimeSeconds) ||
            (next.stateLosses ?? 0) > (previous.stateLosses ?? 0))
        return {
          status: next,
          previousAt,
          rebooted,
          routerChanged: previous !== undefined && previous.router !== next.router,
          recovered,
          addressChanged: previous !== undefined &&
            (previous.externalAddress.ip !== next.externalAddress.ip ||
              previous.externalAddress.class !== next.externalAddress.class)
        }
      })),
      Effect.tapError((error) =>
        Effect.sync(() => {
          backend.status = undefined
          backend.error = error
        })
      )
    )

  const handleOf = (backend: BackendState, reason?: string): GatewayHandle => ({
    backend: backend.backend,
    mapper: backend.mapper,
    table: backend.table,
    view: Effect.suspend(() =>
      backend.status !== undefined
        ? Effect.succeed(viewOf(backend.status))
        : probe(backend).pipe(Effect.map((change) => viewOf(change.status)))
    ),
    // The router failed or contradicted our view of it: ask it afresh on the next pass.
    failed: (error) =>
      Effect.sync(() => {
        backend.status = undefined
        if (error._tag !== "DoubleNat") backend.error = error
      }).pipe(Effect.andThen(backend.table.invalidate)),
    reason
  })

  const gatewayFor = (type: LoadBalancerType) =>
    gateways.forType(type).pipe(
      Effect.map((choice) => {
        let backend = backends.get(choice.backend)
        if (backend === undefined) {
          backend = {
            backend: choice.backend,
            mapper: choice.mapper,
            table: makeTableCache(),
            status: undefined,
            error: undefined,
            listedAt: undefined,
            probedAt: undefined,
            announcedAt: undefined
          }
          backends.set(choice.backend, backend)
          return { backend, fresh: true, reason: choice.reason }
        }
        return { backend, fresh: false, reason: choice.reason }
      }),
      Effect.tap(({ backend, fresh }) => fresh ? listenForRestarts(backend) : Effect.void),
      Effect.map(({ backend, reason }) => handleOf(backend, reason))
    )

  /**
   * A router that announces its restarts (UPnP's SSDP NOTIFY) is re-asserted at once, but at
   * most once per RESTART_PASS_WINDOW: announcements are spoofable, and each starts a full pass.
   */
  const listenForRestarts = (backend: BackendState): Effect.Effect<void> => {
    const restarts = backend.mapper.restarts
    if (restarts === undefined) return Effect.void
    const reassert = (announcement: string) =>
      Clock.currentTimeMillis.pipe(
        Effect.tap((now) => Effect.sync(() => void (backend.announcedAt = now))),
        Effect.andThen(Effect.logWarning(`${announcement}: the router restarted, re-asserting every mapping`)),
        Effect.andThen(metrics.count(metrics.gatewayReboots)),
        Effect.andThen(backend.table.invalidate),
        Effect.andThen(Effect.suspend(() => fullPass))
      )
    // One listener per backend: a backend forgotten and set up again replaces its listener.
    return Effect.asVoid(FiberMap.run(
      restartListeners,
      backend.backend,
      Effect.scoped(
        Effect.flatMap(atMostOncePer(RESTART_PASS_WINDOW, reassert), (limited) => Stream.runForEach(restarts, limited))
      )
    ))
  }

  const localTrafficWarning = (service: Service): string | undefined => {
    if (service.spec?.externalTrafficPolicy !== "Local" || options.nodeName === undefined || !state.slicesSynced) {
      return undefined
    }
    const namespace = service.metadata?.namespace
    const name = service.metadata?.name
    const ready = [...slices.values()].some((slice) =>
      slice.metadata?.namespace === namespace && slice.metadata?.labels?.["kubernetes.io/service-name"] === name &&
      (slice.endpoints ?? []).some((endpoint) => endpoint.nodeName === options.nodeName && endpoint.conditions?.ready !== false)
    )
    return ready
      ? undefined
      : `externalTrafficPolicy is Local and node ${options.nodeName} (the mapping target) has no ready endpoint ` +
        "of this Service: traffic forwarded by the router will be dropped"
  }

  const context: ExecutorContext = {
    options,
    kube,
    gatewayFor,
    announcer,
    events,
    services: () => services,
    claimants: portIndex.claimants,
    internalClaimants: portIndex.internalClaimants,
    namespaceMembers: portIndex.namespaceMembers,
    recordCheck,
    ownership,
    wrote: (service) => {
      const version = service.metadata?.resourceVersion
      if (version === undefined) return
      const key = serviceKey(service)
      ownWrites.set(key, [...(ownWrites.get(key) ?? []).slice(-3), version])
    },
    localTrafficWarning
  }

  const enqueueAll = (verify: boolean) =>
    Effect.forEach(
      [...services.values()].filter(isRelevant),
      (service) => queue.add(serviceKey(service), { verify }),
      { discard: true }
    )

  /** Deletes owned mappings that no Service wants or records: only from a complete listing. */
  const sweepOrphans = Effect.fnUntraced(function*(backend: BackendState, listing: ReadonlyArray<MappingEntry>) {
    if (!state.servicesSynced || !state.nodesSynced) return
    const live = new Set<string>()
    for (const service of services.values()) {
      for (const port of liveDesired(service, options)?.ports ?? []) live.add(port.description)
      // Only what the controller itself recorded keeps a mapping alive: a forged or broken record
      // protects nothing, and blocks nothing for anyone else.
      for (const mapping of readRecord(service, recordCheck).trusted) live.add(mapping.description)
    }
    for (const orphan of planOrphans(listing, live, ownership())) {
      yield* backend.mapper.unmap(orphan.entry).pipe(
        Effect.tap(() => backend.table.set(orphan.entry, null)),
        Effect.tap(() =>
          Effect.log(`deleted orphaned mapping ${describePort(orphan.entry)} '${orphan.entry.description}'`)
        ),
        Effect.catch((error) => Effect.logWarning(`could not delete orphaned mapping: ${error.message}`))
      )
    }
  })

  /**
   * Every protocol a Service asks for, or a record names, has its state before the pass:
   * cleanup and orphans need the routers even when no live Service uses them any more.
   */
  const materializeBackends = Effect.suspend(() => Effect.forEach(
    new Set([...services.values()].flatMap((service) => {
      const selection = selectService(service, options)
      return [
        ...(selection._tag === "Ours" ? [selection.backend] : []),
        ...readRecord(service, recordCheck).trusted.map((mapping) => asBackend(mapping.backend))
      ]
    })),
    (type) => Effect.ignore(gatewayFor(type)),
    { discard: true }
  ))

  /**
   * Lists every readable router's table, sweeps orphans, and reconciles every Service. A pass
   * that takes long says every 30 s what it is waiting for.
   */
  const fullPass = Effect.suspend(() => {
    const progress = { step: "waiting for the previous full pass" }
    const startedAt = Date.now()
    const watchdog = Effect.sleep(Duration.seconds(30)).pipe(
      Effect.andThen(Effect.suspend(() =>
        Effect.logWarning(`full pass running for ${Math.round((Date.now() - startedAt) / 1000)} s: ${progress.step}`)
      )),
      Effect.forever
    )
    return Effect.raceFirst(fullPassSteps(progress), watchdog)
  })

  const fullPassSteps = (progress: { step: string }) => Semaphore.withPermit(fullPassLock)(
    Effect.gen(function*() {
      progress.step = "finding the routers in use"
      yield* materializeBackends
      let complete = true
      let owned = 0
      for (const backend of backends.values()) {
        if (!backend.mapper.capabilities.readsTable) continue
        if (backend.error !== undefined) {
          // Not answering: its Services read their ports afresh (and fail fast) instead.
          yield* backend.table.invalidate
          complete = false
          continue
        }
        progress.step = `listing the table of ${backend.backend}`
        const listedAt = yield* Clock.currentTimeMillis
        const listing = yield* Effect.result(backend.mapper.list)
        if (listing._tag === "Success" && listing.success !== undefined) {
          backend.listedAt = listedAt
          yield* backend.table.replaceAll(listing.success, listedAt)
          const ours = ownership()
          owned += listing.success.filter((entry) => isOwned(entry, ours)).length
          progress.step = `deleting orphaned mappings on ${backend.backend}`
          yield* sweepOrphans(backend, listing.success)
        } else {
          if (listing._tag === "Failure") {
            yield* Effect.logWarning(`router table unreadable: ${listing.failure.message}`)
          }
          yield* backend.table.invalidate
          complete = false
        }
      }
      yield* Metric.update(metrics.ownedMappings, owned)
      yield* metrics.count(metrics.fullPasses, { result: complete ? "complete" : "incomplete" })
      progress.step = "queueing every Service"
      yield* enqueueAll(!complete)
      yield* Metric.update(
        metrics.desiredMappings,
        [...services.values()].reduce((sum, service) => sum + (liveDesired(service, options)?.ports.length ?? 0), 0)
      )
      state.lastResyncAt = Date.now()
    })
  )

  const probeOne = (backend: BackendState) =>
    probe(backend).pipe(
    Effect.flatMap((change) => {
      if (change.rebooted || change.routerChanged || change.recovered) {
        const why = change.rebooted
          ? `router ${change.status.router} rebooted (uptime went down to ${change.status.uptimeSeconds}s)`
          : change.routerChanged
          ? `the gateway is now ${change.status.router}`
          : `router ${change.status.router} is reachable again`
        return Effect.gen(function*() {
          // Its announcement usually comes first: a listing asked for since the boot re-asserts.
          // The uptime counts whole seconds; an announcement since the last probe dates the boot
          // (it is sent once the router is up again).
          const bootedAt = (yield* Clock.currentTimeMillis) - (change.status.uptimeSeconds ?? 0) * 1000
          const listedAt = backend.listedAt ?? 0
          const announced = backend.announcedAt !== undefined && change.previousAt !== undefined &&
            backend.announcedAt >= change.previousAt && listedAt >= backend.announcedAt
          if (change.rebooted && change.status.uptimeSeconds !== undefined && (listedAt > bootedAt || announced)) {
            return yield* Effect.log(`${why}: already re-asserted since`)
          }
          yield* Effect.logWarning(`${why}: re-asserting every mapping`)
          if (change.rebooted) yield* metrics.count(metrics.gatewayReboots)
          yield* backend.table.invalidate
          yield* fullPass
        })
      }
      return change.addressChanged
        ? Effect.log(`router external address is now ${change.status.externalAddress.ip ?? "missing"}`).pipe(
          Effect.andThen(enqueueAll(false))
        )
        : Effect.void
    }),
    Effect.catch((error) => Effect.logWarning(`gateway probe failed: ${error.message}`))
  )

  // Concurrently: one router that does not answer must not delay noticing another's reboot.
  // The tick itself counts for liveness: with no router in use there is nothing to probe.
  const probeOnce = Effect.suspend(() =>
    Effect.forEach([...backends.values()], probeOne, { concurrency: "unbounded", discard: true })
  ).pipe(Effect.ensuring(Effect.sync(() => void (state.lastProbeAt = Date.now()))))

  const scheduleRetry = (key: string, delay: Duration.Duration) =>
    FiberMap.run(timers, key, Effect.sleep(delay).pipe(Effect.andThen(queue.add(key, { verify: true }))))

  const backoff = (failures: number) =>
    Random.nextBetween(0.8, 1.2).pipe(
      Effect.map((jitter) => Duration.millis(Math.min(1_000 * 2 ** (failures - 1), 300_000) * jitter))
    )

  const worker = Effect.forever(
    Effect.gen(function*() {
      const item = yield* queue.take
      // Checked here, not when the event arrives: by now the pass that wrote it has finished.
      const current = services.get(item.key)?.metadata?.resourceVersion
      const echo = item.onlyIfChanged && current !== undefined && (ownWrites.get(item.key) ?? []).includes(current)
      if (excluded() || echo) {
        yield* queue.done(item.key)
        return
      }
      const started = Date.now()
      const result = yield* reconcileService(context, item.key, item.verify)
      yield* Metric.update(metrics.reconcileDuration, (Date.now() - started) / 1000)
      yield* metrics.count(metrics.reconcileTotal, { result: result._tag === "Retry" ? "retry" : "success" })
      if (result._tag === "Retry") {
        const failures = (state.failures.get(item.key) ?? 0) + 1
        state.failures.set(item.key, failures)
        const delay = result.after ?? (yield* backoff(failures))
        yield* Effect.logWarning(`will retry in ${Duration.format(delay)}: ${result.reason}`).pipe(
          Effect.annotateLogs({ service: item.key })
        )
        yield* scheduleRetry(item.key, delay)
      } else {
        state.failures.delete(item.key)
        if (result.renewAfter !== undefined) yield* scheduleRetry(item.key, result.renewAfter)
        else yield* FiberMap.remove(timers, item.key)
      }
      yield* queue.done(item.key)
    })
  )

  const consume = <T>(
    stream: Stream.Stream<WatchEvent<T>>,
    store: Map<string, T>,
    keyOf: (object: T) => string,
    onChange: (event: WatchEvent<T>, previous: T | undefined) => Effect.Effect<void>
  ) =>
    stream.pipe(
      Stream.runForEach((event) => {
        const previous = event._tag === "Synced" ? undefined : store.get(keyOf(event.object))
        if (event._tag === "Synced") {
          store.clear()
          for (const item of event.items) store.set(keyOf(item), item)
        } else if (event._tag === "Upserted") store.set(keyOf(event.object), event.object)
        else store.delete(keyOf(event.object))
        return onChange(event, previous)
      })
    )

  /** Other Services asking for an external port this one asks (or asked) for. */
  const contenders = (...versions: ReadonlyArray<Service | undefined>): ReadonlyArray<string> => {
    const self = versions.find((version) => version !== undefined)
    if (self === undefined) return []
    const others = new Set<string>()
    for (const version of versions) {
      if (version === undefined) continue
      for (const port of wantedPorts(version, options)) for (const key of portIndex.claimants(port)) others.add(key)
    }
    others.delete(serviceKey(self))
    return [...others]
  }

  /**
   * The other Services of its namespace when the namespace is (or was, before this change) past
   * its quota: a change in one may give or take another's share.
   */
  const quotaContenders = (previous: Service | undefined, next: Service): ReadonlyArray<string> => {
    if (options.maxMappingsPerNamespace <= 0) return []
    const namespace = next.metadata?.namespace ?? "default"
    const members = portIndex.namespaceMembers(namespace)
    let wanted = previous === undefined ? 0 : wantedPorts(previous, options).length
    for (const member of members) {
      const service = services.get(member)
      if (service !== undefined) wanted += wantedPorts(service, options).length
    }
    if (wanted <= options.maxMappingsPerNamespace) return []
    return [...members].filter((member) => member !== serviceKey(next))
  }

  const objectKey = (object: { readonly metadata?: { readonly namespace?: string | undefined; readonly name?: string | undefined } | undefined }) =>
    `${object.metadata?.namespace ?? ""}/${object.metadata?.name ?? ""}`

  // The first pass waits for both lists: orphans are judged by Services and by Node addresses.
  const initialPass = Effect.suspend(() => {
    if (!state.servicesSynced || !state.nodesSynced || state.initialPassStarted) return Effect.void
    state.initialPassStarted = true
    return lookForUpnp.pipe(
      Effect.andThen(fullPass),
      Effect.ensuring(Effect.sync(() => void (state.initialPassDone = true)))
    )
  })

  /**
   * Orphans (ours, with no Service) can only be found on a router that lists its table: look
   * for a UPnP gateway once at startup even if no Service needs one; forget it if none answers.
   */
  const lookForUpnp = Effect.suspend(() =>
    backends.has("upnp-igd")
      ? Effect.void
      : gatewayFor("upnp-igd").pipe(
        Effect.flatMap((handle) => handle.view),
        Effect.catch((error) =>
          Effect.sync(() => backends.delete("upnp-igd")).pipe(
            Effect.andThen(Effect.logInfo(`no UPnP gateway answered (${error.message}): orphan sweeping is off`))
          )
        ),
        Effect.asVoid
      )
  )

  yield* consume(kube.watchServices, services, serviceKey, (event, previous) => {
    if (event._tag === "Synced") {
      portIndex.rebuild(services.values())
      // Services gone while the watch was down leave no echo to skip.
      for (const key of ownWrites.keys()) if (!services.has(key)) ownWrites.delete(key)
      const relist = state.servicesSynced
      state.servicesSynced = true
      return relist ? enqueueAll(true) : initialPass
    }
    portIndex.update(previous, event._tag === "Deleted" ? undefined : event.object)
    const key = serviceKey(event.object)
    // A port it held or wanted may now go to another Service, and so may a share of the quota.
    const others = Effect.forEach(
      new Set([...contenders(previous, event.object), ...quotaContenders(previous, event.object)]),
      (other) => queue.add(other),
      { discard: true }
    )
    if (event._tag === "Deleted") {
      ownWrites.delete(key)
      return announcer.forget(key).pipe(Effect.andThen(others))
    }
    return (isRelevant(event.object) ? queue.add(key, { verify: true, onlyIfChanged: true }) : Effect.void).pipe(
      Effect.andThen(others)
    )
  }).pipe(Effect.forkScoped)

  yield* consume(kube.watchNodes, nodes, (node) => node.metadata?.name ?? "", (event) => {
    if (event._tag !== "Synced") return Effect.void
    state.nodesSynced = true
    return initialPass
  }).pipe(Effect.forkScoped)

  yield* consume(kube.watchEndpointSlices, slices, objectKey, (event) => {
    if (event._tag === "Synced") {
      state.slicesSynced = true
      return Effect.void
    }
    const slice = event.object
    const service = slice.metadata?.labels?.["kubernetes.io/service-name"]
    const key = `${slice.metadata?.namespace ?? ""}/${service ?? ""}`
    const owner = services.get(key)
    return owner !== undefined && owner.spec?.externalTrafficPolicy === "Local" && isRelevant(owner)
      ? queue.add(key, { verify: false })
      : Effect.void
  }).pipe(Effect.forkScoped)

  yield* Effect.forEach(Array.from({ length: options.workers }), () => Effect.forkScoped(worker), { discard: true })

  yield* probeOnce.pipe(Effect.repeat(Schedule.spaced(options.probeInterval)), Effect.forkScoped)
  yield* Effect.sleep(options.resyncInterval).pipe(
    Effect.andThen(
      Effect.gen(function*() {
        if (!state.servicesSynced) return
        yield* probeOnce
        yield* fullPass
      })
    ),
    Effect.forever,
    Effect.forkScoped
  )

  return Controller.of({
    health: Effect.gen(function*() {
      return {
        servicesSynced: state.servicesSynced,
        initialPassDone: state.initialPassDone,
        // Every router protocol in use answers (none in use yet: nothing to wait for).
        gatewayReachable: [...backends.values()].every((backend) => backend.error === undefined),
        gatewayError: [...backends.values()].find((backend) => backend.error !== undefined)?.error?.message,
        excluded: excluded(),
        queueDepth: yield* queue.depth,
        eventsQueued: yield* events.queued,
        lastProbeAt: state.lastProbeAt,
        lastResyncAt: state.lastResyncAt
      }
    }),
    fullPass
  })
})
