/**
 * A router's GENA side on 127.0.0.1, as miniupnpd 2.3.1 behaves (docs/upnp-eventing-field-notes.md):
 * SUBSCRIBE grants the timeout asked for and a SID, renewal of an unknown SID is 412, and
 * NOTIFYs are sent by hand from the test, from any loopback source address.
 */
import { createServer, type IncomingHttpHeaders, request, type Server } from "node:http"

/** A request the fake received. */
export interface GenaCall {
  readonly method: string
  readonly headers: IncomingHttpHeaders
}

/** How the fake answers the next SUBSCRIBE requests. */
export interface Behaviour {
  /** Status of new subscriptions (200 grants one). */
  subscribeStatus: number
  /** Never answer at all (a router that hangs). */
  silent: boolean
  /** Cap on the granted timeout, in seconds. */
  maxTimeout: number
}

/** The fake and its handles. */
export interface FakeGenaRouter {
  readonly eventUrl: string
  readonly calls: Array<GenaCall>
  readonly behaviour: Behaviour
  /** SIDs alive, with their callback URL. */
  readonly subscriptions: Map<string, string>
  /** Forgets every subscription, as a restart does. */
  readonly restart: () => void
  readonly close: () => Promise<void>
}

let counter = 0

/** Starts the fake on 127.0.0.1 at a free port. */
export const startFakeGenaRouter = (): Promise<FakeGenaRouter> => {
  const calls: Array<GenaCall> = []
  const subscriptions = new Map<string, string>()
  const behaviour: Behaviour = { subscribeStatus: 200, silent: false, maxTimeout: 1800 }
  const server: Server = createServer((req, res) => {
    calls.push({ method: req.method ?? "", headers: req.headers })
    req.resume()
    if (behaviour.silent) return
    const sid = req.headers["sid"]
    const timeout = /^Second-(\d+)$/.exec(String(req.headers["timeout"] ?? ""))
    const granted = Math.min(timeout === null ? 1800 : Number(timeout[1]), behaviour.maxTimeout)
    const done = (status: number, headers: Record<string, string> = {}) => {
      res.writeHead(status, { ...headers, "Content-Length": "0", "Connection": "close" })
      res.end()
    }
    if (req.method === "UNSUBSCRIBE") {
      return done(typeof sid === "string" && subscriptions.delete(sid) ? 200 : 412)
    }
    if (typeof sid === "string") {
      return subscriptions.has(sid) ? done(200, { SID: sid, TIMEOUT: `Second-${granted}` }) : done(412)
    }
    if (behaviour.subscribeStatus !== 200) return done(behaviour.subscribeStatus)
    const callback = /^<([^>]+)>$/.exec(String(req.headers["callback"] ?? ""))
    if (callback === null) return done(412)
    counter += 1
    const newSid = `uuid:00000000-0000-0000-0000-${String(counter).padStart(12, "0")}`
    subscriptions.set(newSid, callback[1]!)
    done(200, { SID: newSid, TIMEOUT: `Second-${granted}` })
  })
  server.keepAliveTimeout = 100
  return new Promise((resolve) => {
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      resolve({
        eventUrl: `http://127.0.0.1:${port}/evt/IPConn`,
        calls,
        behaviour,
        subscriptions,
        restart: () => subscriptions.clear(),
        close: () =>
          new Promise((done) => {
            server.close(() => done())
            server.closeAllConnections()
          })
      })
    })
  })
}

/** The property set miniupnpd sends, with these values. */
export const propertySet = (externalIp: string, status = "Connected", entries = 0): string =>
  `<e:propertyset xmlns:e="urn:schemas-upnp-org:event-1-0">` +
  `<e:property><PossibleConnectionTypes>IP_Routed</PossibleConnectionTypes></e:property>` +
  `<e:property><ConnectionStatus>${status}</ConnectionStatus></e:property>` +
  `<e:property><ExternalIPAddress>${externalIp}</ExternalIPAddress></e:property>` +
  `<e:property><PortMappingNumberOfEntries>${entries}</PortMappingNumberOfEntries></e:property>` +
  `<e:property><SystemUpdateID>1</SystemUpdateID></e:property></e:propertyset>\r\n`

/** What a NOTIFY sent by hand got back: the status, or the connection error. */
export type NotifyOutcome = { readonly status: number } | { readonly error: string }

/** Sends a NOTIFY to `url`, from `source` (a loopback address), with these headers and body. */
export const sendNotify = (
  url: string,
  options: {
    readonly sid: string
    readonly seq: string
    readonly body: string | Uint8Array
    readonly source?: string
    readonly method?: string
    readonly headers?: Record<string, string>
    readonly chunked?: boolean
  }
): Promise<NotifyOutcome> =>
  new Promise((resolve) => {
    const target = new URL(url)
    const body = typeof options.body === "string" ? Buffer.from(options.body) : Buffer.from(options.body)
    const req = request({
      method: options.method ?? "NOTIFY",
      host: target.hostname,
      port: Number(target.port),
      path: target.pathname,
      localAddress: options.source ?? "127.0.0.1",
      headers: {
        "Content-Type": `text/xml; charset="utf-8"`,
        "NT": "upnp:event",
        "NTS": "upnp:propchange",
        "SID": options.sid,
        "SEQ": options.seq,
        "Connection": "close",
        ...(options.chunked === true ? { "Transfer-Encoding": "chunked" } : { "Content-Length": String(body.length) }),
        ...options.headers
      }
    }, (res) => {
      res.resume()
      resolve({ status: res.statusCode ?? 0 })
    })
    req.on("error", (error) => resolve({ error: error.message }))
    req.end(body)
  })
