/**
 * What a router's answer calls for, done in one place for the probe loop, the resync and the
 * reads an event NOTIFY cues.
 */
import { Effect } from "effect"
import { FullPass } from "./FullPass.ts"
import type { ProbeVerdict } from "./Routers.ts"

/**
 * Does what a probe's (or a re-read's) verdict calls for: a full pass after a reboot, every
 * Service requeued after a new address. The one place either happens for a verdict.
 */
export const actOnVerdict = (verdict: ProbeVerdict) =>
  Effect.flatMap(FullPass, (fullPass) => {
    switch (verdict._tag) {
      case "Reassert":
        return Effect.logWarning(`${verdict.why}: re-asserting every mapping`).pipe(Effect.andThen(fullPass.run))
      case "AlreadyReasserted":
        return Effect.log(`${verdict.why}: already re-asserted since`)
      case "AddressChanged":
        return Effect.log(`router external address is now ${verdict.ip ?? "missing"}`).pipe(
          Effect.andThen(fullPass.enqueueAll(false))
        )
      case "Failed":
        return Effect.logWarning(`gateway probe failed: ${verdict.error.message}`)
      case "Quiet":
        return Effect.void
    }
  })

