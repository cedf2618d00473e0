/**
 * The PCP route to the IPv6 firewall against a fake PCP server on ::1 (real UDP) that keeps
 * pinholes the way miniupnpd 2.3.1 does (docs/ipv6-field-notes.md, section 7): a pinhole per
 * client address, protocol and port, deleted only under the nonce it holds, NOT_AUTHORIZED
 * otherwise, a granted lifetime of at least 120 s.
 */
import * as Dgram from "node:dgram"
import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer, Result } from "effect"
import { HttpClient } from "effect/http"
import { makePcpFirewallBackend, pcpRouterName } from "../../../src/gateway/pcp/PcpFirewall.ts"
import { Description } from "../../../src/gateway/upnp/Description.ts"
import { Firewall } from "../../../src/gateway/Firewall.ts"
import type { FirewallBackend } from "../../../src/gateway/FirewallBackend.ts"
import { SoapTransport } from "../../../src/gateway/upnp/SoapTransport.ts"

const LOOPBACK6 = "::1"
const EPOCH = 42

interface Received {
  readonly lifetime: number
  readonly client: string
  readonly nonce: string
  readonly port: number
  readonly suggestedPort: number
}

const ipv6Text = (bytes: Buffer) =>
  new URL(`http://[${(bytes.toString("hex").match(/.{4}/g) ?? []).join(":")}]/`).hostname.slice(1, -1)

/** A PCP server on ::1 that answers MAP over IPv6 like miniupnpd's firewall path, or not at all. */
const fakePcp = (options: { readonly silent?: boolean } = {}) =>
  Effect.acquireRelease(
    Effect.callback<{ port: number; received: Array<Received>; pinholes: Map<string, string>; close: () => void }>((resume) => {
      const socket = Dgram.createSocket("udp6")
      const received: Array<Received> = []
      const pinholes = new Map<string, string>()
      socket.on("message", (message, from) => {
        const lifetime = message.readUInt32BE(4)
        const client = ipv6Text(message.subarray(8, 24))
        const nonce = message.subarray(24, 36).toString("hex")
        const protocol = message[36]!
        const port = message.readUInt16BE(40)
        received.push({ lifetime, client, nonce, port, suggestedPort: message.readUInt16BE(42) })
        if (options.silent === true) return
        const key = `${client}/${protocol}/${port}`
        let result = 0
        let granted = lifetime === 0 ? 0 : Math.max(lifetime, 120)
        if (lifetime === 0) {
          const held = pinholes.get(key)
          if (held !== undefined && held !== nonce) result = 2
          else pinholes.delete(key)
        } else {
          // A renewal keeps no nonce on miniupnpd 2.3.1 (emptied description); a new pinhole keeps its own.
          pinholes.set(key, pinholes.has(key) ? "" : nonce)
        }
        if (result !== 0) granted = 0
        const reply = Buffer.alloc(60)
        reply[0] = 2
        reply[1] = 0x81
        reply[3] = result
        reply.writeUInt32BE(granted, 4)
        reply.writeUInt32BE(EPOCH, 8)
        message.copy(reply, 24, 24, 40)
        reply.writeUInt16BE(port, 40)
        reply.writeUInt16BE(port, 42)
        message.copy(reply, 44, 8, 24)
        socket.send(reply, from.port, from.address)
      })
      socket.bind(0, LOOPBACK6, () =>
        resume(Effect.succeed({ port: socket.address().port, received, pinholes, close: () => socket.close() })))
    }),
    (fake) => Effect.sync(fake.close)
  )

// Generous on loopback even on a busy machine: a resent request would show in `received`.
const fast = { initial: "500 millis", maxInterval: "500 millis", attempts: 2, jitter: 0, deadline: "1 second" } as const

const backendFor = (port: number): Effect.Effect<FirewallBackend> =>
  makePcpFirewallBackend({
    routerAddress: Effect.succeed(LOOPBACK6),
    port,
    retransmission: fast,
    probeRetransmission: fast,
    silentFor: 60_000
  })

const held = (nonce: string | undefined, port: number) => ({
  protocol: "TCP" as const,
  port: 80,
  internalClient: LOOPBACK6,
  router: pcpRouterName(LOOPBACK6, port),
  ...(nonce === undefined ? {} : { nonce })
})

describe("the PCP route to the IPv6 firewall", () => {
  it.live("add: a MAP from the node's address with it as client, external port = internal port, a fresh nonce kept", () =>
    Effect.gen(function*() {
      const fake = yield* fakePcp()
      const backend = yield* backendFor(fake.port)
      assert.deepStrictEqual(yield* backend.locate, { router: `pcp://[::1]:${fake.port}`, routerIp: LOOPBACK6, routerPort: fake.port })
      const handle = yield* backend.add({ internalClient: LOOPBACK6, port: 80, protocol: "TCP", leaseSeconds: 20 })
      assert.match(handle.nonce ?? "", /^[0-9a-f]{24}$/)
      assert.deepStrictEqual(fake.received, [{ lifetime: 20, client: "::1", nonce: handle.nonce!, port: 80, suggestedPort: 80 }])
      assert.strictEqual(fake.pinholes.get("::1/6/80"), handle.nonce)
    }).pipe(Effect.scoped))

  it.live("renewal replaces: deleted under the old nonce, opened under a new one, which then deletes it", () =>
    Effect.gen(function*() {
      const fake = yield* fakePcp()
      const backend = yield* backendFor(fake.port)
      const first = yield* backend.add({ internalClient: LOOPBACK6, port: 80, protocol: "TCP", leaseSeconds: 20 })
      const second = yield* backend.update(held(first.nonce, fake.port), 20)
      assert.notStrictEqual(second.nonce, first.nonce)
      assert.deepStrictEqual(fake.received.slice(1).map((r) => [r.lifetime, r.nonce]), [[0, first.nonce], [20, second.nonce]])
      yield* backend.remove(held(second.nonce, fake.port))
      assert.strictEqual(fake.pinholes.size, 0)
    }).pipe(Effect.scoped))

  it.live("a pinhole whose nonce the router lost: shortened to the router's shortest lifetime, not left at its lease", () =>
    Effect.gen(function*() {
      const fake = yield* fakePcp()
      const backend = yield* backendFor(fake.port)
      const first = yield* backend.add({ internalClient: LOOPBACK6, port: 80, protocol: "TCP", leaseSeconds: 20 })
      fake.pinholes.set("::1/6/80", "")
      const removed = yield* Effect.result(backend.remove(held(first.nonce, fake.port)))
      assert.isTrue(Result.isSuccess(removed), String(Result.isFailure(removed) && removed.failure))
      assert.deepStrictEqual(fake.received.slice(1).map((r) => r.lifetime), [0, 1])
    }).pipe(Effect.scoped))

  it.live("no nonce in the record: refused without a datagram", () =>
    Effect.gen(function*() {
      const fake = yield* fakePcp()
      const backend = yield* backendFor(fake.port)
      const result = yield* Effect.result(backend.remove(held(undefined, fake.port)))
      assert.isTrue(Result.isFailure(result))
      assert.deepStrictEqual(fake.received, [])
    }).pipe(Effect.scoped))

  it.live("the boot time from the epoch; a silent router is unavailable, and not asked again for a while", () =>
    Effect.gen(function*() {
      const fake = yield* fakePcp()
      const backend = yield* backendFor(fake.port)
      const before = Date.now()
      const bootedAt = yield* backend.bootedAt(LOOPBACK6)
      assert.isTrue(bootedAt !== undefined && bootedAt >= before - EPOCH * 1000 - 50 && bootedAt <= Date.now() - EPOCH * 1000)
      const silent = yield* fakePcp({ silent: true })
      const quiet = yield* backendFor(silent.port)
      const first = yield* Effect.result(quiet.bootedAt(LOOPBACK6))
      assert.isTrue(Result.isFailure(first) && first.failure._tag === "FirewallUnavailable")
      const asked = silent.received.length
      assert.isAbove(asked, 0)
      const again = yield* Effect.result(quiet.locate)
      assert.isTrue(Result.isFailure(again) && again.failure._tag === "FirewallUnavailable")
      assert.strictEqual(silent.received.length, asked)
    }).pipe(Effect.scoped))

  it.live("auto, with no UPnP firewall configured: the view offers the PCP route alone, which opens a low port", () =>
    Effect.gen(function*() {
      const fake = yield* fakePcp()
      // No URL and no search: the UPnP route says why it is unavailable without a request.
      const noHttp = Layer.succeed(HttpClient.HttpClient, HttpClient.make(() => Effect.die("no HTTP expected")))
      const firewall = yield* Effect.provide(
        Effect.service(Firewall),
        Firewall.layer({
          protocol: "auto",
          routerIpv6: LOOPBACK6,
          sourceAddress: () => Effect.succeed(LOOPBACK6),
          pcp: { port: fake.port, retransmission: fast, probeRetransmission: fast }
        }).pipe(Layer.provide(Layer.mergeAll(SoapTransport.layer(), Description.layer())), Layer.provide(noHttp))
      )
      const view = yield* firewall.view
      const router = pcpRouterName(LOOPBACK6, fake.port)
      assert.deepStrictEqual(view.routes.map((route) => [route.router, route.protocol, route.opensLowPorts]), [[router, "pcp", true]])
      assert.isDefined(view.routes[0]?.bootedAt)
      const handle = yield* firewall.add(router, { internalClient: LOOPBACK6, port: 80, protocol: "TCP", leaseSeconds: 20 })
      assert.strictEqual(fake.pinholes.get("::1/6/80"), handle.nonce)
    }).pipe(Effect.scoped))
})
