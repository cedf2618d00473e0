/**
 * Gateways: the mapper for each load-balancer type, built on first use, and `auto`'s choice
 * (UPnP IGD when connected, else PCP, else NAT-PMP), kept until the chosen backend fails in a
 * way another might not. Mostly over small in-memory mappers (Layer.mock); the last tests use
 * the real layers against the fake NAT-PMP/PCP gateway and a closed port on 127.0.0.1.
 */
import { assert, describe, it } from "@effect/vitest"
import * as Net from "node:net"
import { Context, Effect, Exit, Fiber, Layer, Stream } from "effect"
import { TestClock } from "effect/testing"
import { type Backend, Gateways, type GatewaysOptions } from "../../src/gateway/Gateways.ts"
import { type GatewayError, GatewayUnreachable, PortConflict, PortControlError } from "../../src/gateway/GatewayError.ts"
import type { GatewayStatus } from "../../src/gateway/Mapping.ts"
import { PortMapper } from "../../src/gateway/PortMapper.ts"
import * as FakeNatPmp from "../support/FakeNatPmp.ts"

interface FakeBackend {
  /** What `status` does: answer connected or not, fail, or never answer. */
  status: "connected" | "disconnected" | GatewayError | "hang"
  /** What `map` fails with, if anything. */
  mapError: GatewayError | undefined
  builds: number
  statusCalls: number
  mapCalls: number
}

const statusOf = (backend: Backend, connected: boolean): GatewayStatus => ({
  router: `${backend}-router`,
  protocol: backend,
  connected,
  uptimeSeconds: 10,
  externalAddress: connected ? { ip: "122.112.219.229", class: "public" } : { ip: undefined, class: "missing" },
  localAddress: "192.168.77.10"
})

const unreachable = (backend: Backend) => new GatewayUnreachable({ router: `${backend}-router`, action: "status", reason: "no answer" })

const makeBackends = (initial: Partial<Record<Backend, FakeBackend["status"]>>) => {
  const backends = {} as Record<Backend, FakeBackend>
  for (const backend of ["upnp-igd", "pcp", "nat-pmp"] as const) {
    backends[backend] = { status: initial[backend] ?? unreachable(backend), mapError: undefined, builds: 0, statusCalls: 0, mapCalls: 0 }
  }
  const layerOf = (backend: Backend) =>
    Layer.unwrap(Effect.sync(() => {
      const state = backends[backend]
      state.builds += 1
      return Layer.mock(PortMapper, {
        capabilities: { readsTable: backend === "upnp-igd", deletesByInternalPort: backend === "nat-pmp", drawNonce: undefined },
        ...(backend === "upnp-igd" ? { restarts: Stream.make(`${backend} restarted`) } : {}),
        status: Effect.suspend(() => {
          state.statusCalls += 1
          const status = state.status
          if (status === "hang") return Effect.never
          if (typeof status === "string") return Effect.succeed(statusOf(backend, status === "connected"))
          return Effect.fail(status)
        }),
        map: (request) =>
          Effect.suspend(() => {
            state.mapCalls += 1
            return state.mapError === undefined
              ? Effect.succeed({ ...request, internalClient: "192.168.77.10", description: backend })
              : Effect.fail(state.mapError)
          })
      })
    }))
  const layers = { "upnp-igd": layerOf("upnp-igd"), "pcp": layerOf("pcp"), "nat-pmp": layerOf("nat-pmp") }
  return { backends, layers }
}

const gatewaysOf = (layer: Layer.Layer<Gateways>) =>
  Effect.map(Layer.build(layer), (context) => Context.get(context, Gateways))

const request = { externalPort: 8080, protocol: "TCP" as const, internalPort: 30000, description: "d", leaseSeconds: 60 }

describe("Gateways.forType", () => {
  it.effect("a named type gets that backend, built on first use and only once, without probing", () =>
    Effect.gen(function*() {
      const { backends, layers } = makeBackends({})
      const gateways = yield* gatewaysOf(Gateways.layerFrom(layers))
      assert.deepStrictEqual([backends["upnp-igd"].builds, backends.pcp.builds, backends["nat-pmp"].builds], [0, 0, 0])
      const first = yield* gateways.forType("nat-pmp")
      const second = yield* gateways.forType("nat-pmp")
      assert.strictEqual(first.backend, "nat-pmp")
      assert.isUndefined(first.reason)
      assert.strictEqual(first.mapper, second.mapper)
      assert.strictEqual((yield* first.mapper.map(request)).description, "nat-pmp")
      assert.deepStrictEqual([backends["upnp-igd"].builds, backends.pcp.builds, backends["nat-pmp"].builds], [0, 0, 1])
      assert.strictEqual(backends["nat-pmp"].statusCalls, 0)
    }).pipe(Effect.scoped))
})

describe("Gateways auto", () => {
  it.effect("UPnP IGD when its status answers connected; nothing else is probed", () =>
    Effect.gen(function*() {
      const { backends, layers } = makeBackends({ "upnp-igd": "connected", pcp: "connected" })
      const gateways = yield* gatewaysOf(Gateways.layerFrom(layers))
      const choice = yield* gateways.forType("auto")
      assert.strictEqual(choice.backend, "upnp-igd")
      assert.include(choice.reason ?? "", "first connected: upnp-igd: connected, public external address 122.112.219.229")
      assert.strictEqual(backends.pcp.builds, 0)
      assert.isTrue(choice.mapper.capabilities.readsTable)
      // Its restart announcements reach the controller through auto too.
      assert.deepStrictEqual(yield* Stream.runCollect(choice.mapper.restarts ?? Stream.empty), ["upnp-igd restarted"])
    }).pipe(Effect.scoped))

  it.effect("else PCP, with the reason naming what UPnP said", () =>
    Effect.gen(function*() {
      const { backends, layers } = makeBackends({ pcp: "connected", "nat-pmp": "connected" })
      const gateways = yield* gatewaysOf(Gateways.layerFrom(layers))
      const choice = yield* gateways.forType("auto")
      assert.strictEqual(choice.backend, "pcp")
      assert.include(choice.reason ?? "", "passed over upnp-igd: status on upnp-igd-router: gateway unreachable (no answer)")
      assert.strictEqual(backends["nat-pmp"].statusCalls, 0)
    }).pipe(Effect.scoped))

  it.effect("else NAT-PMP, when the gateway speaks no PCP", () =>
    Effect.gen(function*() {
      const { layers } = makeBackends({
        pcp: new PortControlError({ router: "gw", protocol: "pcp", action: "status", code: 1 }),
        "nat-pmp": "connected"
      })
      const gateways = yield* gatewaysOf(Gateways.layerFrom(layers))
      assert.strictEqual((yield* gateways.forType("auto")).backend, "nat-pmp")
    }).pipe(Effect.scoped))

  it.effect("none connected: the first that answered, so its own error reaches the Service", () =>
    Effect.gen(function*() {
      const { layers } = makeBackends({ "nat-pmp": "disconnected" })
      const gateways = yield* gatewaysOf(Gateways.layerFrom(layers))
      const choice = yield* gateways.forType("auto")
      assert.strictEqual(choice.backend, "nat-pmp")
      assert.include(choice.reason ?? "", "none is connected; first to answer: nat-pmp: not connected")
    }).pipe(Effect.scoped))

  it.effect("nothing answers: GatewayNotFound naming every backend's reason", () =>
    Effect.gen(function*() {
      const { layers } = makeBackends({})
      const gateways = yield* gatewaysOf(Gateways.layerFrom(layers))
      const error = yield* Effect.flip(gateways.forType("auto"))
      assert.strictEqual(error._tag, "GatewayNotFound")
      assert.deepStrictEqual(error._tag === "GatewayNotFound" ? error.candidates : [], ["upnp-igd", "pcp", "nat-pmp"])
      assert.include(error.message, "pcp: status on pcp-router")
    }).pipe(Effect.scoped))

  it.effect("the choice is kept: no probing on later calls", () =>
    Effect.gen(function*() {
      const { backends, layers } = makeBackends({ pcp: "connected" })
      const gateways = yield* gatewaysOf(Gateways.layerFrom(layers))
      const first = yield* gateways.forType("auto")
      const second = yield* gateways.forType("auto")
      assert.strictEqual(first, second)
      assert.strictEqual(backends["upnp-igd"].statusCalls, 1)
      assert.strictEqual(backends.pcp.statusCalls, 1)
      assert.strictEqual((yield* gateways.autoChoice)?.backend, "pcp")
    }).pipe(Effect.scoped))

  it.effect("a failure seen through a named type's mapper also drops auto's choice (one mapper per backend)", () =>
    Effect.gen(function*() {
      const { backends, layers } = makeBackends({ pcp: "connected" })
      const gateways = yield* gatewaysOf(Gateways.layerFrom(layers))
      const named = yield* gateways.forType("pcp")
      assert.strictEqual((yield* gateways.forType("auto")).mapper, named.mapper)
      backends.pcp.mapError = unreachable("pcp")
      yield* Effect.flip(named.mapper.map(request))
      assert.isUndefined(yield* gateways.autoChoice)
    }).pipe(Effect.scoped))

  it.effect("chosen again after the chosen backend becomes unreachable, not after a conflict", () =>
    Effect.gen(function*() {
      const { backends, layers } = makeBackends({ pcp: "connected" })
      const gateways = yield* gatewaysOf(Gateways.layerFrom(layers))
      const chosen = yield* gateways.forType("auto")

      backends.pcp.mapError = new PortConflict({ router: "gw", externalPort: 8080, protocol: "TCP", holder: "x", reason: "y" })
      yield* Effect.flip(chosen.mapper.map(request))
      assert.strictEqual((yield* gateways.autoChoice)?.backend, "pcp")

      backends.pcp.mapError = unreachable("pcp")
      backends["upnp-igd"].status = "connected"
      yield* Effect.flip(chosen.mapper.map(request))
      assert.isUndefined(yield* gateways.autoChoice)
      const next = yield* gateways.forType("auto")
      assert.strictEqual(next.backend, "upnp-igd")
      assert.strictEqual(backends["upnp-igd"].statusCalls, 2)
    }).pipe(Effect.scoped))

  it.effect("the controller-wide preference orders and limits the backends", () =>
    Effect.gen(function*() {
      const { backends, layers } = makeBackends({ "upnp-igd": "connected", "nat-pmp": "connected" })
      const pinned = yield* gatewaysOf(Gateways.layerFrom(layers, { preference: ["nat-pmp"] }))
      assert.strictEqual((yield* pinned.forType("auto")).backend, "nat-pmp")
      assert.strictEqual(backends["upnp-igd"].statusCalls, 0)
      const none = yield* gatewaysOf(Gateways.layerFrom(layers, { preference: [] }))
      const error = yield* Effect.flip(none.forType("auto"))
      assert.include(error.message, "no backend is allowed")
    }).pipe(Effect.scoped))

  it.effect("a probe that never answers is cut at the probe timeout", () =>
    Effect.gen(function*() {
      const { layers } = makeBackends({ "upnp-igd": "hang", pcp: "connected" })
      const gateways = yield* gatewaysOf(Gateways.layerFrom(layers, { probeTimeout: "3 seconds" }))
      const fiber = yield* Effect.forkChild(gateways.forType("auto"))
      yield* TestClock.adjust("2999 millis")
      assert.isUndefined(fiber.pollUnsafe())
      yield* TestClock.adjust("1 millis")
      const choice = yield* Fiber.join(fiber)
      assert.strictEqual(choice.backend, "pcp")
      assert.include(choice.reason ?? "", "upnp-igd: no answer within 3s")
    }).pipe(Effect.scoped))
})

/** A TCP port on 127.0.0.1 with nothing listening: UPnP calls to it are refused at once. */
const closedPort = Effect.promise(() =>
  new Promise<number>((resolve) => {
    const server = Net.createServer()
    server.listen(0, "127.0.0.1", () => {
      const address = server.address()
      server.close(() => resolve(typeof address === "object" && address !== null ? address.port : 0))
    })
  })
)

describe("Gateways.layer over the real backends on 127.0.0.1", () => {
  const options = (fake: FakeNatPmp.FakeNatPmp, port: number): Partial<GatewaysOptions> => ({
    upnp: {
      gatewayUrl: `http://127.0.0.1:${port}/rootDesc.xml`,
      soapTimeout: "500 millis",
      retry: { times: 0, base: "5 millis", cap: "5 millis" }
    },
    pcp: { gateway: FakeNatPmp.LOOPBACK, port: fake.port, retransmission: { initial: "20 millis", deadline: "300 millis" } },
    natpmp: { gateway: FakeNatPmp.LOOPBACK, port: fake.port, retransmission: { initial: "20 millis", deadline: "300 millis" } }
  })

  it.live("no IGD: auto maps through PCP", () =>
    Effect.gen(function*() {
      const fake = yield* FakeNatPmp.make()
      const gateways = yield* gatewaysOf(Gateways.layer(options(fake, yield* closedPort)))
      const choice = yield* gateways.forType("auto")
      assert.strictEqual(choice.backend, "pcp")
      const granted = yield* choice.mapper.map(request)
      assert.match(granted.nonce ?? "", /^[0-9a-f]{24}$/)
      assert.strictEqual(fake.table.get("TCP/8080")?.kind, "pcp")
    }).pipe(Effect.scoped))

  it.live("no IGD and a NAT-PMP-only gateway: auto maps through NAT-PMP", () =>
    Effect.gen(function*() {
      const fake = yield* FakeNatPmp.make()
      fake.faults.natpmpOnly = true
      const gateways = yield* gatewaysOf(Gateways.layer(options(fake, yield* closedPort)))
      const choice = yield* gateways.forType("auto")
      assert.strictEqual(choice.backend, "nat-pmp")
      yield* choice.mapper.map(request)
      assert.strictEqual(fake.table.get("TCP/8080")?.kind, "nat-pmp")
      const exit = yield* Effect.exit((yield* gateways.forType("upnp-igd")).mapper.status)
      assert.isTrue(Exit.isFailure(exit))
    }).pipe(Effect.scoped))
})
