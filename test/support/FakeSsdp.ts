/**
 * An in-process SSDP responder on 127.0.0.1, with the faults real routers have: it answers
 * from a different source port than it listens on (TP-Link), can answer each search more
 * than once, can send garbage first, and can stay silent. It also sends NOTIFY
 * advertisements to a port of the caller's choosing. Never touches a real network.
 */
import * as NodeDatagramSocket from "@effect/platform-node/NodeDatagramSocket"
import { Effect, type Scope, SubscriptionRef } from "effect"
import { NetAddress } from "effect/net"
import { awaitAtLeast } from "./outcomes.ts"

export const LOOPBACK = "127.0.0.1"

export interface ReceivedSearch {
  readonly text: string
  /** Lower-cased header names. */
  readonly headers: Readonly<Record<string, string>>
  readonly searchTarget: string | undefined
  readonly fromPort: number
}

export interface FakeSsdpOptions {
  /** A loopback address to listen and answer on. Default 127.0.0.1. */
  readonly address?: string
  /** The port to listen on. Default: an ephemeral one. */
  readonly port?: number
  /** The datagrams to answer one M-SEARCH with. Default: one IGD:1 reply echoing the ST. */
  readonly answer?: (search: ReceivedSearch, fake: { readonly port: number }) => ReadonlyArray<string | Uint8Array>
  /** Record searches but never answer (Eero to unicast, or a network without a gateway). */
  readonly silent?: boolean
  /** Send every answer this many times. Default 1. */
  readonly repeat?: number
  /** Datagrams sent before the answers. */
  readonly garbage?: ReadonlyArray<string | Uint8Array>
  /** Answer from the port the M-SEARCH arrived on; by default another port answers (TP-Link). */
  readonly answerFromListenPort?: boolean
}

export interface FakeSsdp {
  readonly address: string
  /** The port it listens for M-SEARCH on. */
  readonly port: number
  /** The port its answers come from. */
  readonly answerPort: number
  readonly searches: Effect.Effect<ReadonlyArray<ReceivedSearch>>
  /** Waits until at least `count` searches have arrived. */
  readonly awaitSearches: (count: number) => Effect.Effect<ReadonlyArray<ReceivedSearch>>
  /** How many datagrams it has sent (answers, repeats and garbage). */
  readonly sent: Effect.Effect<number>
  readonly awaitSent: (count: number) => Effect.Effect<number>
  /** Sends datagrams to 127.0.0.1:port from the answer socket (e.g. NOTIFY advertisements). */
  readonly sendTo: (port: number, datagrams: ReadonlyArray<string | Uint8Array>) => Effect.Effect<void>
}

const decoder = new TextDecoder()

const parseSearch = (payload: Uint8Array, fromPort: number): ReceivedSearch => {
  const text = decoder.decode(payload)
  const headers: Record<string, string> = {}
  for (const line of text.split("\r\n").slice(1)) {
    const colon = line.indexOf(":")
    if (colon > 0) headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim()
  }
  return { text, headers, searchTarget: headers["st"], fromPort }
}

export const make = (options: FakeSsdpOptions = {}): Effect.Effect<FakeSsdp, never, Scope.Scope> =>
  Effect.gen(function*() {
    const address = options.address ?? LOOPBACK
    if (!NetAddress.isLoopback(NetAddress.ipFromStringUnsafe(address))) {
      return yield* Effect.die(new Error(`FakeSsdp listens on loopback only, not ${address}`))
    }
    const listenSocket = yield* NodeDatagramSocket.make({ bind: { address, port: options.port ?? 0 } })
    const answerSocket = yield* NodeDatagramSocket.make({ bind: { address, port: 0 } })
    const listener = yield* Effect.orDie(listenSocket.reader)
    const answerer = yield* Effect.orDie(answerSocket.reader)
    const listenWriter = yield* listenSocket.writer
    const answerWriter = yield* answerSocket.writer
    const port = listener.address.port
    const answerPort = options.answerFromListenPort === true ? port : answerer.address.port
    const writer = options.answerFromListenPort === true ? listenWriter : answerWriter

    const searches = yield* SubscriptionRef.make<ReadonlyArray<ReceivedSearch>>([])
    const sent = yield* SubscriptionRef.make(0)
    const answer = options.answer ?? ((search: ReceivedSearch, fake: { readonly port: number }) => [
      searchReply({
        location: `http://${address}:${fake.port}/rootDesc.xml`,
        st: search.searchTarget ?? "urn:schemas-upnp-org:device:InternetGatewayDevice:1"
      })
    ])

    const sendAll = (address: NetAddress.InetAddress, datagrams: ReadonlyArray<string | Uint8Array>) =>
      Effect.forEach(
        datagrams,
        (payload) =>
          writer.write({ payload, address }).pipe(
            Effect.orDie,
            Effect.andThen(SubscriptionRef.update(sent, (n) => n + 1))
          ),
        { discard: true }
      )

    yield* listener.pull.pipe(
      Effect.flatMap((batch) =>
        Effect.forEach(batch, (datagram) => {
          const search = parseSearch(datagram.payload, datagram.address.port)
          const reply = NetAddress.inetAddressUnsafe(datagram.address.address, datagram.address.port)
          return SubscriptionRef.update(searches, (all) => [...all, search]).pipe(
            Effect.andThen(
              options.silent === true ? Effect.void : Effect.gen(function*() {
                yield* sendAll(reply, options.garbage ?? [])
                const answers = answer(search, { port })
                for (let i = 0; i < (options.repeat ?? 1); i++) yield* sendAll(reply, answers)
              })
            )
          )
        }, { discard: true })
      ),
      Effect.forever,
      Effect.ignore,
      Effect.forkScoped
    )

    return {
      address,
      port,
      answerPort,
      searches: SubscriptionRef.get(searches),
      awaitSearches: (count) => awaitAtLeast(searches, (all) => all.length, count),
      sent: SubscriptionRef.get(sent),
      awaitSent: (count) => awaitAtLeast(sent, (n) => n, count),
      sendTo: (target, datagrams) =>
        Effect.forEach(
          datagrams,
          (payload) =>
            answerWriter.write({ payload, address: NetAddress.inetAddressFromIpStringUnsafe(address, target) }).pipe(
              Effect.orDie
            ),
          { discard: true }
        )
    } satisfies FakeSsdp
  })

/** A free UDP port on 127.0.0.1 right now (for a listener the code under test binds itself). */
export const freePort: Effect.Effect<number> = Effect.scoped(
  Effect.gen(function*() {
    const socket = yield* NodeDatagramSocket.make({ bind: { address: LOOPBACK, port: 0 } })
    const reader = yield* Effect.orDie(socket.reader)
    return reader.address.port
  })
)

export interface ReplyFields {
  readonly location: string
  readonly st: string
  readonly usn?: string
  readonly server?: string
  readonly bootId?: number | string
  readonly configId?: number | string
  /**
   * How the headers are written:
   * - standard: `LOCATION: …` with CRLF (miniupnpd);
   * - linksys: `Location:http://…`, no space after the colon;
   * - lowercase: lower-case names and LF-only line ends.
   */
  readonly style?: "standard" | "linksys" | "lowercase"
}

const render = (startLine: string, headers: ReadonlyArray<readonly [string, string | number | undefined]>, style: ReplyFields["style"]) => {
  const eol = style === "lowercase" ? "\n" : "\r\n"
  const lines = headers.flatMap(([name, value]) => {
    if (value === undefined) return []
    if (style === "linksys") return [`${name[0]}${name.slice(1).toLowerCase()}:${value}`]
    if (style === "lowercase") return [`${name.toLowerCase()}: ${value}`]
    return [`${name}: ${value}`]
  })
  return [startLine, ...lines, "", ""].join(eol)
}

/** An M-SEARCH reply as routers send it. */
export const searchReply = (fields: ReplyFields): string =>
  render("HTTP/1.1 200 OK", [
    ["CACHE-CONTROL", "max-age=120"],
    ["ST", fields.st],
    ["USN", fields.usn ?? `uuid:fake-igd::${fields.st}`],
    ["EXT", ""],
    ["SERVER", fields.server ?? "Linux/5.10 UPnP/1.1 MiniUPnPd/2.3.1"],
    ["LOCATION", fields.location],
    ["OPT", "\"http://schemas.upnp.org/upnp/1/0/\"; ns=01"],
    ["BOOTID.UPNP.ORG", fields.bootId],
    ["CONFIGID.UPNP.ORG", fields.configId]
  ], fields.style)

export interface NotifyFields {
  readonly nts: "ssdp:alive" | "ssdp:byebye" | "ssdp:update"
  readonly nt: string
  readonly usn: string
  readonly location?: string
  readonly bootId?: number
  readonly configId?: number
  readonly nextBootId?: number
}

/** A NOTIFY advertisement as routers multicast it. */
export const notify = (fields: NotifyFields): string =>
  render("NOTIFY * HTTP/1.1", [
    ["HOST", "239.255.255.250:1900"],
    ["CACHE-CONTROL", fields.nts === "ssdp:byebye" ? undefined : "max-age=120"],
    ["LOCATION", fields.location],
    ["NT", fields.nt],
    ["NTS", fields.nts],
    ["USN", fields.usn],
    ["SERVER", fields.nts === "ssdp:byebye" ? undefined : "Linux/5.10 UPnP/1.1 MiniUPnPd/2.3.1"],
    ["BOOTID.UPNP.ORG", fields.bootId],
    ["CONFIGID.UPNP.ORG", fields.configId],
    ["NEXTBOOTID.UPNP.ORG", fields.nextBootId]
  ], "standard")
