/**
 * Starts something for each router as it is registered (a router forgotten and registered again
 * counts as new): the restart listeners and the event subscriptions follow the registry so.
 */
import { Effect, Ref, type Scope, Stream, SubscriptionRef } from "effect"
import type { Backend } from "../gateway/Mapping.ts"
import { type Router, Routers } from "./Routers.ts"

/** Runs `start` once for every router registered from now on, in a fiber of the current scope. */
export const forEachNewRouter = (start: (router: Router) => Effect.Effect<void>): Effect.Effect<void, never, Routers | Scope.Scope> =>
  Effect.gen(function*() {
    const routers = yield* Routers
    // The router each one follows: a router forgotten and registered again gets a new one.
    const followed = yield* Ref.make<ReadonlyMap<Backend, Router>>(new Map())
    yield* SubscriptionRef.changes(routers.registry).pipe(
      Stream.runForEach((registered) =>
        Effect.forEach(registered.values(), (router) =>
          Effect.flatMap(
            Ref.modify(followed, (known) =>
              known.get(router.backend) === router ? [false, known] as const : [true, new Map(known).set(router.backend, router)] as const),
            (isNew) => isNew ? start(router) : Effect.void
          ), { discard: true })
      ),
      Effect.forkScoped
    )
  })
