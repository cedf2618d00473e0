/**
 * An IPv6 firewall in memory that behaves like miniupnpd 2.3.1's (docs/ipv6-field-notes.md):
 * UniqueIDs from 1, from 1 again after a reboot; 606 for a port below 1024; 402 for an
 * UpdatePinhole or DeletePinhole of an unknown UniqueID; a re-sent AddPinhole returns the same
 * UniqueID. Every action lands in the journal (`firewall add TCP/8080 -> 1`), so tests assert
 * the exact sequence of calls.
 */
import { Clock, Effect } from "effect"
import { Firewall, type FirewallError, FirewallUnavailable, type FirewallView } from "../../src/gateway/upnp/Firewall.ts"
import { PinholeError, pinholeFaultMeaning } from "../../src/gateway/upnp/PinholeError.ts"

/** One open pinhole. */
export interface FakePinhole {
  readonly protocol: string
  readonly port: number
  readonly client: string
  expiresAt: number
}

/** The fake's state and controls. */
export interface InMemoryFirewall {
  readonly service: Firewall["Service"]
  readonly pinholes: Map<number, FakePinhole>
  readonly journal: Array<string>
  /** Loses every pinhole and numbers from 1 again; the boot time moves to now. */
  readonly reboot: Effect.Effect<void>
  /** Makes the view fail with this reason (a router without the service), or succeed again (undefined). */
  unavailable: string | undefined
  /** The router gives no uptime. */
  noUptime: boolean
}

export const CONTROL_URL = "http://[2001:db8:2::1]:49536/ctl/IP6FCtl"
export const NODE_ADDRESS = "2001:db8:2::10"

/** A fresh firewall that booted at Clock time `bootedAt`, leases of `leaseSeconds`. */
export const makeInMemoryFirewall = (
  options: {
    readonly leaseSeconds?: number
    readonly bootedAt?: number
    /** A journal shared with other fakes, so one log shows every call in order. */
    readonly journal?: Array<string>
  } = {}
): InMemoryFirewall => {
  const pinholes = new Map<number, FakePinhole>()
  const journal: Array<string> = options.journal ?? []
  const renewed = new Map<number, number>()
  let nextId = 1
  let bootedAt = options.bootedAt ?? 0
  const leaseSeconds = options.leaseSeconds ?? 600
  const fault = (action: string, code: number, request: { internalPort?: number; uniqueId?: number }) =>
    new PinholeError({
      router: CONTROL_URL,
      action,
      code,
      description: code === 606 ? "Action not authorized" : "Invalid Args",
      meaning: pinholeFaultMeaning(action, code, request),
      ...(request.uniqueId === undefined ? {} : { uniqueId: request.uniqueId })
    })

  const state: InMemoryFirewall = {
    pinholes,
    journal,
    unavailable: undefined,
    noUptime: false,
    reboot: Effect.flatMap(Clock.currentTimeMillis, (now) =>
      Effect.sync(() => {
        pinholes.clear()
        nextId = 1
        bootedAt = now
        journal.push("firewall reboot")
      })),
    service: Firewall.of({
      leaseSeconds,
      view: Effect.suspend((): Effect.Effect<FirewallView, FirewallError> =>
        state.unavailable !== undefined
          ? Effect.fail(new FirewallUnavailable({ reason: state.unavailable }))
          : Effect.succeed({ router: CONTROL_URL, nodeAddress: NODE_ADDRESS, bootedAt: state.noUptime ? undefined : bootedAt })
      ),
      add: (request) =>
        Effect.gen(function*() {
          const now = yield* Clock.currentTimeMillis
          const name = `${request.protocol}/${request.port}`
          if (request.port < 1024) {
            journal.push(`firewall add ${name} -> 606`)
            return yield* fault("AddPinhole", 606, { internalPort: request.port })
          }
          const existing = [...pinholes.entries()].find(([, p]) =>
            p.protocol === request.protocol && p.port === request.port && p.client === request.internalClient
          )
          // miniupnpd 2.3.1: the same ID, and an expiry off by the router's uptime.
          const id = existing?.[0] ?? nextId++
          pinholes.set(id, {
            protocol: request.protocol,
            port: request.port,
            client: request.internalClient,
            expiresAt: existing === undefined ? now + request.leaseSeconds * 1000 : 2 * now - bootedAt + request.leaseSeconds * 1000
          })
          renewed.set(id, now)
          journal.push(`firewall add ${name} -> ${id}`)
          return id
        }),
      update: (uniqueId, seconds) =>
        Effect.gen(function*() {
          const now = yield* Clock.currentTimeMillis
          const pinhole = pinholes.get(uniqueId)
          if (pinhole === undefined) {
            journal.push(`firewall update ${uniqueId} -> 402`)
            return yield* fault("UpdatePinhole", 402, { uniqueId })
          }
          pinhole.expiresAt = now + seconds * 1000
          renewed.set(uniqueId, now)
          journal.push(`firewall update ${uniqueId}`)
        }),
      remove: (uniqueId) =>
        Effect.gen(function*() {
          if (!pinholes.has(uniqueId)) {
            journal.push(`firewall delete ${uniqueId} -> 402`)
            return yield* fault("DeletePinhole", 402, { uniqueId })
          }
          pinholes.delete(uniqueId)
          renewed.delete(uniqueId)
          journal.push(`firewall delete ${uniqueId}`)
        }),
      renewedAt: (uniqueId) => Effect.sync(() => renewed.get(uniqueId))
    })
  }
  return state
}
