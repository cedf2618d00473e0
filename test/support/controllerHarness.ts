/**
 * The whole controller (watch → queue → planner → executor) against the in-memory apiserver
 * and router, for scenario tests, and the waits on it (quiescence.ts: signalled, never polled).
 */
import type { Node, Service } from "../../src/kube/objects.ts"
import { Context, Duration, Effect, Fiber, Layer, type Scope } from "effect"
import { TestClock } from "effect/testing"
import { Controller, type ControllerOptions } from "../../src/controller/Controller.ts"
import { Routers } from "../../src/controller/Routers.ts"
import { makeInMemoryGateway } from "./InMemoryGateway.ts"
import { type InMemoryKube, makeInMemoryKube } from "./InMemoryKube.ts"
import { running, until } from "./quiescence.ts"
import { testRecordKey, trustedRecord } from "./records.ts"

export { settle, until } from "./quiescence.ts"

export const node = (name: string, ip: string): Node => ({
  metadata: { name },
  status: { addresses: [{ type: "InternalIP", address: ip }] }
})

/** The seed example's Service (namespace default unless overridden), created on 2026-01-01. */
export const seedService = (
  overrides: Partial<Service["metadata"]> = {},
  spec: Partial<NonNullable<Service["spec"]>> = {}
) =>
  ({
    metadata: {
      name: "http-nginx-service",
      annotations: { "midokura.com/load-balancer-type": "upnp-igd" },
      creationTimestamp: new Date("2026-01-01T00:00:00Z"),
      ...overrides
    },
    spec: {
      type: "LoadBalancer",
      ports: [{ name: "http", port: 8080, nodePort: 30000, protocol: "TCP" }],
      ...spec
    }
  }) satisfies Service

export const SEED_KEY = "default/http-nginx-service"
export const SEED_DESCRIPTION = "kubernetes/default/http-nginx-service/http"

/**
 * A controller over one router of the given protocol. `journal` collects the calls of both
 * fakes in the order they happened (`kube patch default/web`, `router map TCP/8080`).
 */
export const setup = (
  options: Partial<ControllerOptions> = {},
  fakes: {
    readonly protocol?: "upnp-igd" | "pcp" | "nat-pmp"
    readonly journal?: Array<string>
    readonly eventing?: boolean
    readonly announcesRestarts?: boolean
  } = {}
) => {
  const protocol = fakes.protocol ?? "upnp-igd"
  const journalOption = fakes.journal === undefined ? {} : { journal: fakes.journal }
  const kube = makeInMemoryKube([node("node-1", "192.168.77.10"), node("node-2", "192.168.77.11")], journalOption)
  const gateway = makeInMemoryGateway("192.168.77.10", protocol, {
    ...journalOption,
    eventing: fakes.eventing === true,
    ...(fakes.announcesRestarts === undefined ? {} : { announcesRestarts: fakes.announcesRestarts })
  })
  const start = controllerOver(kube, Routers.layerTest(protocol, gateway.layer), options)
  return { kube, gateway, start }
}

/**
 * Builds a controller (a process, as far as the fakes can tell) over this apiserver and these
 * routers (`Routers.layerTest` over an in-memory router): a second one over the same fakes is a
 * restart. It is built by a fiber the TestClock wakes (1 ms on), so `adjust` returns only once
 * that fiber and every fiber it started have suspended: the watches are open, the loops waiting.
 */
export const controllerOver = (
  kube: InMemoryKube,
  routers: Layer.Layer<Routers>,
  options: Partial<ControllerOptions> = {}
) =>
  Effect.gen(function*() {
    const build = Layer.build(
      Controller.layerOver({ probeInterval: Duration.seconds(2), ...options }).pipe(
        Layer.provide(kube.layer),
        Layer.provide(routers),
        Layer.provide(testRecordKey)
      )
    )
    const starting = yield* Effect.forkChild(Effect.andThen(Effect.sleep(STARTED_BY_THE_CLOCK), build))
    yield* TestClock.adjust(STARTED_BY_THE_CLOCK)
    const context = yield* Fiber.join(starting)
    yield* running(Context.get(context, Controller))
    return context
  })

const STARTED_BY_THE_CLOCK = Duration.millis(1)

/**
 * A new one-port Service's first pass, call by call: the port is read, then the record and the
 * finalizer are written, and only then is the router changed; the status follows, and the Events.
 */
export const firstPassCalls = (key: string, port = "TCP/8080"): ReadonlyArray<string> => [
  `router get ${port}`,
  `kube patch ${key}`,
  `router map ${port}`,
  `kube status ${key}`,
  "kube event EnsuredLoadBalancer"
]

/** The reasons of the Events recorded so far, in order. */
export const reasons = (kube: ReturnType<typeof makeInMemoryKube>) => kube.events.map((e) => e.reason)

/** Events are sent in the background: waits for `count` of this reason. */
export const untilEvents = (kube: ReturnType<typeof makeInMemoryKube>, reason: string, count = 1) =>
  until(`${count} ${reason} event(s)`, () => reasons(kube).filter((r) => r === reason).length >= count)

/**
 * A first process for a restart scenario: starts, gets the Service's one port mapped, recorded
 * and announced, then stops (its scope closes: every fiber is gone).
 */
export const runUntilRecorded = (
  start: Effect.Effect<unknown, never, Scope.Scope>,
  kube: InMemoryKube,
  router: { readonly table: ReadonlyMap<string, unknown> },
  service: Service
) =>
  Effect.scoped(Effect.gen(function*() {
    yield* start
    kube.create(service)
    const key = `${service.metadata?.namespace ?? "default"}/${service.metadata?.name}`
    yield* until("mapped and recorded", () => router.table.size === 1 && trustedRecord(kube.get(key)).length === 1)
    yield* untilEvents(kube, "EnsuredLoadBalancer")
  }))
