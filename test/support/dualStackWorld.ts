/**
 * A controller over one in-memory router and its in-memory IPv6 firewall, every call of the
 * apiserver, router and firewall in one journal, for the dual-stack scenario tests.
 */
import { Effect, Layer } from "effect"
import type { ControllerOptions } from "../../src/controller/Controller.ts"
import { Routers } from "../../src/controller/Routers.ts"
import { Firewall } from "../../src/gateway/Firewall.ts"
import { controllerOver, settle, setup, until } from "./controllerHarness.ts"
import { makeInMemoryFirewall } from "./InMemoryFirewall.ts"
import { journalReader } from "./journal.ts"

/** The fakes, the controller's start (it returns the calls so far), and a wait that returns the calls since. */
export const dualStackWorld = (options: { readonly firewall?: boolean; readonly controller?: Partial<ControllerOptions> } = {}) => {
  const journal: Array<string> = []
  const fakes = setup(options.controller ?? {}, { journal })
  const firewall = makeInMemoryFirewall({ leaseSeconds: 600, journal })
  const routers = options.firewall === false
    ? Routers.layerTest("upnp-igd", fakes.gateway.layer)
    : Layer.merge(Routers.layerTest("upnp-igd", fakes.gateway.layer), Layer.succeed(Firewall, firewall.service))
  const { calls } = journalReader(journal)
  return {
    ...fakes,
    firewall,
    start: Effect.andThen(controllerOver(fakes.kube, routers, options.controller ?? {}), Effect.sync(calls)),
    /** Waits for the condition and for the controller to be idle; the calls since the last look. */
    callsOnce: (description: string, condition: () => boolean) =>
      until(description, condition).pipe(Effect.andThen(settle), Effect.andThen(Effect.sync(calls)))
  }
}
