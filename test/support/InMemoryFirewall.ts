/**
 * An IPv6 firewall in memory that behaves like miniupnpd 2.3.1's (docs/ipv6-field-notes.md), with a
 * UPnP route and, when switched on, a PCP route (low ports too; a nonce per pinhole, deletes
 * only under it):
 * UniqueIDs from 1, from 1 again after a reboot; 606 for a port below 1024; 402 for an
 * UpdatePinhole or DeletePinhole of an unknown UniqueID; a re-sent AddPinhole returns the same
 * UniqueID. Every action lands in the journal (`firewall add TCP/8080 -> 1`), so tests assert
 * the exact sequence of calls.
 */
import { Clock, Effect } from "effect"
import { Firewall, type FirewallError, FirewallUnavailable, type FirewallView } from "../../src/gateway/Firewall.ts"
import { PinholeError, pinholeFaultMeaning } from "../../src/gateway/upnp/PinholeError.ts"
import { PortControlError } from "../../src/gateway/GatewayError.ts"

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
  /** Pinholes opened over PCP, by `TCP/80`: the nonce the router holds. */
  readonly pcpPinholes: Map<string, { nonce: string; expiresAt: number }>
  readonly journal: Array<string>
  /** Loses every pinhole and numbers from 1 again; the boot time moves to now. */
  readonly reboot: Effect.Effect<void>
  /** Makes the view fail with this reason (a router without the service), or succeed again (undefined). */
  unavailable: string | undefined
  /** The router gives no uptime. */
  noUptime: boolean
  /** Whether the UPnP route answers (default yes). */
  upnp: boolean
  /** Whether the PCP route answers (default no): it opens low ports too, and renews by replacing the nonce. */
  pcp: boolean
}

export const CONTROL_URL = "http://[2001:db8:2::1]:49536/ctl/IP6FCtl"
export const NODE_ADDRESS = "2001:db8:2::10"
export const PCP_ROUTER = "pcp://[2001:db8:2::1]:5351"

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
  const renewed = new Map<string, number>()
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

  const pcpPinholes = new Map<string, { nonce: string; expiresAt: number }>()
  let nextNonce = 1
  const routes = (): FirewallView["routes"] => [
    ...(state.upnp ? [{ router: CONTROL_URL, protocol: "upnp-igd" as const, bootedAt: state.noUptime ? undefined : bootedAt, opensLowPorts: false }] : []),
    ...(state.pcp ? [{ router: PCP_ROUTER, protocol: "pcp" as const, bootedAt, opensLowPorts: true }] : [])
  ]
  const pcpKey = (pinhole: { readonly protocol: string; readonly port: number }) => `${pinhole.protocol}/${pinhole.port}`
  const pcpFault = (action: string) => new PortControlError({ router: PCP_ROUTER, protocol: "pcp", action, code: 2 })

  const state: InMemoryFirewall = {
    pinholes,
    pcpPinholes,
    journal,
    unavailable: undefined,
    noUptime: false,
    upnp: true,
    pcp: false,
    reboot: Effect.flatMap(Clock.currentTimeMillis, (now) =>
      Effect.sync(() => {
        pinholes.clear()
        pcpPinholes.clear()
        nextId = 1
        bootedAt = now
        journal.push("firewall reboot")
      })),
    service: Firewall.of({
      leaseSeconds,
      view: Effect.suspend((): Effect.Effect<FirewallView, FirewallError> =>
        state.unavailable !== undefined || routes().length === 0
          ? Effect.fail(new FirewallUnavailable({ reason: state.unavailable ?? "no route" }))
          : Effect.succeed({ nodeAddress: NODE_ADDRESS, routes: routes() })
      ),
      add: (router, request) =>
        Effect.gen(function*() {
          const now = yield* Clock.currentTimeMillis
          const name = `${request.protocol}/${request.port}`
          if (router === PCP_ROUTER) {
            const nonce = String(nextNonce++).padStart(24, "0")
            pcpPinholes.set(name, { nonce, expiresAt: now + request.leaseSeconds * 1000 })
            renewed.set(`${router}#${name}`, now)
            journal.push(`firewall pcp add ${name} -> ${nonce.replace(/^0+/, "n")}`)
            return { nonce }
          }
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
          renewed.set(`${router}#${name}`, now)
          journal.push(`firewall add ${name} -> ${id}`)
          return { uniqueId: id }
        }),
      update: (pinhole, seconds) =>
        Effect.gen(function*() {
          const now = yield* Clock.currentTimeMillis
          const name = pcpKey(pinhole)
          if (pinhole.router === PCP_ROUTER) {
            const held = pcpPinholes.get(name)
            if (held === undefined || held.nonce !== pinhole.nonce) {
              journal.push(`firewall pcp replace ${name} -> 2`)
              return yield* pcpFault("renew")
            }
            const nonce = String(nextNonce++).padStart(24, "0")
            pcpPinholes.set(name, { nonce, expiresAt: now + seconds * 1000 })
            renewed.set(`${pinhole.router}#${name}`, now)
            journal.push(`firewall pcp replace ${name} -> ${nonce.replace(/^0+/, "n")}`)
            return { nonce }
          }
          const uniqueId = pinhole.uniqueId ?? -1
          const held = pinholes.get(uniqueId)
          if (held === undefined) {
            journal.push(`firewall update ${uniqueId} -> 402`)
            return yield* fault("UpdatePinhole", 402, { uniqueId })
          }
          held.expiresAt = now + seconds * 1000
          renewed.set(`${pinhole.router}#${name}`, now)
          journal.push(`firewall update ${uniqueId}`)
          return { uniqueId }
        }),
      remove: (pinhole) =>
        Effect.gen(function*() {
          const name = pcpKey(pinhole)
          if (pinhole.router === PCP_ROUTER) {
            if (pcpPinholes.get(name)?.nonce !== pinhole.nonce) {
              journal.push(`firewall pcp delete ${name} -> 2`)
              return yield* pcpFault("delete")
            }
            pcpPinholes.delete(name)
            renewed.delete(`${pinhole.router}#${name}`)
            journal.push(`firewall pcp delete ${name}`)
            return
          }
          const uniqueId = pinhole.uniqueId ?? -1
          if (!pinholes.has(uniqueId)) {
            journal.push(`firewall delete ${uniqueId} -> 402`)
            return yield* fault("DeletePinhole", 402, { uniqueId })
          }
          pinholes.delete(uniqueId)
          renewed.delete(`${pinhole.router}#${name}`)
          journal.push(`firewall delete ${uniqueId}`)
        }),
      renewedAt: (pinhole) => Effect.sync(() => renewed.get(`${pinhole.router}#${pcpKey(pinhole)}`))
    })
  }
  return state
}
