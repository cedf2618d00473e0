/**
 * What the controller knows of the cluster: the Services, Nodes and EndpointSlices its watches
 * delivered, the index of the ports the Services ask for, and the versions of Services it wrote
 * itself (their watch echoes need no new pass). All of it is one immutable snapshot in a `Ref`:
 * a pass reads one consistent snapshot, a watch event replaces it (persistent maps, so an event
 * costs its own object, not the cluster's size).
 */
import { Context, Effect, HashMap, Layer, Option, Ref } from "effect"
import type { WatchEvent } from "../kube/Kube.ts"
import type { EndpointSlice, Node, Service } from "../kube/objects.ts"
import type { Ownership } from "./planner.ts"
import { buildPortIndex, emptyPortIndex, type PortIndex, type PortIndexOptions, updatePortIndex } from "./PortIndex.ts"
import { FINALIZER, selectService, type SelectionOptions, serviceKey } from "./ServiceSpec.ts"

/** Nodes with this label are never the mapping target. */
export const EXCLUDE_FROM_LOAD_BALANCERS_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"

/** One consistent view of the cluster. */
export interface ClusterSnapshot {
  readonly services: HashMap.HashMap<string, Service>
  readonly nodes: HashMap.HashMap<string, Node>
  readonly slices: HashMap.HashMap<string, EndpointSlice>
  readonly index: PortIndex
  /** The versions of each Service this controller wrote lately, newest last (at most 4). */
  readonly ownWrites: HashMap.HashMap<string, ReadonlyArray<string>>
  /** Which watches have delivered their first list. */
  readonly synced: { readonly services: boolean; readonly nodes: boolean; readonly slices: boolean }
}

/** What a Service watch event changed. */
export type ServiceChange =
  /** A (re)list replaced the store; `first` when it is the first list of this watch's life. */
  | { readonly _tag: "Listed"; readonly first: boolean }
  /** One Service changed (`next` undefined: deleted). */
  | { readonly _tag: "Changed"; readonly previous: Service | undefined; readonly next: Service | undefined }

/** The watch stores, the port index and the record of our own writes. */
export class ClusterState extends Context.Service<ClusterState, {
  readonly snapshot: Effect.Effect<ClusterSnapshot>
  /** The latest Service under this key, if any. */
  readonly service: (key: string) => Effect.Effect<Service | undefined>
  /** Applies a Service watch event to the store and the port index. */
  readonly applyService: (event: WatchEvent<Service>) => Effect.Effect<ServiceChange>
  /** Applies a Node watch event; true when it is the Nodes' first list. */
  readonly applyNode: (event: WatchEvent<Node>) => Effect.Effect<boolean>
  /** Applies an EndpointSlice watch event; returns the Service key a changed slice belongs to. */
  readonly applySlice: (event: WatchEvent<EndpointSlice>) => Effect.Effect<string | undefined>
  /** Remembers a version of a Service this controller wrote, so its echo is not a new pass. */
  readonly wrote: (service: Service) => Effect.Effect<void>
  /** Whether the Service's latest version is one this controller wrote. */
  readonly isEcho: (key: string) => Effect.Effect<boolean>
}>()("edge-ccm/controller/ClusterState") {
  /** An empty cluster, filled by the watches. */
  static layer(options: PortIndexOptions): Layer.Layer<ClusterState> {
    return Layer.effect(ClusterState, make(options, empty))
  }

  /** A cluster already listed and synced, for tests of what reads it. */
  static layerTest(
    options: PortIndexOptions,
    initial: { readonly services?: ReadonlyArray<Service>; readonly nodes?: ReadonlyArray<Node> }
  ): Layer.Layer<ClusterState> {
    const services = initial.services ?? []
    return Layer.effect(
      ClusterState,
      make(options, {
        ...empty,
        services: HashMap.fromIterable(services.map((service) => [serviceKey(service), service] as const)),
        nodes: HashMap.fromIterable((initial.nodes ?? []).map((node) => [node.metadata?.name ?? "", node] as const)),
        index: buildPortIndex(services, options),
        synced: { services: true, nodes: true, slices: true }
      })
    )
  }
}

const empty: ClusterSnapshot = {
  services: HashMap.empty(),
  nodes: HashMap.empty(),
  slices: HashMap.empty(),
  index: emptyPortIndex,
  ownWrites: HashMap.empty(),
  synced: { services: false, nodes: false, slices: false }
}

/** The store after a watch event, and the object it replaced. */
const applyTo = <T>(
  store: HashMap.HashMap<string, T>,
  event: WatchEvent<T>,
  keyOf: (object: T) => string
): { readonly store: HashMap.HashMap<string, T>; readonly previous: T | undefined } => {
  if (event._tag === "Synced") {
    return { store: HashMap.fromIterable(event.items.map((item) => [keyOf(item), item] as const)), previous: undefined }
  }
  const key = keyOf(event.object)
  const previous = Option.getOrUndefined(HashMap.get(store, key))
  return {
    store: event._tag === "Upserted" ? HashMap.set(store, key, event.object) : HashMap.remove(store, key),
    previous
  }
}

const objectKey = (object: { readonly metadata?: { readonly namespace?: string | undefined; readonly name?: string | undefined } | undefined }) =>
  `${object.metadata?.namespace ?? ""}/${object.metadata?.name ?? ""}`

const make = (options: PortIndexOptions, initial: ClusterSnapshot) =>
  Effect.gen(function*() {
    const state = yield* Ref.make(initial)

    const applyService = Effect.fn("ClusterState.applyService")(function*(event: WatchEvent<Service>) {
      return yield* Ref.modify(state, (now): readonly [ServiceChange, ClusterSnapshot] => {
        const { previous, store } = applyTo(now.services, event, serviceKey)
        if (event._tag === "Synced") {
          // Services gone while the watch was down leave no echo to skip.
          const ownWrites = HashMap.filter(now.ownWrites, (_, key) => HashMap.has(store, key))
          return [
            { _tag: "Listed", first: !now.synced.services },
            {
              ...now,
              services: store,
              index: buildPortIndex(HashMap.values(store), options),
              ownWrites,
              synced: { ...now.synced, services: true }
            }
          ]
        }
        const next = event._tag === "Deleted" ? undefined : event.object
        return [
          { _tag: "Changed", previous, next },
          {
            ...now,
            services: store,
            index: updatePortIndex(now.index, previous, next, options),
            ownWrites: next === undefined ? HashMap.remove(now.ownWrites, serviceKey(event.object)) : now.ownWrites
          }
        ]
      })
    })

    const applyNode = Effect.fn("ClusterState.applyNode")(function*(event: WatchEvent<Node>) {
      return yield* Ref.modify(state, (now) => [
        event._tag === "Synced" && !now.synced.nodes,
        {
          ...now,
          nodes: applyTo(now.nodes, event, (node) => node.metadata?.name ?? "").store,
          synced: event._tag === "Synced" ? { ...now.synced, nodes: true } : now.synced
        }
      ] as const)
    })

    const applySlice = Effect.fn("ClusterState.applySlice")(function*(event: WatchEvent<EndpointSlice>) {
      return yield* Ref.modify(state, (now) => [
        event._tag === "Synced"
          ? undefined
          : `${event.object.metadata?.namespace ?? ""}/${event.object.metadata?.labels?.["kubernetes.io/service-name"] ?? ""}`,
        {
          ...now,
          slices: applyTo(now.slices, event, objectKey).store,
          synced: event._tag === "Synced" ? { ...now.synced, slices: true } : now.synced
        }
      ] as const)
    })

    const wrote = Effect.fn("ClusterState.wrote")(function*(service: Service) {
      const version = service.metadata?.resourceVersion
      if (version === undefined) return
      const key = serviceKey(service)
      yield* Ref.update(state, (now) => ({
        ...now,
        ownWrites: HashMap.set(
          now.ownWrites,
          key,
          [...Option.getOrElse(HashMap.get(now.ownWrites, key), (): ReadonlyArray<string> => []).slice(-3), version]
        )
      }))
    })

    const isEcho = Effect.fn("ClusterState.isEcho")(function*(key: string) {
      const now = yield* Ref.get(state)
      const version = Option.getOrUndefined(HashMap.get(now.services, key))?.metadata?.resourceVersion
      return version !== undefined && Option.getOrElse(HashMap.get(now.ownWrites, key), (): ReadonlyArray<string> => []).includes(version)
    })

    return ClusterState.of({
      snapshot: Ref.get(state),
      service: Effect.fn("ClusterState.service")(function*(key: string) {
        return Option.getOrUndefined(HashMap.get((yield* Ref.get(state)).services, key))
      }),
      applyService,
      applyNode,
      applySlice,
      wrote,
      isEcho
    })
  })

// ---------------------------------------------------------------------------------------------
// Reading a snapshot.

/** Whether the controller acts on this Service: ours, or still holding our finalizer. */
export const isRelevant = (service: Service, options: SelectionOptions): boolean =>
  selectService(service, options)._tag !== "NotOurs" || (service.metadata?.finalizers?.includes(FINALIZER) ?? false)

/** The Service under this key in the snapshot. */
export const serviceIn = (snapshot: ClusterSnapshot, key: string): Service | undefined =>
  Option.getOrUndefined(HashMap.get(snapshot.services, key))

/** The InternalIP and ExternalIP addresses of every Node. */
export const nodeAddresses = (snapshot: ClusterSnapshot): ReadonlySet<string> => {
  const addresses = new Set<string>()
  for (const node of HashMap.values(snapshot.nodes)) {
    for (const address of node.status?.addresses ?? []) {
      if (address.type === "InternalIP" || address.type === "ExternalIP") addresses.add(address.address)
    }
  }
  return addresses
}

/**
 * Whose mappings are ours: this cluster's description prefix, pointing at one of its Nodes (or
 * at our own address toward a router).
 */
export const ownershipOf = (
  snapshot: ClusterSnapshot,
  clusterName: string,
  routerAddresses: ReadonlySet<string>
): Ownership => ({ clusterName, nodeAddresses: new Set([...nodeAddresses(snapshot), ...routerAddresses]) })

/** Whether this controller's Node carries the exclude-from-external-load-balancers label. */
export const isExcluded = (snapshot: ClusterSnapshot, nodeName: string | undefined): boolean =>
  nodeName !== undefined &&
  Option.getOrUndefined(HashMap.get(snapshot.nodes, nodeName))?.metadata?.labels?.[EXCLUDE_FROM_LOAD_BALANCERS_LABEL] !== undefined

/** A Warning about traffic not reaching this node (externalTrafficPolicy Local), if any. */
export const localTrafficWarning = (
  snapshot: ClusterSnapshot,
  service: Service,
  nodeName: string | undefined
): string | undefined => {
  if (service.spec?.externalTrafficPolicy !== "Local" || nodeName === undefined || !snapshot.synced.slices) return undefined
  const namespace = service.metadata?.namespace
  const name = service.metadata?.name
  for (const slice of HashMap.values(snapshot.slices)) {
    if (slice.metadata?.namespace !== namespace || slice.metadata?.labels?.["kubernetes.io/service-name"] !== name) continue
    if ((slice.endpoints ?? []).some((endpoint) => endpoint.nodeName === nodeName && endpoint.conditions?.ready !== false)) {
      return undefined
    }
  }
  return `externalTrafficPolicy is Local and node ${nodeName} (the mapping target) has no ready endpoint ` +
    "of this Service: traffic forwarded by the router will be dropped"
}
