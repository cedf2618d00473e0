/**
 * Reads of single ports, batched across callers. Requests for ports of one protocol within one
 * range of the client's range size (128 ports), made within a few milliseconds by any fiber, are
 * answered by one GetListOfPortMappings from the lowest of their ports to the highest, so a
 * burst of Services checks its ports with a handful of router calls instead of one per port,
 * and each answer holds only the entries between them, not the whole range's. A lone request,
 * a router without IGDv2, or one whose listing turns out unusable, gets
 * GetSpecificPortMappingEntry per port.
 *
 * One call per range is in flight at a time: a read made while one is waits for its answer and
 * joins the next, which is sent after the read was made (so its answer is never older than the
 * read). In a burst, the reads that pile up behind one call share the next.
 */
import { Duration, Effect, Exit, Latch, Request, RequestResolver } from "effect"
import type { MappingEntry, Protocol } from "../Mapping.ts"
import { type IgdClient, isListingUnusable } from "./IgdClient.ts"
import type { SoapError } from "./SoapTransport.ts"

interface PortRead extends Request.Request<MappingEntry | undefined, SoapError> {
  readonly _tag: "PortRead"
  readonly client: IgdClient
  readonly externalPort: number
  readonly protocol: Protocol
}

const PortRead = Request.tagged<PortRead>("PortRead")

/** How long a read waits for others to share its listing. */
const BATCH_WINDOW = Duration.millis(3)

/** Reads of single ports; reads made at the same moment share one listing of their range. */
export const makePortReads = () => {
  // Routers (by control URL) found not to list ranges: read port by port from then on.
  const noRanges = new Set<string>()

  // The range's call in flight, if any: opened when it is answered.
  const inFlight = new Map<string, Latch.Latch>()
  const rangeKey = (client: IgdClient, protocol: Protocol, externalPort: number) =>
    `${client.endpoint.controlUrl} ${protocol} ${client.rangeOf(externalPort)}`

  const one = (read: PortRead) => read.client.getSpecificPortMappingEntry(read.externalPort, read.protocol)

  const eachAlone = (entries: ReadonlyArray<Request.Entry<PortRead>>) =>
    Effect.forEach(entries, (entry) => Effect.exit(one(entry.request)).pipe(Effect.map((exit) => entry.completeUnsafe(exit))), {
      concurrency: "unbounded",
      discard: true
    })

  const grouped = RequestResolver.makeGrouped<PortRead, string>({
    key: ({ request }) => rangeKey(request.client, request.protocol, request.externalPort),
    resolver: (entries, key) => {
      const answered = Latch.makeUnsafe(false)
      inFlight.set(key, answered)
      return Effect.gen(function*() {
        const { client, protocol } = entries[0].request
        const router = client.endpoint.controlUrl
        if (entries.length === 1 || !client.endpoint.igdV2 || noRanges.has(router)) return yield* eachAlone(entries)
        const ports = entries.map((entry) => entry.request.externalPort)
        const listed = yield* Effect.exit(client.listSpan(protocol, Math.min(...ports), Math.max(...ports)))
        if (Exit.isFailure(listed)) {
          const error = listed.cause.reasons.find((reason) => reason._tag === "Fail")?.error
          if (error !== undefined && isListingUnusable(error)) {
            noRanges.add(router)
            return yield* eachAlone(entries)
          }
          for (const entry of entries) entry.completeUnsafe(Exit.failCause(listed.cause))
          return
        }
        // An entry the listing could not decode might be any port: ask those ports one by one.
        if (listed.value.unreadable > 0) return yield* eachAlone(entries)
        const byPort = new Map(listed.value.entries.map((entry) => [entry.externalPort, entry]))
        for (const entry of entries) entry.completeUnsafe(Exit.succeed(byPort.get(entry.request.externalPort)))
      }).pipe(Effect.ensuring(Effect.sync(() => {
        if (inFlight.get(key) === answered) inFlight.delete(key)
        answered.openUnsafe()
      })))
    }
  })

  // Reads from Services reconciled side by side arrive a few milliseconds apart: wait that long.
  const resolver = RequestResolver.setDelay(grouped, BATCH_WINDOW)

  /** The mapping on one port, or undefined; batched with the reads made within `BATCH_WINDOW`. */
  return (client: IgdClient, externalPort: number, protocol: Protocol): Effect.Effect<MappingEntry | undefined, SoapError> =>
    Effect.suspend(() => {
      const read = Effect.request(PortRead({ client, externalPort, protocol }), resolver)
      const pending = inFlight.get(rangeKey(client, protocol, externalPort))
      return pending === undefined ? read : Effect.andThen(pending.await, read)
    })
}
