import { CoreV1Api, KubeConfig } from "@kubernetes/client-node"
import { afterEach, assert, describe, it } from "@effect/vitest"
import * as http from "node:http"
import type { AddressInfo } from "node:net"
import { KeptAliveConnections } from "../../src/kube/keptAliveClients.ts"

interface Apiserver {
  readonly url: string
  readonly connections: () => number
  readonly userAgents: ReadonlyArray<string>
  readonly authorizations: ReadonlyArray<string>
  readonly close: () => Promise<void>
}

/** A stand-in apiserver on loopback that answers every GET with a Namespace and counts TCP connections. */
const startApiserver = async (): Promise<Apiserver> => {
  let connections = 0
  const userAgents: Array<string> = []
  const authorizations: Array<string> = []
  const server = http.createServer((request, response) => {
    userAgents.push(request.headers["user-agent"] ?? "")
    authorizations.push(request.headers.authorization ?? "")
    response.setHeader("content-type", "application/json")
    response.end(JSON.stringify({ apiVersion: "v1", kind: "Namespace", metadata: { name: "default" } }))
  })
  server.on("connection", () => connections++)
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    connections: () => connections,
    userAgents,
    authorizations,
    close: () => new Promise<void>((resolve) => server.close(() => resolve()))
  }
}

const kubeConfigFor = (server: string, token = "t") => {
  const kc = new KubeConfig()
  // skipTLSVerify: client-node refuses plain HTTP otherwise (and then builds an Agent per request).
  kc.loadFromClusterAndUser({ name: "lab", server, skipTLSVerify: true }, { name: "u", token })
  return kc
}

const cleanups: Array<() => Promise<void>> = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0)) await cleanup()
})

describe("KeptAliveConnections", () => {
  it("sends the requests of several API clients over kept-alive connections", async () => {
    const apiserver = await startApiserver()
    const connections = new KeptAliveConnections(kubeConfigFor(apiserver.url))
    cleanups.push(() => connections.close(), apiserver.close)
    const core = connections.client(CoreV1Api)
    const other = connections.client(CoreV1Api)
    for (let i = 0; i < 10; i++) {
      const namespace = await (i % 2 === 0 ? core : other).readNamespace({ name: "default" })
      assert.strictEqual(namespace.metadata?.name, "default")
    }
    // A request can start before the previous one's socket is back in the pool: one or two.
    assert.isAtMost(apiserver.connections(), 2)
    assert.isTrue(apiserver.userAgents.every((agent) => agent === "edge-cloud-controller-manager"))
  })

  it("client-node's own clients open a connection per request (why this exists)", async () => {
    const apiserver = await startApiserver()
    cleanups.push(apiserver.close)
    const core = kubeConfigFor(apiserver.url).makeApiClient(CoreV1Api)
    for (let i = 0; i < 3; i++) await core.readNamespace({ name: "default" })
    assert.strictEqual(apiserver.connections(), 3)
  })

  it("renews the shared connection pool after renewAfter", async () => {
    const apiserver = await startApiserver()
    const connections = new KeptAliveConnections(kubeConfigFor(apiserver.url), 0)
    cleanups.push(() => connections.close(), apiserver.close)
    const core = connections.client(CoreV1Api)
    for (let i = 0; i < 3; i++) await core.readNamespace({ name: "default" })
    assert.strictEqual(apiserver.connections(), 3)
  })

  it("every request is authenticated; within authReuseMs with the headers of the last authentication", async () => {
    const apiserver = await startApiserver()
    const kc = kubeConfigFor(apiserver.url, "first")
    const reused = new KeptAliveConnections(kc, 60_000, 60_000)
    const fresh = new KeptAliveConnections(kc, 60_000, 0)
    cleanups.push(() => reused.close(), () => fresh.close(), apiserver.close)
    await reused.client(CoreV1Api).readNamespace({ name: "default" })
    await fresh.client(CoreV1Api).readNamespace({ name: "default" })
    // A rotated credential: the reusing client keeps the last headers until its window ends.
    kc.users[0] = { ...kc.users[0]!, token: "second" }
    await reused.client(CoreV1Api).readNamespace({ name: "default" })
    await fresh.client(CoreV1Api).readNamespace({ name: "default" })
    assert.deepStrictEqual(apiserver.authorizations, ["Bearer first", "Bearer first", "Bearer first", "Bearer second"])
  })
})
