/**
 * A hostile LAN host: a fake IGDv2 run in the lab's `peer` namespace (192.168.77.50). It
 * answers SSDP M-SEARCH on the multicast group, serves a root description with an
 * InternetGatewayDevice:2 and a WANIPConnection:2 that says Connected with a public address
 * of its own, and prints every SOAP call it receives as one JSON line, so a test can assert
 * whether the controller ever spoke to it.
 *
 *   node test/e2e/support/hostile-igd.ts <address> <http-port> <external-ip>
 *
 * Started by the e2e tests with spawnInNamespace("peer", …) and stopped by its PID.
 */
import { Effect } from "effect"
import * as FakeIgd from "../../support/FakeIgd.ts"

const [address = "192.168.77.50", port = "49152", externalIp = "122.112.219.99"] = process.argv.slice(2)

const main = Effect.gen(function*() {
  const fake = yield* FakeIgd.make({
    host: address,
    port: Number(port),
    externalIp,
    igdVersion: 2,
    ssdpMulticast: { group: "239.255.255.250", port: 1900 },
    onRequest: (request) =>
      console.log(JSON.stringify({ soap: request.action ?? null, from: request.from, args: Object.fromEntries(request.args) }))
  })
  console.log(JSON.stringify({ ready: { location: fake.location, controlUrl: fake.controlUrl } }))
  return yield* Effect.never
}).pipe(Effect.scoped)

Effect.runFork(main)
