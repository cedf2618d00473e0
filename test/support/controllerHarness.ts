/**
 * The whole controller (watch → queue → planner → executor) against the in-memory apiserver
 * and router, for scenario tests, and the helpers that let its fibers run.
 */
import type { Node, Service } from "../../src/kube/objects.ts"
import { Duration, Effect, Layer } from "effect"
import { Controller, type ControllerOptions } from "../../src/controller/Controller.ts"
import { Routers } from "../../src/controller/Routers.ts"
import { makeInMemoryGateway } from "./InMemoryGateway.ts"
import { type InMemoryKube, makeInMemoryKube } from "./InMemoryKube.ts"
import { testRecordKey } from "./records.ts"

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
  fakes: { readonly protocol?: "upnp-igd" | "pcp" | "nat-pmp"; readonly journal?: Array<string> } = {}
) => {
  const protocol = fakes.protocol ?? "upnp-igd"
  const journalOption = fakes.journal === undefined ? {} : { journal: fakes.journal }
  const kube = makeInMemoryKube([node("node-1", "192.168.77.10"), node("node-2", "192.168.77.11")], journalOption)
  const gateway = makeInMemoryGateway("192.168.77.10", protocol, journalOption)
  const start = controllerOver(kube, Routers.layerTest(protocol, gateway.layer), options)
  return { kube, gateway, start }
}

/**
 * Builds a controller (a process, as far as the fakes can tell) over this apiserver and these
 * routers (`Routers.layerTest` over an in-memory router): a second one over the same fakes is a
 * restart.
 */
export const controllerOver = (
  kube: InMemoryKube,
  routers: Layer.Layer<Routers>,
  options: Partial<ControllerOptions> = {}
) =>
  Layer.build(
    Controller.layerOver({ probeInterval: Duration.seconds(2), ...options }).pipe(
      Layer.provide(kube.layer),
      Layer.provide(routers),
      Layer.provide(testRecordKey)
    )
  )

/** Lets the controller's fibers run until the condition holds (bounded: fails with the description). */
export const until = (description: string, condition: () => boolean) =>
  Effect.gen(function*() {
    for (let round = 0; round < 2_000; round++) {
      if (condition()) return
      yield* Effect.yieldNow
    }
    return yield* Effect.die(new Error(`condition never held: ${description}`))
  })

/** Lets every fiber that can make progress do so, for assertions that something did NOT happen. */
export const settle = Effect.gen(function*() {
  for (let round = 0; round < 500; round++) yield* Effect.yieldNow
})

export const reasons = (kube: ReturnType<typeof makeInMemoryKube>) => kube.events.map((e) => e.reason)

/** Events are sent in the background: waits for `count` of this reason. */
export const untilEvents = (kube: ReturnType<typeof makeInMemoryKube>, reason: string, count = 1) =>
  until(`${count} ${reason} event(s)`, () => reasons(kube).filter((r) => r === reason).length >= count)
