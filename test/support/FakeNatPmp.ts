/**
 * An in-process NAT-PMP + PCP server on 127.0.0.1, with miniupnpd 2.3.1's semantics where the
 * RFCs leave room (a taken external port moves the mapping to the next free one, NAT-PMP
 * deletes by internal port and answers success whether or not anything was there, a PCP
 * deletion that finds nothing answers NO_RESOURCES) and the RFC's where miniupnpd is lax (a
 * PCP renewal under another nonce is NOT_AUTHORIZED). It parses requests by byte offset, on its
 * own, so it checks the client's encoding rather than sharing it.
 *
 * Faults: silence, dropped requests, garbage before the answer, a forged answer first (from
 * another port, from another address, for another nonce), a forced result code, another port
 * granted, NAT-PMP only, and a reboot that empties the table and restarts the epoch (or an
 * epoch set by hand). Never leaves loopback.
 */
import * as NodeDatagramSocket from "@effect/platform-node/NodeDatagramSocket"
import { Effect, type Scope, SubscriptionRef } from "effect"
import { NetAddress } from "effect/net"
import type { MappingRequest } from "../../src/gateway/Mapping.ts"
import { awaitAtLeast } from "./outcomes.ts"

/** The seed Service's port as a mapping request: what the NAT-PMP and PCP tests ask for. */
export const seedRequest: MappingRequest = {
  externalPort: 8080,
  protocol: "TCP",
  internalPort: 30000,
  description: "kubernetes/default/http-nginx-service/http",
  leaseSeconds: 3600
}

export const LOOPBACK = "127.0.0.1"
/** Another loopback address, for answers that must come from somewhere other than the gateway. */
export const OTHER_LOOPBACK = "127.0.0.2"

export interface ReceivedRequest {
  readonly bytes: Uint8Array
  readonly version: number
  readonly opcode: number
  /** Seconds (bytes 8-11 for NAT-PMP mapping requests, 4-7 for PCP). */
  readonly lifetime: number | undefined
  readonly fromAddress: string
  readonly fromPort: number
  /** Date.now() when it arrived. */
  readonly at: number
}

export interface FakeMapping {
  readonly kind: "nat-pmp" | "pcp"
  readonly protocol: "TCP" | "UDP"
  readonly externalPort: number
  readonly internalClient: string
  readonly internalPort: number
  readonly lifetime: number
  /** PCP: 24 hex digits. */
  readonly nonce: string | undefined
}

export type Forgery =
  /** A valid-looking answer from the gateway's address but another port, sent first. */
  | "wrong-port"
  /** A valid-looking answer from another address (127.0.0.2), sent first. */
  | "wrong-address"
  /** PCP: an answer for another nonce, sent first. */
  | "other-nonce"

export interface Faults {
  /** Record requests, answer none. */
  silent: boolean
  /** Drop this many of the next requests without answering (counts down). */
  drop: number
  /** Sent before every answer. */
  garbage: ReadonlyArray<Uint8Array>
  /** A forged answer before every real one; forged answers grant port 1 and epoch 1. */
  forge: Forgery | undefined
  /** Answer requests with this result code (and nothing else changes)... */
  resultCode: number | undefined
  /** ...all of them, or only mapping requests (NAT-PMP opcodes 1 and 2, PCP MAP with a lifetime). */
  resultCodeOn: "all" | "map"
  /** The external port granted for a requested one (default: miniupnpd's next free port). */
  grantPort: ((requested: number) => number) | undefined
  /** Answer PCP requests as a NAT-PMP-only gateway does (version 0, UNSUPPORTED_VERSION). */
  natpmpOnly: boolean
  /** The epoch reported; undefined: seconds since start (or the last reboot). */
  epoch: number | undefined
  /** PCP deletions answer with the zero address, as RFC 6887 erratum 3621 says (miniupnpd reports the real one). */
  zeroAddressOnDelete: boolean
}

export interface FakeNatPmp {
  readonly address: string
  readonly port: number
  /** The gateway's external address; private or empty = double NAT / no WAN. */
  externalAddress: string
  readonly faults: Faults
  readonly table: Map<string, FakeMapping>
  readonly requests: Effect.Effect<ReadonlyArray<ReceivedRequest>>
  /** Waits until at least `count` requests have arrived. */
  readonly awaitRequests: (count: number) => Effect.Effect<ReadonlyArray<ReceivedRequest>>
  /** Empties the table and restarts the epoch at 0. */
  readonly reboot: () => void
  /** Adds a mapping held by another LAN host. */
  readonly addForeign: (mapping: Omit<FakeMapping, "internalClient"> & { readonly internalClient?: string }) => void
}

const RESERVED = [/^10\./, /^192\.168\./, /^172\.(1[6-9]|2\d|3[01])\./, /^100\.(6[4-9]|[7-9]\d|1[01]\d|12[0-7])\./, /^0\./]
const isPublic = (ip: string) => ip !== "" && !RESERVED.some((pattern) => pattern.test(ip))

const ipv4Bytes = (ip: string): Array<number> => ip === "" ? [0, 0, 0, 0] : ip.split(".").map(Number)
const mappedBytes = (ip: string): Array<number> => [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, ...ipv4Bytes(ip)]
const hex = (bytes: Uint8Array) => Buffer.from(bytes).toString("hex")

export const make = (options: { readonly externalAddress?: string } = {}): Effect.Effect<FakeNatPmp, never, Scope.Scope> =>
  Effect.gen(function*() {
    const socket = yield* NodeDatagramSocket.make({ bind: { address: LOOPBACK, port: 0 } })
    const otherPort = yield* NodeDatagramSocket.make({ bind: { address: LOOPBACK, port: 0 } })
    const otherAddress = yield* NodeDatagramSocket.make({ bind: { address: OTHER_LOOPBACK, port: 0 } })
    const listener = yield* Effect.orDie(socket.reader)
    yield* Effect.orDie(otherPort.reader)
    yield* Effect.orDie(otherAddress.reader)
    const writer = yield* socket.writer
    const otherPortWriter = yield* otherPort.writer
    const otherAddressWriter = yield* otherAddress.writer
    const port = listener.address.port

    const requests = yield* SubscriptionRef.make<ReadonlyArray<ReceivedRequest>>([])
    const table = new Map<string, FakeMapping>()
    let started = Date.now()
    const faults: Faults = {
      silent: false,
      drop: 0,
      garbage: [],
      forge: undefined,
      resultCode: undefined,
      resultCodeOn: "all",
      grantPort: undefined,
      natpmpOnly: false,
      epoch: undefined,
      zeroAddressOnDelete: false
    }
    const fake: FakeNatPmp = {
      address: LOOPBACK,
      port,
      externalAddress: options.externalAddress ?? "122.112.219.229",
      faults,
      table,
      requests: SubscriptionRef.get(requests),
      awaitRequests: (count) => awaitAtLeast(requests, (all) => all.length, count),
      reboot: () => {
        table.clear()
        started = Date.now()
        faults.epoch = undefined
      },
      addForeign: (mapping) => {
        table.set(`${mapping.protocol}/${mapping.externalPort}`, { internalClient: "192.168.77.50", ...mapping })
      }
    }
    const epoch = () => faults.epoch ?? Math.floor((Date.now() - started) / 1000)
    const key = (protocol: string, port: number) => `${protocol}/${port}`

    /** miniupnpd: the suggested port, else the internal one; a port held by another moves to the next. */
    const place = (protocol: "TCP" | "UDP", suggested: number, client: string, internalPort: number): number => {
      if (faults.grantPort !== undefined) return faults.grantPort(suggested)
      let port = suggested === 0 ? internalPort : suggested
      for (;;) {
        const held = table.get(key(protocol, port))
        if (held === undefined || (held.internalClient === client && held.internalPort === internalPort)) return port
        port = port === 65535 ? 1 : port + 1
      }
    }

    const natpmp = (request: Uint8Array, client: string): Uint8Array | undefined => {
      if (request.length < 2 || request[1]! >= 128) return undefined
      const opcode = request[1]!
      const header = (code: number, length: number) => {
        const out = Buffer.alloc(length)
        out[0] = 0
        out[1] = 128 + opcode
        out.writeUInt16BE(code, 2)
        out.writeUInt32BE(epoch(), 4)
        return out
      }
      if (request[0] !== 0) return header(1, 8)
      if (faults.resultCode !== undefined && (faults.resultCodeOn === "all" || opcode === 1 || opcode === 2)) {
        const out = header(faults.resultCode, opcode === 0 ? 12 : opcode <= 2 ? 16 : 8)
        // miniupnpd echoes the internal port in a failed mapping response.
        if (out.length === 16 && request.length >= 6) out.set(request.subarray(4, 6), 8)
        return out
      }
      if (opcode === 0) {
        if (!isPublic(fake.externalAddress)) return header(3, 12)
        const out = header(0, 12)
        out.set(ipv4Bytes(fake.externalAddress), 8)
        return out
      }
      if (opcode !== 1 && opcode !== 2) return header(5, 8)
      if (request.length < 12) return undefined
      const view = Buffer.from(request)
      const protocol = opcode === 1 ? "UDP" : "TCP"
      const internalPort = view.readUInt16BE(4)
      const suggested = view.readUInt16BE(6)
      const lifetime = view.readUInt32BE(8)
      const out = header(0, 16)
      let externalPort = 0
      if (lifetime === 0) {
        for (const [k, m] of table) {
          if (m.kind === "nat-pmp" && m.internalClient === client && m.protocol === protocol && m.internalPort === internalPort) {
            table.delete(k)
          }
        }
      } else if (internalPort === 0) {
        out.writeUInt16BE(2, 2)
      } else {
        externalPort = place(protocol, suggested, client, internalPort)
        table.set(key(protocol, externalPort), {
          kind: "nat-pmp",
          protocol,
          externalPort,
          internalClient: client,
          internalPort,
          lifetime,
          nonce: undefined
        })
      }
      out.writeUInt16BE(internalPort, 8)
      out.writeUInt16BE(externalPort, 10)
      out.writeUInt32BE(lifetime, 12)
      return out
    }

    const pcp = (request: Uint8Array, client: string): Uint8Array | undefined => {
      if (faults.natpmpOnly) {
        const out = Buffer.alloc(8)
        out[1] = 128 + (request[1]! & 0x7f)
        out.writeUInt16BE(1, 2)
        out.writeUInt32BE(epoch(), 4)
        return out
      }
      if (request.length < 24 || (request[1]! & 0x80) !== 0) return undefined
      const out = Buffer.from(request)
      out[1] = request[1]! | 0x80
      out[2] = 0
      out.fill(0, 12, 24)
      out.writeUInt32BE(epoch(), 8)
      const answer = (code: number, lifetime: number) => {
        out[3] = code
        out.writeUInt32BE(lifetime, 4)
        return out
      }
      if (request[0] !== 2) {
        out[0] = 2
        return answer(1, 0)
      }
      if (faults.resultCode !== undefined && (faults.resultCodeOn === "all" || Buffer.from(request).readUInt32BE(4) !== 0)) {
        return answer(faults.resultCode, 30)
      }
      const opcode = request[1]! & 0x7f
      if (opcode !== 1) return answer(4, 0)
      if (request.length < 60) return answer(3, 0)
      const view = Buffer.from(request)
      if (hex(request.subarray(8, 24)) !== hex(Uint8Array.from(mappedBytes(client)))) return answer(12, 0)
      const lifetime = view.readUInt32BE(4)
      const nonce = hex(request.subarray(24, 36))
      const protocol = request[36] === 6 ? "TCP" : request[36] === 17 ? "UDP" : undefined
      if (protocol === undefined) return answer(9, 0)
      const internalPort = view.readUInt16BE(40)
      const suggested = view.readUInt16BE(42)
      const existing = Array.from(table.entries()).find(([, m]) =>
        m.kind === "pcp" && m.internalClient === client && m.protocol === protocol && m.internalPort === internalPort
      )
      // miniupnpd checks the external address before it creates or deletes anything.
      if (fake.externalAddress === "") return answer(7, 30)
      if (lifetime === 0) {
        if (!faults.zeroAddressOnDelete) out.set(mappedBytes(fake.externalAddress), 44)
        if (existing === undefined) return answer(8, 30)
        if (existing[1].nonce !== nonce) return answer(2, 0)
        table.delete(existing[0])
        return answer(0, 0)
      }
      if (existing !== undefined && existing[1].nonce !== nonce) return answer(2, 0)
      const externalPort = existing !== undefined && suggested === existing[1].externalPort
        ? existing[1].externalPort
        : place(protocol, suggested, client, internalPort)
      if (existing !== undefined) table.delete(existing[0])
      table.set(key(protocol, externalPort), {
        kind: "pcp",
        protocol,
        externalPort,
        internalClient: client,
        internalPort,
        lifetime,
        nonce
      })
      out.writeUInt16BE(externalPort, 42)
      out.set(mappedBytes(fake.externalAddress), 44)
      return answer(0, lifetime)
    }

    /** A copy of `real` that must not be believed: granted port 1, epoch 1, and another nonce if asked. */
    const forged = (real: Uint8Array, forgery: Forgery): Uint8Array => {
      const out = Buffer.from(real)
      if (out[0] === 0 && out.length >= 16) out.writeUInt16BE(1, 10)
      if (out[0] === 0 && out.length >= 8) out.writeUInt32BE(1, 4)
      if (out[0] === 2 && out.length >= 60) {
        out.writeUInt32BE(1, 8)
        out.writeUInt16BE(1, 42)
        if (forgery === "other-nonce") out[24] = out[24]! ^ 0xff
      }
      return out
    }

    const handle = (payload: Uint8Array, from: NetAddress.InetAddress) =>
      Effect.gen(function*() {
        const client = NetAddress.formatIp(from.address)
        const view = Buffer.from(payload)
        const version = payload[0] ?? -1
        const lifetime = version === 0 && payload.length >= 12
          ? view.readUInt32BE(8)
          : version === 2 && payload.length >= 8
          ? view.readUInt32BE(4)
          : undefined
        yield* SubscriptionRef.update(requests, (all) => [...all, {
          bytes: Uint8Array.from(payload),
          version,
          opcode: payload[1] ?? -1,
          lifetime,
          fromAddress: client,
          fromPort: from.port,
          at: Date.now()
        }])
        if (faults.silent) return
        if (faults.drop > 0) {
          faults.drop -= 1
          return
        }
        const reply = version === 0 ? natpmp(payload, client) : pcp(payload, client)
        if (reply === undefined) return
        const to = NetAddress.inetAddressUnsafe(from.address, from.port)
        for (const garbage of faults.garbage) yield* Effect.orDie(writer.write({ payload: garbage, address: to }))
        if (faults.forge !== undefined) {
          const source = faults.forge === "wrong-port" ? otherPortWriter : faults.forge === "wrong-address" ? otherAddressWriter : writer
          yield* Effect.orDie(source.write({ payload: forged(reply, faults.forge), address: to }))
        }
        yield* Effect.orDie(writer.write({ payload: reply, address: to }))
      })

    yield* listener.pull.pipe(
      Effect.flatMap((batch) => Effect.forEach(batch, (datagram) => handle(datagram.payload, datagram.address), { discard: true })),
      Effect.forever,
      Effect.ignore,
      Effect.forkScoped
    )
    return fake
  })
