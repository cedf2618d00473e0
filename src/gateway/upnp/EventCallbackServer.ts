/**
 * The HTTP server a router sends its GENA NOTIFYs to. Any LAN host can connect to it, so it is
 * bound to the node's address toward the router only, another host's connection is closed as it
 * opens, and a request is refused before its body is read unless it is a NOTIFY from the router's own address, to the current subscription's
 * secret path, with a SID we hold and a body within the cap. The body is then read under that
 * cap and handed on as bytes; parsing is the caller's, with the strict parser.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http"
import { Effect, Scope } from "effect"
import { GatewayUnreachable } from "../GatewayError.ts"
import { isWellFormedSid } from "./GenaMessages.ts"

/** A NOTIFY that passed every check, body read. */
export interface AcceptedNotify {
  readonly sid: string
  readonly seq: string | undefined
  readonly body: Uint8Array
}

/** What the server accepts, asked afresh for every request. */
export interface NotifyGate {
  /** The router's IPv4 address: connections from anywhere else are closed as they open. */
  readonly routerAddress: string
  /** The path of the current subscription's CALLBACK. */
  readonly path: () => string
  /** Whether a SID may be accepted now (ours, or any while our SUBSCRIBE awaits its answer). */
  readonly acceptsSid: (sid: string) => boolean
  readonly maxBodyBytes: number
  readonly deliver: (notify: AcceptedNotify) => void
  /** Told of each refusal, with the status sent (0: the connection closed unanswered; for tests and the log). */
  readonly refused?: ((reason: string, status: number) => void) | undefined
}

const unmapped = (address: string | undefined): string =>
  address?.startsWith("::ffff:") === true ? address.slice("::ffff:".length) : address ?? ""

const answer = (response: ServerResponse, status: number) => {
  response.writeHead(status, { "Content-Length": "0", "Connection": "close" })
  response.end()
}

/** Checks a request before its body; undefined when it may be read. */
const refusal = (request: IncomingMessage, gate: NotifyGate): readonly [reason: string, status: number] | undefined => {
  if (request.method !== "NOTIFY") return [`method ${request.method ?? "?"} is not NOTIFY`, 405]
  const sid = request.headers["sid"]
  if (typeof sid !== "string" || !isWellFormedSid(sid) || !gate.acceptsSid(sid)) return ["unknown SID", 412]
  if (request.headers["nt"] !== "upnp:event" || request.headers["nts"] !== "upnp:propchange") {
    return ["NT/NTS are not upnp:event/upnp:propchange", 400]
  }
  const length = request.headers["content-length"]
  if (length === undefined || !/^\d{1,9}$/.test(length)) return ["no Content-Length", 411]
  if (Number(length) > gate.maxBodyBytes) return [`body of ${length} bytes is over ${gate.maxBodyBytes}`, 413]
  // miniupnpd's SIDs are guessable (16 random bits): the path, ours alone, is the real secret.
  if (request.url !== gate.path()) return ["not the current subscription's callback path", 412]
  return undefined
}

const handle = (gate: NotifyGate) => (request: IncomingMessage, response: ServerResponse) => {
  const refused = refusal(request, gate)
  if (refused !== undefined) {
    gate.refused?.(refused[0], refused[1])
    answer(response, refused[1])
    // Nothing more is read from this client: the body is never buffered.
    request.socket.destroySoon()
    return
  }
  const chunks: Array<Buffer> = []
  let size = 0
  request.on("data", (chunk: Buffer) => {
    size += chunk.length
    if (size > gate.maxBodyBytes) {
      gate.refused?.("body longer than its Content-Length allowed", 413)
      request.socket.destroy()
      return
    }
    chunks.push(chunk)
  })
  request.on("end", () => {
    if (size > gate.maxBodyBytes) return
    answer(response, 200)
    gate.deliver({
      sid: String(request.headers["sid"]),
      seq: typeof request.headers["seq"] === "string" ? request.headers["seq"] : undefined,
      body: new Uint8Array(Buffer.concat(chunks))
    })
  })
  request.on("error", () => request.socket.destroy())
}

/** A LAN host must not hold connections open by sending slowly, nor many at once. */
const bounded = (server: Server): Server => {
  server.headersTimeout = 5_000
  server.requestTimeout = 5_000
  server.keepAliveTimeout = 1_000
  server.maxHeadersCount = 32
  server.maxConnections = 16
  server.maxRequestsPerSocket = 1
  return server
}

/**
 * Listens on `host` (the node's address toward the router) and `port` (0: any free one) until
 * the scope closes; returns the port.
 */
export const listenForNotify = (
  host: string,
  port: number,
  gate: NotifyGate
): Effect.Effect<number, GatewayUnreachable, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.callback<Server, GatewayUnreachable>((resume) => {
      const server = bounded(createServer({ maxHeaderSize: 8 * 1024 }, handle(gate)))
      // Another host's connection is closed as it opens: idle, it would hold one of the few
      // places (and Node checks the header timeout only every 30 s) until the router's NOTIFY
      // finds none left.
      server.on("connection", (socket) => {
        const source = unmapped(socket.remoteAddress)
        if (source === gate.routerAddress) return
        socket.destroy()
        gate.refused?.(`connection from ${source}, not the router ${gate.routerAddress}`, 0)
      })
      server.once("error", (error) =>
        resume(Effect.fail(
          new GatewayUnreachable({ router: gate.routerAddress, action: "event callback server", reason: error.message })
        )))
      server.listen(port, host, () => resume(Effect.succeed(server)))
    }),
    (server) =>
      Effect.callback<void>((resume) => {
        server.close(() => resume(Effect.void))
        server.closeAllConnections()
      })
  ).pipe(
    Effect.map((server) => {
      const address = server.address()
      return typeof address === "object" && address !== null ? address.port : port
    })
  )
