/**
 * A counting HTTP proxy in front of the gateway's UPnP port: the controller is pointed at it
 * with --gateway-url, and every request is counted by SOAP action (descriptions by path).
 * It runs in the benchmark process, inside the node namespace, on the node's own address.
 */
import * as http from "node:http"

export interface CountingProxy {
  readonly url: string
  counts(): Record<string, number>
  reset(): void
  close(): Promise<void>
}

export function startCountingProxy(options: { listenIp: string; listenPort: number; target: URL }): Promise<CountingProxy> {
  let counts = new Map<string, number>()
  const server = http.createServer((req, res) => {
    const soapAction = req.headers["soapaction"]
    const key = typeof soapAction === "string" ? soapAction.replace(/^"?[^#]*#|"$/g, "") : `GET ${req.url ?? ""}`
    counts.set(key, (counts.get(key) ?? 0) + 1)
    const upstream = http.request({
      host: options.target.hostname,
      port: Number(options.target.port || 80),
      method: req.method,
      path: req.url,
      headers: req.headers,
      agent: false
    }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers)
      answer.pipe(res)
    })
    upstream.on("error", () => {
      // The controller must see what it would see from the router: a broken connection.
      req.socket.destroy()
    })
    req.pipe(upstream)
  })
  return new Promise((resolve, reject) => {
    server.once("error", reject)
    server.listen(options.listenPort, options.listenIp, () => {
      resolve({
        url: `http://${options.listenIp}:${options.listenPort}/rootDesc.xml`,
        counts: () => Object.fromEntries([...counts].sort((a, b) => b[1] - a[1])),
        reset: () => {
          counts = new Map()
        },
        close: () =>
          new Promise<void>((done) => {
            server.closeAllConnections()
            server.close(() => done())
          })
      })
    })
  })
}
