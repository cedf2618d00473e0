/**
 * Gateway epochs: every NAT-PMP and PCP response carries the seconds since the gateway's
 * mapping table was last reset. A gateway that rebooted (or lost its table any other way)
 * answers with an epoch that went backwards, or that advanced less than the time that passed
 * on our side; then every mapping must be made again. Both RFCs give the test, with slack for
 * clocks that drift and for the 1-second resolution.
 */
import { Clock, Effect, Ref } from "effect"

/** Whose epoch rule applies: NAT-PMP's or PCP's. */
export type EpochRule = "nat-pmp" | "pcp"

/** One epoch a response carried, and when it came. */
export interface EpochSample {
  /** The gateway's epoch, seconds. */
  readonly epoch: number
  /** Our clock when the response arrived, milliseconds. */
  readonly atMillis: number
}

/**
 * Whether `current` shows that the gateway lost its state since `previous`.
 * - NAT-PMP (RFC 6886 §3.6): the epoch is below our conservative estimate,
 *   previous + 7/8 of the elapsed time, by more than 2 seconds.
 * - PCP (RFC 6887 §8.5): the epoch went back by more than 1 second, or the two clocks' deltas
 *   disagree by more than 2 seconds plus 1/16 of either.
 */
export const isStateLost = (rule: EpochRule, previous: EpochSample, current: EpochSample): boolean => {
  const clientDelta = Math.max(0, current.atMillis - previous.atMillis) / 1000
  if (rule === "nat-pmp") return current.epoch < previous.epoch + (clientDelta * 7) / 8 - 2
  if (current.epoch < previous.epoch - 1) return true
  const serverDelta = current.epoch - previous.epoch
  return clientDelta + 2 < serverDelta - serverDelta / 16 || serverDelta + 2 < clientDelta - clientDelta / 16
}

/** What the epochs say: the latest, and whether the gateway lost its state. */
export interface EpochReport {
  /** The latest epoch seen, or undefined before any response. */
  readonly epoch: number | undefined
  /** A loss was seen since the previous report. */
  readonly lostState: boolean
  /** Losses seen since this tracker started. */
  readonly stateLosses: number
}

/** Follows a gateway's epochs to notice a loss of state. */
export interface EpochTracker {
  /** Records a response's epoch; succeeds with true when it reveals a loss of state. */
  readonly observe: (epoch: number) => Effect.Effect<boolean>
  /** The state for `status`; clears `lostState` for the next report. */
  readonly report: Effect.Effect<EpochReport>
}

interface State {
  readonly last: EpochSample | undefined
  readonly pending: boolean
  readonly losses: number
}

/** A tracker for one gateway. */
export const makeEpochTracker = (rule: EpochRule, router: () => string): Effect.Effect<EpochTracker> =>
  Effect.gen(function*() {
    const state = yield* Ref.make<State>({ last: undefined, pending: false, losses: 0 })
    const observe = (epoch: number) =>
      Effect.gen(function*() {
        const atMillis = yield* Clock.currentTimeMillis
        const current: EpochSample = { epoch, atMillis }
        const { lost, previous } = yield* Ref.modify(state, (s) => {
          const lost = s.last !== undefined && isStateLost(rule, s.last, current)
          return [
            { lost, previous: s.last },
            { last: current, pending: s.pending || lost, losses: s.losses + (lost ? 1 : 0) }
          ]
        })
        if (lost && previous !== undefined) {
          yield* Effect.logWarning("the gateway lost its mappings: its epoch went backwards or lagged behind the time elapsed", {
            router: router(),
            previousEpoch: previous.epoch,
            epoch,
            elapsedSeconds: Math.round((atMillis - previous.atMillis) / 100) / 10
          })
        }
        return lost
      })
    const report = Ref.modify(state, (s): readonly [EpochReport, State] => [
      { epoch: s.last?.epoch, lostState: s.pending, stateLosses: s.losses },
      { ...s, pending: false }
    ])
    return { observe, report }
  })
