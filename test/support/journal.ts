/**
 * Reading a journal the in-memory fakes share, one look at a time: each look returns the calls
 * since the previous one, the router's probes (which run on their own clock) left out.
 */
const isProbe = (call: string) => call === "router status" || call === "router externalAddress"

/** A reader of `journal` that starts at its beginning. */
export const journalReader = (journal: ReadonlyArray<string>) => {
  let mark = 0
  return {
    /** The calls since the last look, probes left out; the next look starts after them. */
    calls: (): Array<string> => {
      const since = journal.slice(mark).filter((call) => !isProbe(call))
      mark = journal.length
      return since
    },
    /** The next look starts here: what came before is not looked at. */
    skip: (): void => {
      mark = journal.length
    }
  }
}
