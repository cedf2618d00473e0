/**
 * `edge-ccm gateway … --via nat-pmp|pcp` in-process against the fake NAT-PMP/PCP gateway on
 * 127.0.0.1 (real UDP): status, map, unmap and list, the nonce a PCP mapping is deleted with,
 * the usage errors for what only one protocol needs, and each protocol's result codes as one line.
 */
import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { PORT_CONTROL_STATUS_KEYS } from "../support/cliKeys.ts"
import * as FakeNatPmp from "../support/FakeNatPmp.ts"
import { assertOneLine, cli } from "./harness.ts"

type Via = "nat-pmp" | "pcp"

const aim = (fake: FakeNatPmp.FakeNatPmp) => ["--gateway-address", FakeNatPmp.LOOPBACK, "--gateway-port", String(fake.port)]

const mapArgs = (fake: FakeNatPmp.FakeNatPmp, via: Via, externalPort = 8080, internalPort = 30000, protocol = "TCP") => [
  "gateway",
  "map",
  "--via",
  via,
  ...aim(fake),
  "--external-port",
  String(externalPort),
  "--internal-port",
  String(internalPort),
  "--protocol",
  protocol
]

const unmapArgs = (fake: FakeNatPmp.FakeNatPmp, via: Via, externalPort = 8080, internalPort = 30000, protocol = "TCP") => [
  "gateway",
  "unmap",
  "--via",
  via,
  ...aim(fake),
  "--external-port",
  String(externalPort),
  "--protocol",
  protocol,
  "--internal-port",
  String(internalPort)
]

const STATUS_KEYS = PORT_CONTROL_STATUS_KEYS

const MAP_KEYS = [
  "externalPort",
  "protocol",
  "internalClient",
  "internalPort",
  "description",
  "leaseDuration",
  "externalIp",
  "externalIpClass"
]

const NONCE = /^[0-9a-f]{24}$/

describe("edge-ccm gateway --via nat-pmp|pcp", () => {
  for (const via of ["nat-pmp", "pcp"] as const) {
    it.live(`status --via ${via} --json: the router, the epoch as uptimeSeconds, the external address`, () =>
      Effect.gen(function*() {
        const fake = yield* FakeNatPmp.make()
        fake.faults.epoch = 4242
        const result = yield* cli(["gateway", "status", "--via", via, "--json", ...aim(fake)])
        assert.strictEqual(result.code, 0, result.err)
        const report = JSON.parse(result.out) as Record<string, unknown>
        assert.deepStrictEqual(Object.keys(report), STATUS_KEYS)
        assert.deepStrictEqual(report, {
          router: `127.0.0.1:${fake.port}`,
          protocol: via,
          connected: true,
          uptimeSeconds: 4242,
          externalIp: "122.112.219.229",
          externalIpClass: "public",
          localAddress: "127.0.0.1",
          selection: "127.0.0.1, set by --gateway-address"
        })
        const requests = yield* fake.requests
        assert.isAbove(requests.length, 0)
        assert.isTrue(requests.every((request) => request.version === (via === "pcp" ? 2 : 0)))
      }).pipe(Effect.scoped))
  }

  it.live("status --via nat-pmp prints a table with the epoch", () =>
    Effect.gen(function*() {
      const fake = yield* FakeNatPmp.make()
      fake.faults.epoch = 77
      const result = yield* cli(["gateway", "status", "--via", "nat-pmp", ...aim(fake)])
      assert.strictEqual(result.code, 0, result.err)
      assert.match(result.out, new RegExp(`^gateway\\s+127\\.0\\.0\\.1:${fake.port}$`, "m"))
      assert.match(result.out, /^protocol\s+NAT-PMP$/m)
      assert.match(result.out, /^status\s+connected$/m)
      assert.match(result.out, /^epoch\s+77 s$/m)
      assert.match(result.out, /^external IP\s+122\.112\.219\.229 \(public\)$/m)
      assert.match(result.out, /^local address\s+127\.0\.0\.1$/m)
    }).pipe(Effect.scoped))

  it.live("--via, the gateway and its port can come from the environment", () =>
    Effect.gen(function*() {
      const fake = yield* FakeNatPmp.make()
      const result = yield* cli(["gateway", "status", "--json"], {
        EDGE_CCM_VIA: "pcp",
        EDGE_CCM_GATEWAY: FakeNatPmp.LOOPBACK,
        EDGE_CCM_GATEWAY_PORT: String(fake.port)
      })
      assert.strictEqual(result.code, 0, result.err)
      assert.include(JSON.parse(result.out), { router: `127.0.0.1:${fake.port}`, protocol: "pcp" })
      assert.isTrue((yield* fake.requests).every((request) => request.version === 2))
    }).pipe(Effect.scoped))

  it.live("map --via pcp --json carries the nonce; unmap --via pcp with it removes the mapping", () =>
    Effect.gen(function*() {
      const fake = yield* FakeNatPmp.make()
      const mapped = yield* cli([...mapArgs(fake, "pcp"), "--lease", "10m", "--json"])
      assert.strictEqual(mapped.code, 0, mapped.err)
      const granted = JSON.parse(mapped.out) as Record<string, unknown>
      assert.deepStrictEqual(Object.keys(granted), [...MAP_KEYS, "nonce"])
      assert.match(String(granted["nonce"]), NONCE)
      assert.deepStrictEqual(granted, {
        externalPort: 8080,
        protocol: "TCP",
        internalClient: "127.0.0.1",
        internalPort: 30000,
        description: null,
        leaseDuration: 600,
        externalIp: "122.112.219.229",
        externalIpClass: "public",
        nonce: granted["nonce"]
      })
      assert.deepStrictEqual(fake.table.get("TCP/8080"), {
        kind: "pcp",
        protocol: "TCP",
        externalPort: 8080,
        internalClient: "127.0.0.1",
        internalPort: 30000,
        lifetime: 600,
        nonce: String(granted["nonce"])
      })

      // A fresh process knows nothing of the mapping: the nonce and internal port come from the flags.
      const removed = yield* cli([...unmapArgs(fake, "pcp", 8080, 30000, "TCP"), "--nonce", String(granted["nonce"]).toUpperCase(), "--json"])
      assert.strictEqual(removed.code, 0, removed.err)
      assert.deepStrictEqual(JSON.parse(removed.out), { externalPort: 8080, protocol: "TCP", internalPort: 30000, removed: true })
      assert.strictEqual(fake.table.size, 0)
    }).pipe(Effect.scoped))

  it.live("map --via pcp prints the nonce and the unmap command that deletes the mapping", () =>
    Effect.gen(function*() {
      const fake = yield* FakeNatPmp.make()
      const mapped = yield* cli(mapArgs(fake, "pcp"))
      assert.strictEqual(mapped.code, 0, mapped.err)
      const nonce = fake.table.get("TCP/8080")?.nonce
      assert.match(String(nonce), NONCE)
      assert.strictEqual(
        mapped.out,
        [
          `mapped TCP 122.112.219.229:8080 -> 127.0.0.1:30000 over PCP (lease 3600 s, nonce ${nonce})`,
          `remove with: edge-ccm gateway unmap --via pcp --gateway-address 127.0.0.1 --gateway-port ${fake.port} ` +
          `--external-port 8080 --protocol TCP --internal-port 30000 --nonce ${nonce}`
        ].join("\n")
      )
      // The printed command, run as printed, deletes it.
      const printed = mapped.out.split("\n")[1]!.replace(/^remove with: edge-ccm /, "").split(" ")
      const removed = yield* cli(printed)
      assert.strictEqual(removed.code, 0, removed.err)
      assert.strictEqual(removed.out, "removed TCP 8080")
      assert.strictEqual(fake.table.size, 0)
    }).pipe(Effect.scoped))

  it.live("map --via pcp --nonce renews the mapping that nonce owns; another nonce cannot delete it", () =>
    Effect.gen(function*() {
      const fake = yield* FakeNatPmp.make()
      const first = yield* cli([...mapArgs(fake, "pcp"), "--json"])
      assert.strictEqual(first.code, 0, first.err)
      const nonce = String((JSON.parse(first.out) as Record<string, unknown>)["nonce"])
      const renewed = yield* cli([...mapArgs(fake, "pcp"), "--nonce", nonce, "--lease", "15m", "--json"])
      assert.strictEqual(renewed.code, 0, renewed.err)
      assert.include(JSON.parse(renewed.out), { nonce, leaseDuration: 900 })
      assert.strictEqual(fake.table.size, 1)
      assert.include(fake.table.get("TCP/8080"), { nonce, lifetime: 900 })

      const stranger = "00112233445566778899aabb"
      const refused = yield* cli([...unmapArgs(fake, "pcp", 8080, 30000, "TCP"), "--nonce", stranger])
      assert.strictEqual(refused.code, 1)
      assertOneLine(refused.err)
      assert.strictEqual(
        refused.err,
        `edge-ccm gateway unmap: TCP 8080 on 127.0.0.1:${fake.port} is held by another PCP client ` +
          `(the mapping is owned by another nonce): PCP result 2 (NOT_AUTHORIZED) for nonce ${stranger}: another nonce owns this mapping`
      )
      assert.include(fake.table.get("TCP/8080"), { nonce })
    }).pipe(Effect.scoped))

  it.live("map --via nat-pmp, then unmap --via nat-pmp --internal-port", () =>
    Effect.gen(function*() {
      const fake = yield* FakeNatPmp.make()
      const mapped = yield* cli([...mapArgs(fake, "nat-pmp", 8081, 30001, "UDP"), "--json"])
      assert.strictEqual(mapped.code, 0, mapped.err)
      const granted = JSON.parse(mapped.out) as Record<string, unknown>
      assert.deepStrictEqual(Object.keys(granted), MAP_KEYS)
      assert.deepStrictEqual(granted, {
        externalPort: 8081,
        protocol: "UDP",
        internalClient: "127.0.0.1",
        internalPort: 30001,
        description: null,
        leaseDuration: 3600,
        externalIp: "122.112.219.229",
        externalIpClass: "public"
      })
      assert.include(fake.table.get("UDP/8081"), { kind: "nat-pmp", internalPort: 30001, lifetime: 3600 })

      const human = yield* cli(mapArgs(fake, "nat-pmp", 8082, 30002))
      assert.strictEqual(human.code, 0, human.err)
      assert.strictEqual(
        human.out,
        [
          "mapped TCP 122.112.219.229:8082 -> 127.0.0.1:30002 over NAT-PMP (lease 3600 s)",
          `remove with: edge-ccm gateway unmap --via nat-pmp --gateway-address 127.0.0.1 --gateway-port ${fake.port} ` +
          "--external-port 8082 --protocol TCP --internal-port 30002"
        ].join("\n")
      )

      const removed = yield* cli(unmapArgs(fake, "nat-pmp", 8081, 30001, "UDP"))
      assert.strictEqual(removed.code, 0, removed.err)
      assert.strictEqual(removed.out, "removed UDP 8081 (NAT-PMP: every UDP mapping of this host to internal port 30001)")
      assert.deepStrictEqual(Array.from(fake.table.keys()), ["TCP/8082"])
      const deletion = (yield* fake.requests).at(-1)!
      assert.strictEqual(deletion.opcode, 1)
      assert.strictEqual(deletion.lifetime, 0)
    }).pipe(Effect.scoped))

  for (const via of ["nat-pmp", "pcp"] as const) {
    it.live(`list --via ${via} says in one line that the protocol cannot list, exits 1 and sends nothing`, () =>
      Effect.gen(function*() {
        const fake = yield* FakeNatPmp.make()
        const result = yield* cli(["gateway", "list", "--via", via, "--json", ...aim(fake)])
        assert.strictEqual(result.code, 1)
        assert.strictEqual(result.out, "")
        assertOneLine(result.err)
        assert.strictEqual(
          result.err,
          `edge-ccm gateway list: ${via === "pcp" ? "PCP" : "NAT-PMP"} cannot list a router's mapping table ` +
            "(the protocol has no such request); only UPnP IGD can (--via upnp-igd)"
        )
        assert.strictEqual((yield* fake.requests).length, 0)
      }).pipe(Effect.scoped))
  }

  const unmapUsage: ReadonlyArray<{ readonly name: string; readonly args: ReadonlyArray<string>; readonly error: string }> = [
    {
      name: "pcp without --nonce",
      args: ["--via", "pcp", "--internal-port", "30000"],
      error:
        "--nonce is required with --via pcp: PCP deletes a mapping only with the nonce that gateway map --via pcp printed"
    },
    {
      name: "pcp without --internal-port",
      args: ["--via", "pcp", "--nonce", "00112233445566778899aabb"],
      error: "--internal-port is required with --via pcp: PCP deletes by internal port"
    },
    {
      name: "nat-pmp without --internal-port",
      args: ["--via", "nat-pmp"],
      error: "--internal-port is required with --via nat-pmp: NAT-PMP deletes by internal port"
    },
    {
      name: "nat-pmp with --nonce",
      args: ["--via", "nat-pmp", "--internal-port", "30000", "--nonce", "00112233445566778899aabb"],
      error: "--nonce is PCP's: use it with --via pcp"
    },
    {
      name: "upnp-igd with --nonce",
      args: ["--nonce", "00112233445566778899aabb"],
      error: "--nonce is PCP's: use it with --via pcp"
    },
    {
      name: "upnp-igd with --internal-port",
      args: ["--internal-port", "30000"],
      error: "--internal-port is for --via nat-pmp or pcp: UPnP IGD deletes by external port"
    }
  ]
  for (const usage of unmapUsage) {
    it.live(`unmap, ${usage.name}: a one-line usage error naming the flag, exit 2, nothing sent`, () =>
      Effect.gen(function*() {
        const fake = yield* FakeNatPmp.make()
        const result = yield* cli([
          "gateway",
          "unmap",
          ...aim(fake),
          "--gateway-url",
          "http://127.0.0.1:9/rootDesc.xml",
          "--external-port",
          "8080",
          "--protocol",
          "TCP",
          ...usage.args
        ])
        assert.strictEqual(result.code, 2)
        assertOneLine(result.err)
        assert.strictEqual(result.err, `edge-ccm gateway unmap: ${usage.error}`)
        assert.strictEqual((yield* fake.requests).length, 0)
      }).pipe(Effect.scoped))
  }

  it.live("map --nonce without --via pcp is a usage error; a malformed nonce too", () =>
    Effect.gen(function*() {
      const fake = yield* FakeNatPmp.make()
      const natpmp = yield* cli([...mapArgs(fake, "nat-pmp"), "--nonce", "00112233445566778899aabb"])
      assert.strictEqual(natpmp.code, 2)
      assert.strictEqual(natpmp.err, "edge-ccm gateway map: --nonce is PCP's: use it with --via pcp (this is --via nat-pmp)")
      const malformed = yield* cli([...mapArgs(fake, "pcp"), "--nonce", "xyz"])
      assert.strictEqual(malformed.code, 2)
      assert.include(malformed.err, "--nonce")
      assert.include(malformed.err, "a PCP nonce is 24 hex digits")
      assert.strictEqual((yield* fake.requests).length, 0)
    }).pipe(Effect.scoped))

  it.live("an unknown --via is a usage error naming the flag", () =>
    Effect.gen(function*() {
      const result = yield* cli(["gateway", "status", "--via", "igd"])
      assert.strictEqual(result.code, 2)
      assert.include(result.err, "--via")
      assert.include(result.err, "upnp-igd")
    }))

  it.live("a PCP result code is one line: the action, the router, the code and its name", () =>
    Effect.gen(function*() {
      const fake = yield* FakeNatPmp.make()
      fake.faults.resultCode = 8
      fake.faults.resultCodeOn = "map"
      const result = yield* cli(mapArgs(fake, "pcp"))
      assert.strictEqual(result.code, 1)
      assertOneLine(result.err)
      assert.strictEqual(result.err, `edge-ccm gateway map: MAP TCP 8080 on 127.0.0.1:${fake.port} failed: PCP result 8 (NO_RESOURCES)`)
      assert.strictEqual(fake.table.size, 0)
    }).pipe(Effect.scoped))

  it.live("a NAT-PMP result code is one line: the action, the router, the code and its name", () =>
    Effect.gen(function*() {
      const fake = yield* FakeNatPmp.make()
      fake.faults.resultCode = 2
      fake.faults.resultCodeOn = "map"
      const result = yield* cli(mapArgs(fake, "nat-pmp"))
      assert.strictEqual(result.code, 1)
      assertOneLine(result.err)
      assert.strictEqual(
        result.err,
        `edge-ccm gateway map: map TCP 8080 on 127.0.0.1:${fake.port} failed: NAT-PMP result 2 (NOT_AUTHORIZED): ` +
          "the gateway refuses: NAT-PMP is disabled for us, or its rules deny this port"
      )
    }).pipe(Effect.scoped))

  it.live("a NAT-PMP-only gateway asked over PCP: one line with UNSUPP_VERSION", () =>
    Effect.gen(function*() {
      const fake = yield* FakeNatPmp.make()
      fake.faults.natpmpOnly = true
      const result = yield* cli(["gateway", "status", "--via", "pcp", ...aim(fake)])
      assert.strictEqual(result.code, 1)
      assertOneLine(result.err)
      assert.strictEqual(
        result.err,
        `edge-ccm gateway status: status on 127.0.0.1:${fake.port} failed: PCP result 1 (UNSUPP_VERSION): ` +
          "the gateway speaks NAT-PMP only (it answered with version 0)"
      )
    }).pipe(Effect.scoped))

  it.live("a private WAN address: status says so, map --via nat-pmp fails with double NAT and maps nothing", () =>
    Effect.gen(function*() {
      const fake = yield* FakeNatPmp.make({ externalAddress: "10.0.0.2" })
      const status = yield* cli(["gateway", "status", "--via", "nat-pmp", "--json", ...aim(fake)])
      assert.strictEqual(status.code, 0, status.err)
      assert.include(JSON.parse(status.out), { connected: false, externalIp: null, externalIpClass: "missing" })
      const result = yield* cli(mapArgs(fake, "nat-pmp"))
      assert.strictEqual(result.code, 1)
      assertOneLine(result.err)
      assert.match(result.err, new RegExp(`^edge-ccm gateway map: 127\\.0\\.0\\.1:${fake.port}: .*NAT-PMP result 3, NETWORK_FAILURE`))
      assert.strictEqual(fake.table.size, 0)
    }).pipe(Effect.scoped))

  it.live("no UPnP gateway found: status points at --via pcp and nat-pmp; discover, UPnP only, does not", () =>
    Effect.gen(function*() {
      // Nothing listens on loopback's discard port: the search stays on 127.0.0.1 and finds nothing.
      const search = [
        "--ssdp-address",
        "127.0.0.1",
        "--ssdp-port",
        "9",
        "--no-unicast",
        "--timeout",
        "200ms",
        "--gateway-address",
        "127.0.0.1"
      ]
      const status = yield* cli(["gateway", "status", ...search])
      assert.strictEqual(status.code, 1)
      assertOneLine(status.err)
      assert.strictEqual(
        status.err,
        "edge-ccm gateway status: no usable Internet gateway found: " +
          "the router (127.0.0.1, set by --gateway-address) did not answer the SSDP search; " +
          "a gateway with UPnP off may still answer --via pcp or --via nat-pmp"
      )
      const discover = yield* cli(["gateway", "discover", ...search])
      assert.strictEqual(discover.code, 1)
      assert.notInclude(discover.err, "--via")
    }))

  it.live("discover's help says it is UPnP only", () =>
    Effect.gen(function*() {
      const result = yield* cli(["gateway", "discover", "--help"])
      assert.strictEqual(result.code, 0, result.err)
      assert.include(result.out, "UPnP only: NAT-PMP and PCP have no discovery")
      assert.notMatch(result.out, /^\s*--via\b/m)
    }))
})
