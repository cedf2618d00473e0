/**
 * The router's table as the router's owner sees it (nftables in `gw`), so that watching it
 * costs miniupnpd nothing, and a check that miniupnpd is still alive.
 */
import { gatewayAlive, loadLab, nftMappings } from "../../test/e2e/support/lab.ts"
import { now, sleep } from "./stats.ts"

export { gatewayAlive, gatewayPid } from "../../test/e2e/support/lab.ts"

export interface TableObservation {
  /** Midpoint of the nft call that first saw the condition. */
  readonly at: number
  readonly count: number
  readonly polls: number
}

/** DNAT rules in miniupnpd's chain whose internal client is the node. */
export async function tableCount(): Promise<number> {
  const nodeIp = loadLab().nodeIp
  return (await nftMappings()).filter((m) => m.internalClient === nodeIp).length
}

/**
 * Polls the table until `condition(count)`; fails with the last count after `timeoutMs`.
 * Listing 1,000 rules costs nft tens of CPU milliseconds on a machine the measured processes
 * share: with `slowUntil`, polls are `slowIntervalMs` apart while the count is below it.
 */
export async function waitTable(
  condition: (count: number) => boolean,
  options: { intervalMs: number; timeoutMs: number; description: string; slowUntil?: number; slowIntervalMs?: number }
): Promise<TableObservation> {
  const deadline = now() + options.timeoutMs
  let polls = 0
  let count = -1
  while (true) {
    const started = now()
    count = await tableCount()
    polls++
    if (condition(count)) return { at: (started + now()) / 2, count, polls }
    if (now() > deadline) throw new Error(`timed out after ${options.timeoutMs} ms waiting for ${options.description}; the table holds ${count}`)
    const interval = options.slowUntil !== undefined && count < options.slowUntil ? (options.slowIntervalMs ?? 1000) : options.intervalMs
    await sleep(Math.max(0, interval - (now() - started)))
  }
}

/**
 * `work`, unless miniupnpd dies first: then fails at once instead of waiting out a timeout (a
 * dead gateway never comes back by itself in the lab).
 */
export async function whileGatewayAlive<T>(work: Promise<T>, what: string | (() => string)): Promise<T> {
  let timer: ReturnType<typeof setInterval> | undefined
  const death = new Promise<never>((_, reject) => {
    timer = setInterval(() => {
      if (!gatewayAlive()) reject(new Error(`miniupnpd died while waiting for ${typeof what === "string" ? what : what()}`))
    }, 250)
  })
  try {
    return await Promise.race([work, death])
  } finally {
    clearInterval(timer)
  }
}
