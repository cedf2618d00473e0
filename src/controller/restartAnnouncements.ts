/**
 * A router that announces its restarts (UPnP's SSDP NOTIFY with a new BOOTID.UPNP.ORG) is
 * re-asserted at once, faster than any probe: one listener per router in use, started as the
 * router is. Announcements can be forged by anyone on the LAN, and each starts a full pass, so
 * one router's start at most one pass per RESTART_PASS_WINDOW (restartWindow.ts).
 */
import { Effect, FiberMap, Layer, Ref, Stream, SubscriptionRef } from "effect"
import type { Backend } from "../gateway/Mapping.ts"
import { FullPass } from "./FullPass.ts"
import * as metrics from "./metrics.ts"
import { atMostOncePer, RESTART_PASS_WINDOW } from "./restartWindow.ts"
import { type Router, Routers } from "./Routers.ts"

/** Listens to every router's announcements for as long as the layer lives. */
export const restartAnnouncementsLayer = Layer.effectDiscard(Effect.gen(function*() {
  const routers = yield* Routers
  const fullPass = yield* FullPass
  const listeners = yield* FiberMap.make<Backend>()
  // The router each listener follows: a router forgotten and registered again gets a new one.
  const followed = yield* Ref.make<ReadonlyMap<Backend, Router>>(new Map())

  const reassert = (router: Router) => (announcement: string) =>
    routers.announced(router).pipe(
      Effect.andThen(Effect.logWarning(`${announcement}: the router restarted, re-asserting every mapping`)),
      Effect.andThen(metrics.count(metrics.gatewayReboots)),
      Effect.andThen(router.table.invalidate),
      Effect.andThen(fullPass.run)
    )

  const listen = (router: Router) => {
    const restarts = router.mapper.restarts
    if (restarts === undefined) return Effect.void
    return Effect.asVoid(FiberMap.run(
      listeners,
      router.backend,
      Effect.scoped(Effect.flatMap(atMostOncePer(RESTART_PASS_WINDOW, reassert(router)), (limited) => Stream.runForEach(restarts, limited)))
    ))
  }

  yield* SubscriptionRef.changes(routers.registry).pipe(
    Stream.runForEach((registered) =>
      Effect.forEach(registered.values(), (router) =>
        Effect.flatMap(
          Ref.modify(followed, (known) =>
            known.get(router.backend) === router ? [false, known] as const : [true, new Map(known).set(router.backend, router)] as const),
          (isNew) => isNew ? listen(router) : Effect.void
        ), { discard: true })
    ),
    Effect.forkScoped
  )
}))
