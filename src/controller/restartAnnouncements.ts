/**
 * A router that announces its restarts (UPnP's SSDP NOTIFY with a new BOOTID.UPNP.ORG) is
 * re-asserted at once, faster than any probe: one listener per router in use, started as the
 * router is. Announcements can be forged by anyone on the LAN, and each starts a full pass, so
 * one router's start at most one pass per RESTART_PASS_WINDOW (restartWindow.ts).
 */
import { Effect, FiberMap, Layer, Stream } from "effect"
import type { Backend } from "../gateway/Mapping.ts"
import { forEachNewRouter } from "./followRouters.ts"
import { FullPass } from "./FullPass.ts"
import * as metrics from "./metrics.ts"
import { RouterEvents } from "./routerEvents.ts"
import { atMostOncePer, RESTART_PASS_WINDOW } from "./restartWindow.ts"
import { type Router, Routers } from "./Routers.ts"

/** Listens to every router's announcements for as long as the layer lives. */
export const restartAnnouncementsLayer = Layer.effectDiscard(Effect.gen(function*() {
  const routers = yield* Routers
  const fullPass = yield* FullPass
  const events = yield* RouterEvents
  const listeners = yield* FiberMap.make<Backend>()

  const reassert = (router: Router) => (announcement: string) =>
    routers.announced(router).pipe(
      Effect.andThen(Effect.logWarning(`${announcement}: the router restarted, re-asserting every mapping`)),
      Effect.andThen(metrics.count(metrics.gatewayReboots)),
      Effect.andThen(router.table.invalidate),
      // Its event subscription went with the restart: made afresh now, not at the renewal's 412.
      Effect.andThen(events.resubscribe(router, announcement)),
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

  yield* forEachNewRouter(listen)
}))
