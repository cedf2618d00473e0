/** Small assertions over Effect outcomes and wire bytes that several test files share. */
import { assert } from "@effect/vitest"
import { Effect, Exit, Option, Stream, SubscriptionRef } from "effect"

/** The typed failure of `effect`; a success or a defect fails the test, naming what came instead. */
export const failureOf = <A, E>(effect: Effect.Effect<A, E>): Effect.Effect<E> =>
  Effect.gen(function*() {
    const exit = yield* Effect.exit(effect)
    if (Exit.isSuccess(exit)) return assert.fail(`expected a failure, got ${JSON.stringify(exit.value)}`)
    const error = exit.cause.reasons.find((reason) => reason._tag === "Fail")
    if (error === undefined || error._tag !== "Fail") return assert.fail(`not a typed failure: ${String(exit.cause)}`)
    return error.error
  })

/** A big-endian unsigned 16-bit field of a datagram. */
export const u16 = (bytes: Uint8Array, at: number) => (bytes[at]! << 8) | bytes[at + 1]!

/** Waits until `count` of the ref's value reaches `minimum`, and returns that value. */
export const awaitAtLeast = <A>(ref: SubscriptionRef.SubscriptionRef<A>, count: (value: A) => number, minimum: number) =>
  SubscriptionRef.changes(ref).pipe(
    Stream.filter((value) => count(value) >= minimum),
    Stream.runHead,
    Effect.map(Option.getOrThrow)
  )
