/**
 * Leader election on a `coordination.k8s.io/v1` Lease, following client-go's leaderelection
 * package:
 *
 * - expiry is judged by when *this* candidate last saw the record change, never by the
 *   holder's clock, so clock skew between nodes does not matter;
 * - acquire and renew are replaces carrying the resourceVersion: of two candidates racing
 *   for a free Lease, one gets 409 and loses;
 * - a leader that cannot renew within the renew deadline stops leading at once, before its
 *   lease can expire for anyone else (renew deadline < lease duration);
 * - on graceful shutdown the leader releases the Lease (empty holder, 1 s duration), so
 *   another candidate takes over within one retry period.
 */
import {
  Clock,
  Context,
  Duration,
  Effect,
  Layer,
  Metric,
  Option,
  Random,
  Ref,
  Schedule,
  SubscriptionRef
} from "effect"
import { Kube, type Lease } from "../kube/Kube.ts"
import { microTime } from "../kube/requests.ts"
import type { KubeConflict, KubeError, KubeNotFound } from "../kube/KubeError.ts"

/** A Lease with the metadata every write needs. */
export type NamedLease = Lease & { readonly metadata: { readonly namespace: string; readonly name: string } }
/** A Lease with its resourceVersion, the precondition of a replace. */
export type VersionedLease = Lease & {
  readonly metadata: { readonly namespace: string; readonly name: string; readonly resourceVersion: string }
}

/** The three Lease calls leader election makes. */
export interface LeaseStoreService {
  readonly get: (namespace: string, name: string) => Effect.Effect<Lease | undefined, KubeError>
  /** `KubeConflict` when it already exists. */
  readonly create: (lease: NamedLease) => Effect.Effect<Lease, KubeConflict | KubeError>
  /** `KubeConflict` when the resourceVersion is stale. */
  readonly replace: (lease: VersionedLease) => Effect.Effect<Lease, KubeConflict | KubeNotFound | KubeError>
}

/** Where the Lease lives: the apiserver (`layerKube`; the tests keep one in memory). */
export class LeaseStore extends Context.Service<LeaseStore, LeaseStoreService>()("edge-ccm/runtime/LeaseStore") {
  static readonly layerKube: Layer.Layer<LeaseStore, never, Kube> = Layer.effect(
    LeaseStore,
    Effect.gen(function*() {
      const kube = yield* Kube
      const service: LeaseStoreService = { get: kube.getLease, create: kube.createLease, replace: kube.replaceLease }
      return service
    })
  )
}

/** The Lease, our identity in it, and its timings (client-go's when left out). */
export interface LeaderElectionOptions {
  readonly namespace: string
  /** Lease name, e.g. `edge-cloud-controller-manager`. */
  readonly name: string
  /** This candidate's holder identity: the pod name. */
  readonly identity: string
  /** How long a Lease stays valid after its last renewal (default 15 s). */
  readonly leaseDuration?: Duration.Input | undefined
  /** How long the leader keeps trying to renew before it gives up leading (default 10 s). */
  readonly renewDeadline?: Duration.Input | undefined
  /** Pause between attempts to acquire or renew (default 2 s). */
  readonly retryPeriod?: Duration.Input | undefined
}

/** `edge_ccm_leader{lease}`: 1 while this process leads, else 0. */
export const leaderGauge = Metric.gauge("edge_ccm_leader", {
  description: "1 while this process holds the leader Lease, else 0"
})

/** Leader election's operations. */
export interface LeaderElectionService {
  /**
   * Campaigns, runs `effect` while leading, and interrupts it the moment renewal fails;
   * then campaigns again and restarts it on the next win. Returns when `effect` completes
   * or fails while leading. Interrupting `run` (shutdown) releases the Lease.
   */
  readonly run: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  /** Whether this process leads now; for readiness and logs. */
  readonly isLeader: SubscriptionRef.SubscriptionRef<boolean>
  /**
   * The holder recorded in the Lease as last observed (empty when free), or `undefined` until
   * the Lease has been read once.
   */
  readonly observedHolder: Effect.Effect<string | undefined>
  readonly identity: string
}

interface Observed {
  readonly lease: Lease | undefined
  /** Local time at which the record last changed, as seen by this candidate. */
  readonly at: number
}


/** Builds a candidate over `LeaseStore`. */
export const make = Effect.fn("LeaderElection.make")(function*(options: LeaderElectionOptions) {
  const store = yield* LeaseStore
  const leaseDuration = Duration.fromInputUnsafe(options.leaseDuration ?? Duration.seconds(15))
  const renewDeadline = Duration.fromInputUnsafe(options.renewDeadline ?? Duration.seconds(10))
  const retryPeriod = Duration.fromInputUnsafe(options.retryPeriod ?? Duration.seconds(2))
  if (Duration.isGreaterThanOrEqualTo(renewDeadline, leaseDuration)) {
    return yield* Effect.die(new Error("leader election: the renew deadline must be shorter than the lease duration"))
  }
  const isLeader = yield* SubscriptionRef.make(false)
  const observed = yield* Ref.make<Observed>({ lease: undefined, at: 0 })
  const gauge = Metric.withAttributes(leaderGauge, { lease: `${options.namespace}/${options.name}` })
  // From the start, so a standby's /metrics says 0 rather than nothing.
  yield* Metric.update(gauge, 0)
  const seconds = Math.max(1, Math.round(Duration.toSeconds(leaseDuration)))

  const setLeader = (leading: boolean) =>
    SubscriptionRef.set(isLeader, leading).pipe(Effect.andThen(Metric.update(gauge, leading ? 1 : 0)))

  const remember = (lease: Lease | undefined, now: number) =>
    Ref.update(observed, (previous) =>
      previous.lease?.metadata?.resourceVersion === lease?.metadata?.resourceVersion && previous.lease !== undefined
        ? previous
        : { lease, at: now })

  /** One round of client-go's `tryAcquireOrRenew`: true when we hold the Lease afterwards. */
  const tryAcquireOrRenew: Effect.Effect<boolean, KubeError | KubeConflict | KubeNotFound> = Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    const current = yield* store.get(options.namespace, options.name)
    if (current === undefined) {
      const created = yield* store.create({
        apiVersion: "coordination.k8s.io/v1",
        kind: "Lease",
        metadata: { namespace: options.namespace, name: options.name },
        spec: {
          holderIdentity: options.identity,
          leaseDurationSeconds: seconds,
          acquireTime: microTime(now),
          renewTime: microTime(now),
          leaseTransitions: 0
        }
      })
      yield* remember(created, now)
      return true
    }
    yield* remember(current, now)
    const seen = yield* Ref.get(observed)
    const holder = current.spec?.holderIdentity ?? ""
    const ours = holder === options.identity
    const duration = (current.spec?.leaseDurationSeconds ?? seconds) * 1000
    if (holder !== "" && !ours && seen.at + duration > now) return false
    const resourceVersion = current.metadata?.resourceVersion ?? ""
    const renewed = yield* store.replace({
      ...current,
      apiVersion: "coordination.k8s.io/v1",
      kind: "Lease",
      metadata: { ...current.metadata, namespace: options.namespace, name: options.name, resourceVersion },
      spec: {
        ...current.spec,
        holderIdentity: options.identity,
        leaseDurationSeconds: seconds,
        acquireTime: ours && current.spec?.acquireTime !== undefined ? current.spec.acquireTime : microTime(now),
        renewTime: microTime(now),
        leaseTransitions: (current.spec?.leaseTransitions ?? 0) + (ours ? 0 : 1)
      }
    })
    yield* remember(renewed, now)
    return true
  })

  /**
   * A round that never fails: errors and lost races count as "not now". A lost race (409) is
   * normal; anything else (a missing namespace, RBAC) is said once per distinct reason.
   */
  let lastFailure = ""
  const attempt = tryAcquireOrRenew.pipe(
    Effect.tap(() => Effect.sync(() => void (lastFailure = ""))),
    Effect.catch((error) => {
      const repeated = error.message === lastFailure
      lastFailure = error.message
      const log = error._tag === "KubeConflict" || repeated
        ? Effect.logDebug("leader election attempt failed")
        : Effect.logWarning(`cannot take or renew the leader Lease ${options.namespace}/${options.name}; retrying`)
      return log.pipe(Effect.annotateLogs({ error: error.message }), Effect.as(false))
    })
  )

  const jitteredRetry = Effect.flatMap(
    Random.nextBetween(1, 1.2),
    (factor) => Effect.sleep(Duration.times(retryPeriod, factor))
  )

  /** Until we hold the Lease, retrying every retry period (jittered, as client-go does). */
  const acquire = Effect.gen(function*() {
    while (!(yield* attempt)) yield* jitteredRetry
  })

  /**
   * Renews every retry period; completes when a renewal round could not succeed within the
   * renew deadline: from then on another candidate may take over, so we must stop.
   */
  const renewUntilLost = Effect.gen(function*() {
    while (true) {
      yield* Effect.sleep(retryPeriod)
      const renewed = yield* attempt.pipe(
        Effect.repeat({ until: (ok) => ok, schedule: Schedule.spaced(retryPeriod) }),
        Effect.timeoutOption(renewDeadline)
      )
      if (Option.isNone(renewed)) return
    }
  })

  /**
   * Hands the Lease back so the next candidate need not wait for it to expire. A renewal
   * interrupted by the shutdown may have landed unseen: a stale resourceVersion is read again
   * once, and the Lease released if it still names us.
   */
  const release = Effect.gen(function*() {
    const { lease } = yield* Ref.get(observed)
    if (lease?.spec?.holderIdentity !== options.identity || lease.metadata?.resourceVersion === undefined) return
    yield* releaseFrom(lease, lease.metadata.resourceVersion).pipe(
      Effect.catchTag("KubeConflict", () =>
        store.get(options.namespace, options.name).pipe(
          Effect.flatMap((current) =>
            current?.spec?.holderIdentity === options.identity && current.metadata?.resourceVersion !== undefined
              ? releaseFrom(current, current.metadata.resourceVersion)
              : Effect.void
          )
        )
      ),
      Effect.catch((error) =>
        Effect.logWarning("could not release the leader Lease; it expires on its own").pipe(
          Effect.annotateLogs({ error: error.message })
        )
      ),
      Effect.timeoutOption(renewDeadline)
    )
  })

  const releaseFrom = Effect.fnUntraced(function*(lease: Lease, resourceVersion: string) {
    const now = yield* Clock.currentTimeMillis
    const released = yield* store.replace({
      ...lease,
      metadata: { ...lease.metadata, namespace: options.namespace, name: options.name, resourceVersion },
      spec: {
        ...lease.spec,
        holderIdentity: "",
        leaseDurationSeconds: 1,
        acquireTime: microTime(now),
        renewTime: microTime(now)
      }
    })
    yield* remember(released, now)
    yield* Effect.logInfo("released the leader Lease")
  })

  const run = <A, E, R>(effect: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
    Effect.gen(function*() {
      while (true) {
        yield* acquire
        yield* setLeader(true)
        yield* Effect.logInfo("became leader")
        const outcome = yield* Effect.raceFirst(
          Effect.map(effect, Option.some),
          Effect.as(renewUntilLost, Option.none<A>())
        )
        if (Option.isSome(outcome)) return outcome.value
        yield* setLeader(false)
        yield* Effect.logWarning("lost the leader Lease: stopped, campaigning again")
      }
    }).pipe(
      // Release whenever the last record we saw names us, even if we were interrupted
      // between winning and noticing it.
      Effect.ensuring(Effect.uninterruptible(release.pipe(Effect.andThen(setLeader(false))))),
      Effect.annotateLogs({ lease: `${options.namespace}/${options.name}`, identity: options.identity })
    )

  const service: LeaderElectionService = {
    run,
    isLeader,
    observedHolder: Effect.map(Ref.get(observed), (o) => o.lease === undefined ? undefined : o.lease.spec?.holderIdentity ?? ""),
    identity: options.identity
  }
  return service
})

/** Runs an effect only while this process holds the Lease. */
export class LeaderElection extends Context.Service<LeaderElection, LeaderElectionService>()(
  "edge-ccm/runtime/LeaderElection"
) {
  /** A candidate over the given store (`LeaseStore.layerKube` in production). */
  static layer(options: LeaderElectionOptions): Layer.Layer<LeaderElection, never, LeaseStore> {
    return Layer.effect(LeaderElection, make(options))
  }
}
