/**
 * An in-memory router with miniupnpd's semantics: one mapping per external port and
 * protocol, 718 for a port held by another host, a silent overwrite for the same host,
 * 606 for deleting another host's mapping in secure mode, 501 behind a double NAT, and a
 * reboot that loses everything and restarts the uptime.
 */
import { Effect, Layer } from "effect"
import { DoubleNat, GatewayUnreachable, PortConflict, UpnpError } from "../../src/gateway/GatewayError.ts"
import type { GatewayError } from "../../src/gateway/GatewayError.ts"
import type { ExternalIpClass, GrantedMapping, MappingEntry } from "../../src/gateway/Mapping.ts"
import { PortMapper } from "../../src/gateway/PortMapper.ts"

export const ROUTER = "http://192.168.77.1:49536/ctl/IPConn"

export interface InMemoryGateway {
  readonly layer: Layer.Layer<PortMapper>
  readonly table: Map<string, MappingEntry>
  /** Every router call, in order: `map TCP/8080`, `unmap TCP/8080`, `get TCP/8080`, `list`, `status`. */
  readonly calls: Array<string>
  readonly state: {
    localAddress: string
    externalIp: string | undefined
    externalClass: ExternalIpClass
    uptime: number
    reachable: boolean
    secureMode: boolean
  }
  readonly reboot: () => void
  /** A mapping made by someone else on the LAN. */
  readonly addForeign: (entry: Partial<MappingEntry> & Pick<MappingEntry, "externalPort" | "protocol">) => void
}

export const makeInMemoryGateway = (localAddress = "192.168.77.10"): InMemoryGateway => {
  const table = new Map<string, MappingEntry>()
  const calls: Array<string> = []
  const state = {
    localAddress,
    externalIp: "122.112.219.229" as string | undefined,
    externalClass: "public" as ExternalIpClass,
    uptime: 1000,
    reachable: true,
    secureMode: false
  }
  const key = (port: number, protocol: string) => `${protocol}/${port}`
  const call = <A, E>(name: string, effect: () => Effect.Effect<A, E>) =>
    Effect.suspend((): Effect.Effect<A, E | GatewayUnreachable> => {
      calls.push(name)
      if (!state.reachable) {
        return Effect.fail(new GatewayUnreachable({ router: ROUTER, action: name, reason: "connection refused" }))
      }
      return effect()
    })

  const mapper = PortMapper.of({
    externalAddress: call("externalAddress", () =>
      Effect.succeed({ ip: state.externalIp, class: state.externalClass })),
    status: call("status", () =>
      Effect.succeed({
        router: ROUTER,
        protocol: "upnp-igd" as const,
        connected: true,
        uptimeSeconds: state.uptime,
        externalAddress: { ip: state.externalIp, class: state.externalClass },
        localAddress: state.localAddress
      })),
    map: (request) =>
      call(`map ${key(request.externalPort, request.protocol)}`, (): Effect.Effect<GrantedMapping, GatewayError> => {
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
        table.set(key(request.externalPort, request.protocol), entry)
        return Effect.succeed({ ...entry, leaseSeconds: request.leaseSeconds })
      }),
    unmap: (mapping) =>
      call(`unmap ${key(mapping.externalPort, mapping.protocol)}`, () => {
        const existing = table.get(key(mapping.externalPort, mapping.protocol))
        if (existing !== undefined && state.secureMode && existing.internalClient !== state.localAddress) {
          return Effect.fail(
            new UpnpError({ router: ROUTER, action: "DeletePortMapping", code: 606, description: "Action not authorized" })
          )
        }
        table.delete(key(mapping.externalPort, mapping.protocol))
        return Effect.void
      }),
    get: (externalPort, protocol) =>
      call(`get ${key(externalPort, protocol)}`, () => Effect.succeed(table.get(key(externalPort, protocol)))),
    list: call("list", () => Effect.succeed([...table.values()]))
  })

  return {
    layer: Layer.succeed(PortMapper, mapper),
    table,
    calls,
    state,
    reboot: () => {
      table.clear()
      state.uptime = 1
    },
    addForeign: (entry) =>
      void table.set(key(entry.externalPort, entry.protocol), {
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
