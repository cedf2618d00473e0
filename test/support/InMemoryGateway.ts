/**
 * An in-memory router with miniupnpd's semantics: one mapping per external port and
 * protocol, 718 for a port held by another host, a silent overwrite for the same host,
 * 606 for deleting another host's mapping in secure mode, 501 behind a double NAT, and a
 * reboot that loses everything and restarts the uptime. Spoken to as PCP, it cannot be read
 * (no get, no list), deletes only with the mapping's nonce, and counts lost state. It can also
 * be a router that reports success and creates nothing (`dropsAdds`), which only a read-back
 * after the add, or a later listing, can tell. Like a real router, it reports what is left of a
 * lease it granted (by the Clock, so TestClock runs it down).
 */
import { Cause, Clock, Effect, Layer, Queue, Stream } from "effect"
import { DoubleNat, GatewayProtocolError, GatewayUnreachable, PortConflict, UpnpError } from "../../src/gateway/GatewayError.ts"
import type { GatewayError } from "../../src/gateway/GatewayError.ts"
import type { ExternalIpClass, GrantedMapping, MappingEntry } from "../../src/gateway/Mapping.ts"
import { PortMapper } from "../../src/gateway/PortMapper.ts"
import { EventSubscriptionFailed, type WanEvent } from "../../src/gateway/upnp/Eventing.ts"
import { changed } from "./quiescence.ts"

export const ROUTER = "http://192.168.77.1:49536/ctl/IPConn"

export interface InMemoryGateway {
  readonly layer: Layer.Layer<PortMapper>
  readonly table: Map<string, MappingEntry>
  /** Every router call, in order: `map TCP/8080`, `unmap TCP/8080`, `get TCP/8080`, `list`, `status`. */
  readonly calls: Array<string>
  /** PCP: the nonce that owns each mapping, by `TCP/8080`. */
  readonly nonces: Map<string, string>
  /** The adds that asked to be read back (`TCP/8080`). */
  readonly readBacks: Array<string>
  readonly state: {
    localAddress: string
    externalIp: string | undefined
    externalClass: ExternalIpClass
    uptime: number
    reachable: boolean
    secureMode: boolean
    stateLosses: number
    dropsAdds: boolean
    /** What `selection` and `status` say about the router in use (undefined: nothing). */
    selection: string | undefined
  }
  /** Loses every mapping and restarts the uptime; `announce` also sends what SSDP's NOTIFY would. */
  readonly reboot: (options?: { readonly announce?: boolean }) => void
  /** Sends what SSDP's NOTIFY with a new BOOTID would, without a reboot (a spoofed one). */
  readonly announce: (announcement: string) => void
  /**
   * With `eventing`: the router's event subscriptions as GENA would make them. `notify` sends
   * the current subscriber a NOTIFY of the router's present address and status (as miniupnpd
   * writes the body when it sends); `lose` ends the subscription as a refused renewal does.
   */
  readonly eventing: {
    /** SIDs granted, in order; the last is alive unless unsubscribed. */
    readonly granted: Array<string>
    readonly unsubscribed: Array<string>
    /** Whether SUBSCRIBE is refused with 412 (the watch fails). */
    refuses: boolean
    /** Whether SUBSCRIBE goes unanswered (the watch is still trying). */
    unanswered: boolean
    readonly notify: (connectionStatus?: string) => void
    readonly lose: (reason: string) => void
  }
  /** A mapping made by someone else on the LAN. */
  readonly addForeign: (entry: Partial<MappingEntry> & Pick<MappingEntry, "externalPort" | "protocol">) => void
}

export const makeInMemoryGateway = (
  localAddress = "192.168.77.10",
  /** NAT-PMP and PCP cannot be read; NAT-PMP deletes by internal port, PCP by nonce. */
  protocol: "upnp-igd" | "pcp" | "nat-pmp" = "upnp-igd",
  options: {
    /** A log shared with the Kubernetes fake: every call appended as `router map TCP/8080`. */
    readonly journal?: Array<string>
    /** UPnP only: the router offers events (GENA); without it, it has no event URL. */
    readonly eventing?: boolean
    /** UPnP only: its restarts are heard (SSDP, found by discovery; default); not with a URL given. */
    readonly announcesRestarts?: boolean
  } = {}
): InMemoryGateway => {
  const readable = protocol === "upnp-igd"
  const table = new Map<string, MappingEntry>()
  const nonces = new Map<string, string>()
  // When each finite lease the router granted runs out (Clock ms), by `TCP/8080`.
  const expiries = new Map<string, number>()
  const calls: Array<string> = []
  const readBacks: Array<string> = []
  let drawn = 0
  const restartListeners = new Set<(announcement: string) => void>()
  const router = readable ? ROUTER : "192.168.77.1:5351"
  const state = {
    localAddress,
    externalIp: "122.112.219.229" as string | undefined,
    externalClass: "public" as ExternalIpClass,
    uptime: 1000,
    reachable: true,
    secureMode: false,
    stateLosses: 0,
    dropsAdds: false,
    selection: undefined as string | undefined
  }
  const key = (port: number, protocol: string) => `${protocol}/${port}`
  /** The entry as the router reports it: a granted finite lease shows the seconds left of it. */
  const reported = (entry: MappingEntry, now: number): MappingEntry => {
    const expiry = expiries.get(key(entry.externalPort, entry.protocol))
    return expiry === undefined ? entry : { ...entry, leaseDuration: Math.max(1, Math.ceil((expiry - now) / 1000)) }
  }
  const call = <A, E>(name: string, effect: () => Effect.Effect<A, E>) =>
    Effect.suspend((): Effect.Effect<A, E | GatewayUnreachable> => {
      calls.push(name)
      options.journal?.push(`router ${name}`)
      if (!state.reachable) {
        return Effect.fail(new GatewayUnreachable({ router: ROUTER, action: name, reason: "connection refused" }))
      }
      return effect()
    }).pipe(Effect.ensuring(Effect.sync(changed)))

  // The one subscriber's queue and its SEQ, while a subscription is alive.
  interface Subscriber {
    readonly offer: (event: WanEvent) => void
    readonly refused: () => void
  }
  let subscriber: { readonly sid: string; seq: number; readonly to: Subscriber } | undefined
  const eventing: InMemoryGateway["eventing"] = {
    granted: [],
    unsubscribed: [],
    refuses: false,
    unanswered: false,
    notify: (connectionStatus = "Connected") => {
      const current = subscriber
      if (current === undefined) return
      const seq = current.seq++
      current.to.offer({ _tag: "ExternalIPAddressChanged", externalIp: state.externalIp ?? "0.0.0.0", previous: undefined, sid: current.sid, seq })
      current.to.offer({ _tag: "ConnectionStatusChanged", status: connectionStatus, previous: undefined, sid: current.sid, seq })
    },
    lose: (reason) => {
      const current = subscriber
      if (current === undefined) return
      subscriber = undefined
      current.to.offer({ _tag: "SubscriptionLost", sid: current.sid, reason })
      subscribe(current.to)
    }
  }
  /** A SUBSCRIBE: granted, with its initial NOTIFY, or refused (the watch then fails). */
  const subscribe = (to: Subscriber) => {
    changed()
    if (eventing.refuses) {
      calls.push("subscribe refused")
      return to.refused()
    }
    if (eventing.unanswered) {
      calls.push("subscribe unanswered")
      return
    }
    const sid = `uuid:in-memory-${eventing.granted.length + 1}`
    eventing.granted.push(sid)
    calls.push("subscribe")
    subscriber = { sid, seq: 0, to }
    to.offer({ _tag: "Subscribed", sid, timeoutSeconds: 1800 })
    eventing.notify()
  }
  const events = Stream.callback<WanEvent, EventSubscriptionFailed>((queue) =>
    Effect.acquireRelease(
      Effect.sync(() =>
        subscribe({
          offer: (event) => void Queue.offerUnsafe(queue, event),
          refused: () =>
            void Queue.failCauseUnsafe(
              queue,
              Cause.fail(
                new EventSubscriptionFailed({ router: "192.168.77.1", eventUrl: `${ROUTER}/evt`, reason: "SUBSCRIBE answered HTTP 412" })
              )
            )
        })
      ),
      () =>
        Effect.sync(() => {
          const current = subscriber
          if (current === undefined) return
          subscriber = undefined
          eventing.unsubscribed.push(current.sid)
          calls.push("unsubscribe")
          changed()
        })
    )
  )

  const mapper = PortMapper.of({
    capabilities: {
      readsTable: readable,
      deletesByInternalPort: protocol === "nat-pmp",
      // PCP: nonces the controller records, drawn by the backend, as PcpGateway does.
      drawNonce: protocol === "pcp" ? Effect.sync(() => `${(++drawn).toString(16).padStart(24, "0")}`) : undefined
    },
    ...(readable && options.announcesRestarts !== false
      ? {
        restarts: Stream.callback<string>((queue) =>
          Effect.acquireRelease(
            Effect.sync(() => {
              const listener = (announcement: string) => void Queue.offerUnsafe(queue, announcement)
              restartListeners.add(listener)
              return listener
            }),
            (listener) => Effect.sync(() => restartListeners.delete(listener))
          )
        )
      }
      : {}),
    ...(readable && options.eventing === true ? { events } : {}),
    selection: Effect.sync(() => state.selection),
    externalAddress: call("externalAddress", () =>
      Effect.succeed({ ip: state.externalIp, class: state.externalClass })),
    status: call("status", () =>
      Effect.succeed({
        router,
        protocol,
        connected: true,
        uptimeSeconds: state.uptime,
        stateLosses: state.stateLosses,
        externalAddress: { ip: state.externalIp, class: state.externalClass },
        localAddress: state.localAddress,
        selection: state.selection
      })),
    map: (request) =>
      call(`map ${key(request.externalPort, request.protocol)}`, () => Effect.flatMap(Clock.currentTimeMillis, (now): Effect.Effect<GrantedMapping, GatewayError> => {
        if (state.externalClass !== "public") {
          return Effect.fail(new DoubleNat({ router: ROUTER, reason: "forwarding disabled: private WAN address" }))
        }
        const client = request.internalClient ?? state.localAddress
        const existing = table.get(key(request.externalPort, request.protocol))
        if (existing !== undefined && existing.internalClient !== client) {
          return Effect.fail(
            new PortConflict({
              router: ROUTER,
              externalPort: request.externalPort,
              protocol: request.protocol,
              holder: existing.internalClient,
              reason: "UPnP error 718 (ConflictInMappingEntry)"
            })
          )
        }
        const entry: MappingEntry = {
          externalPort: request.externalPort,
          protocol: request.protocol,
          internalClient: client,
          internalPort: request.internalPort,
          description: request.description,
          leaseDuration: request.leaseSeconds,
          enabled: true,
          remoteHost: ""
        }
        const readBack = readable && request.readBack !== false
        if (readBack) readBacks.push(key(request.externalPort, request.protocol))
        if (state.dropsAdds) {
          return readBack
            ? Effect.fail(
              new GatewayProtocolError({
                router: ROUTER,
                action: "AddPortMapping",
                reason: "the router reported success but holds no such mapping"
              })
            )
            : Effect.succeed({ ...entry, leaseSeconds: request.leaseSeconds })
        }
        table.set(key(request.externalPort, request.protocol), entry)
        if (request.leaseSeconds > 0) expiries.set(key(request.externalPort, request.protocol), now + request.leaseSeconds * 1000)
        else expiries.delete(key(request.externalPort, request.protocol))
        if (protocol !== "pcp") return Effect.succeed({ ...entry, leaseSeconds: request.leaseSeconds })
        const nonce = request.nonce ?? `drawn-by-router-${request.externalPort}`
        nonces.set(key(request.externalPort, request.protocol), nonce)
        return Effect.succeed({ ...entry, leaseSeconds: request.leaseSeconds, nonce })
      })),
    unmap: (mapping) =>
      call(`unmap ${key(mapping.externalPort, mapping.protocol)}`, (): Effect.Effect<void, GatewayError> => {
        if (protocol === "nat-pmp") {
          // RFC 6886 §3.4: a lifetime of 0 deletes this client's mapping of that internal port,
          // whatever external port it has.
          for (const [at, entry] of table) {
            if (entry.protocol === mapping.protocol && entry.internalPort === mapping.internalPort &&
                entry.internalClient === state.localAddress) {
              table.delete(at)
              expiries.delete(at)
            }
          }
          return Effect.void
        }
        const existing = table.get(key(mapping.externalPort, mapping.protocol))
        if (protocol === "pcp" && existing !== undefined && nonces.get(key(mapping.externalPort, mapping.protocol)) !== mapping.nonce) {
          return Effect.fail(
            new PortConflict({
              router,
              externalPort: mapping.externalPort,
              protocol: mapping.protocol,
              holder: existing.internalClient,
              reason: "PCP NOT_AUTHORIZED: another nonce owns this mapping"
            })
          )
        }
        if (existing !== undefined && state.secureMode && existing.internalClient !== state.localAddress) {
          return Effect.fail(
            new UpnpError({ router: ROUTER, action: "DeletePortMapping", code: 606, description: "Action not authorized" })
          )
        }
        table.delete(key(mapping.externalPort, mapping.protocol))
        expiries.delete(key(mapping.externalPort, mapping.protocol))
        return Effect.void
      }),
    get: (externalPort, mapped) =>
      call(`get ${key(externalPort, mapped)}`, () =>
        Effect.map(Clock.currentTimeMillis, (now) => {
          const entry = readable ? table.get(key(externalPort, mapped)) : undefined
          return entry === undefined ? undefined : reported(entry, now)
        })),
    list: call("list", () =>
      Effect.map(Clock.currentTimeMillis, (now) => readable ? [...table.values()].map((entry) => reported(entry, now)) : undefined))
  })

  return {
    layer: Layer.succeed(PortMapper, mapper),
    table,
    calls,
    nonces,
    readBacks,
    state,
    announce: (announcement) => {
      for (const listener of restartListeners) listener(announcement)
    },
    reboot: (options) => {
      table.clear()
      expiries.clear()
      nonces.clear()
      state.uptime = 1
      state.stateLosses += 1
      if (options?.announce === true) for (const listener of restartListeners) listener(`${ROUTER} announced a new BOOTID.UPNP.ORG`)
    },
    eventing,
    addForeign: (entry) => {
      expiries.delete(key(entry.externalPort, entry.protocol))
      table.set(key(entry.externalPort, entry.protocol), {
        internalClient: "192.168.77.50",
        internalPort: entry.externalPort,
        description: "someone else's game",
        leaseDuration: 0,
        enabled: true,
        remoteHost: "",
        ...entry
      })
    }
  }
}
