/**
 * A gateway in memory for the exchange and epoch tests: an `OpenSocket` whose sockets record
 * every datagram sent (with the TestClock time) and receive whatever the test injects, so that
 * retransmission can be timed under TestClock without any network.
 */
import { Clock, Effect, Queue, Ref } from "effect"
import { NetAddress } from "effect/net"
import { DatagramSocket } from "effect/socket"
import type { OpenSocket } from "../../../src/gateway/portcontrol/Exchange.ts"

export interface Sent {
  readonly payload: Uint8Array
  readonly to: string
  readonly atMillis: number
}

export interface Incoming {
  readonly payload: Uint8Array
  readonly address: string
  readonly port: number
}

export interface MemoryGateway {
  readonly open: OpenSocket
  readonly sent: Effect.Effect<ReadonlyArray<Sent>>
  /** Delivers a datagram to every open socket. */
  readonly deliver: (datagram: Incoming) => Effect.Effect<void>
  /** The sockets opened so far (one per exchange). */
  readonly opened: Effect.Effect<number>
}

/**
 * `answer` is called for every datagram sent, with the count sent so far; what it returns is
 * delivered at once.
 */
export const makeMemoryGateway = (
  answer: (payload: Uint8Array, count: number) => ReadonlyArray<Incoming> = () => []
): Effect.Effect<MemoryGateway> =>
  Effect.gen(function*() {
    const sent = yield* Ref.make<ReadonlyArray<Sent>>([])
    const queues = yield* Ref.make<ReadonlyArray<Queue.Queue<DatagramSocket.Datagram>>>([])
    const opened = yield* Ref.make(0)

    const deliver = (datagram: Incoming) =>
      Effect.flatMap(Ref.get(queues), (all) =>
        Effect.forEach(all, (queue) =>
          Queue.offer(queue, {
            payload: datagram.payload,
            address: NetAddress.inetAddressFromIpStringUnsafe(datagram.address, datagram.port)
          }), { discard: true }))

    const open: OpenSocket = (localAddress) =>
      Effect.gen(function*() {
        yield* Ref.update(opened, (n) => n + 1)
        const queue = yield* Queue.unbounded<DatagramSocket.Datagram>()
        const reader = Effect.gen(function*() {
          yield* Ref.update(queues, (all) => [...all, queue])
          yield* Effect.addFinalizer(() => Ref.update(queues, (all) => all.filter((q) => q !== queue)))
          const reader: DatagramSocket.Reader = {
            pull: Effect.map(Queue.take(queue), (datagram) => [datagram] as const),
            address: NetAddress.inetAddressFromIpStringUnsafe(localAddress, 40000),
            dropped: () => 0,
            joinMulticast: () => Effect.die(new Error("no multicast in memory"))
          }
          return reader
        })
        const writer = Effect.succeed<DatagramSocket.Writer>({
          write: (datagram) =>
            Effect.gen(function*() {
              const atMillis = yield* Clock.currentTimeMillis
              const payload = typeof datagram.payload === "string" ? new TextEncoder().encode(datagram.payload) : datagram.payload
              const to = datagram.address !== undefined && NetAddress.isInetAddress(datagram.address)
                ? NetAddress.formatInet(datagram.address)
                : "?"
              const count = yield* Ref.modify(sent, (all) => [all.length + 1, [...all, { payload, to, atMillis }]] as const)
              yield* Effect.forEach(answer(payload, count), deliver, { discard: true })
            }),
          writeAll: () => Effect.die(new Error("writeAll is not used"))
        })
        return DatagramSocket.make({ reader, writer })
      })

    return { open, sent: Ref.get(sent), deliver, opened: Ref.get(opened) }
  })
