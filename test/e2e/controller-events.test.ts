/**
 * The controller hears the router: on the real lab (miniupnpd as the router, a real
 * kube-apiserver, the controller as a process in the node namespace), a WAN renumbering reaches
 * the Service's status through the router's GENA NOTIFY, long before a probe would have looked;
 * with eventing off the probe still carries it, saying nothing per pass; forged NOTIFYs from the
 * peer host and from the router's own address are refused unread; and after a router reboot the
 * controller subscribes afresh at once.
 */
import * as fs from "node:fs"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import { showOutputOnFailure } from "./support/failureOutput.ts"
import {
  counterBy,
  deleteTestServices,
  eventsFor,
  gatewayCalls,
  getService,
  ingressIp,
  loadBalancerService,
  metricsText,
  sample,
  startController
} from "./support/controller.ts"
import {
  inNamespace,
  kubectl,
  type LabProcess,
  loadLab,
  rebootGateway,
  restoreGateway,
  setGatewayWanAddress,
  waitFor
} from "./support/lab.ts"

const PUBLIC_IP = "122.112.219.229"
const lab = loadLab()

let controller: (LabProcess & { readonly metricsUrl: string }) | undefined

/** The controller's JSON log messages so far. */
const messages = (): Array<string> =>
  (controller?.output() ?? "").split("\n").flatMap((line) => {
    if (!line.startsWith("{")) return []
    try {
      const parsed = JSON.parse(line) as { readonly message?: unknown }
      return [Array.isArray(parsed.message) ? parsed.message.join(" ") : String(parsed.message)]
    } catch {
      return []
    }
  })

const logged = (pattern: RegExp) => messages().filter((message) => pattern.test(message))

const create = async (name: string, port: number) => {
  const result = await kubectl(["create", "-f", "-"], { input: loadBalancerService(name, { ports: [{ name: "http", port, protocol: "TCP" }] }) })
  expect(result.code, result.stderr).toBe(0)
}

const published = (name: string, ip: string) =>
  waitFor(async () => ingressIp(await getService(name)) === ip, { description: `${name} published at ${ip}`, timeoutMs: 20_000, intervalMs: 20 })

/**
 * Until no NOTIFY has been accepted for `quietMs`. A NOTIFY's delivery on the LAN takes
 * milliseconds, a few hundred on a loaded machine; a second without one means none is in flight.
 */
const notifiesQuiet = async (quietMs: number) => {
  let count = -1
  let since = 0
  await waitFor(async () => {
    const now = (await counterBy(controller!, "edge_ccm_gateway_event_notifies_total", "result"))["accepted"] ?? 0
    if (now !== count) {
      count = now
      since = performance.now()
    }
    return performance.now() - since >= quietMs
  }, { description: `no NOTIFY for ${quietMs} ms`, timeoutMs: 15_000, intervalMs: 100 })
}

/** The controller's resident memory (kB), from /proc. */
const rssKb = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? "0")

const restart = async (flags: ReadonlyArray<string> = []) => {
  await controller?.stop()
  controller = await startController({ flags })
}

beforeAll(async () => {
  await restart()
})

afterAll(async () => {
  await restoreGateway()
  await deleteTestServices()
  await controller?.stop()
})

showOutputOnFailure({ controller: () => controller })

afterEach(async () => {
  await restoreGateway()
})

describe("the controller hears the router", () => {
  it("a WAN renumbering reaches the Service's status through the NOTIFY, long before a probe; the log names it", async () => {
    await create("events-web", 18080)
    await published("events-web", PUBLIC_IP)
    await waitFor(() => logged(/^UPnP events from the upnp-igd router: subscribed \(SID uuid:/).length === 1, {
      description: "the subscription logged",
      timeoutMs: 15_000
    })
    expect(sample(await metricsText(controller!), 'edge_ccm_gateway_event_subscription{protocol="upnp-igd"}')).toBe(1)
    let addedAt = 0
    await setGatewayWanAddress("122.112.219.230/24", {
      // miniupnpd drops a change made while its NOTIFY of the previous one is in flight.
      afterRemoval: async () => {
        await waitFor(() => logged(/^NOTIFY SID .* SEQ \d+: ExternalIPAddress 0\.0\.0\.0;/).length > 0, {
          description: "the removal's NOTIFY in the log",
          timeoutMs: 10_000
        })
        addedAt = performance.now()
      }
    })
    await published("events-web", "122.112.219.230")
    const took = performance.now() - addedAt
    console.log(`new WAN address → Service status: ${took.toFixed(0)} ms`)
    // The probe is relaxed to 30 s while subscribed, and the second read comes 1.5 s after a NOTIFY:
    // sooner than both, only the NOTIFY of the new address can have carried it.
    expect(took).toBeLessThan(1_500)
    const cause = logged(/^NOTIFY SID uuid:\S+ SEQ \d+: ExternalIPAddress 122\.112\.219\.230; reading the router's external address/)
    expect(cause).toHaveLength(1)
    const after = messages().slice(messages().indexOf(cause[0]!))
    expect(after).toContain("router external address is now 122.112.219.230")
    // The removal's NOTIFY did not withdraw the address (a passing state): the change is one Event.
    await waitFor(async () => (await eventsFor("events-web")).some((event) => event.reason === "ExternalIPChanged"), {
      description: "the ExternalIPChanged Event",
      timeoutMs: 10_000
    })
    const notifies = await counterBy(controller!, "edge_ccm_gateway_event_notifies_total", "result")
    expect(notifies["accepted"]).toBeGreaterThanOrEqual(3)
  })

  it("forged NOTIFYs (from the peer host, a wrong SID, 1 MiB bodies) are refused unread: status unchanged, memory bounded", async () => {
    await create("events-forged", 18081)
    await published("events-forged", PUBLIC_IP)
    const sid = /SID (uuid:\S+),/.exec(logged(/^UPnP events from the upnp-igd router: subscribed/).at(-1) ?? "")?.[1]
    expect(sid).toBeDefined()
    // The callback server: the controller's one listening socket on the node address besides health and metrics.
    const listening = await inNamespace("lan", ["ss", "-Hltnp"])
    const port = listening.stdout.split("\n")
      .filter((line) => line.includes(`pid=${controller!.pid},`))
      .map((line) => /\s192\.168\.77\.10:(\d+)\s/.exec(line)?.[1])
      .find((found) => found !== undefined && found !== "10258" && found !== "10259")
    expect(port).toBeDefined()
    const url = `http://${lab.nodeIp}:${port}/gena/${"0".repeat(32)}`
    const forge = async (from: "peer" | "gw", extra: string, bytes: number) => {
      const body = `<e:propertyset xmlns:e="urn:schemas-upnp-org:event-1-0"><e:property><ExternalIPAddress>6.6.6.6</ExternalIPAddress></e:property></e:propertyset>`
      const script = `head -c ${bytes} /dev/zero | tr '\\0' ' ' | { printf '%s' '${body}'; cat; } | ` +
        `curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X NOTIFY -H 'NT: upnp:event' -H 'NTS: upnp:propchange' ` +
        `-H 'SEQ: 1' ${extra} -H 'Content-Type: text/xml' --data-binary @- '${url}'`
      return (await inNamespace(from, ["sh", "-c", script], { timeoutMs: 15_000 })).stdout.trim()
    }
    const refusedBefore = (await counterBy(controller!, "edge_ccm_gateway_event_notifies_total", "result"))["refused"] ?? 0
    const rssBefore = rssKb(controller!.pid)
    expect(await forge("peer", `-H 'SID: ${sid}'`, 0)).toBe("000")
    expect(await forge("gw", "-H 'SID: uuid:00000000-0000-0000-0000-00000000dead'", 0)).toBe("412")
    const big = await Promise.all(Array.from({ length: 8 }, () => forge("gw", `-H 'SID: ${sid}'`, 1024 * 1024)))
    // curl may see the connection closed while it still sends: 413 (or 412: not our path) or nothing, never 200.
    for (const status of big) expect(["412", "413", "000"]).toContain(status)
    const growthMib = (rssKb(controller!.pid) - rssBefore) / 1024
    console.log(`10 forged NOTIFYs (8 of 1 MiB): controller RSS ${growthMib >= 0 ? "+" : ""}${growthMib.toFixed(1)} MiB`)
    expect(growthMib).toBeLessThan(16)
    await waitFor(async () => {
      const refused = (await counterBy(controller!, "edge_ccm_gateway_event_notifies_total", "result"))["refused"] ?? 0
      return refused - refusedBefore >= 10
    }, { description: "ten refusals counted", timeoutMs: 10_000 })
    expect(logged(/6\.6\.6\.6/)).toEqual([])
    expect(ingressIp(await getService("events-forged"))).toBe(PUBLIC_IP)
  })

  it("after a router reboot the controller subscribes afresh at once, and the next NOTIFY arrives", async () => {
    await create("events-reboot", 18082)
    await published("events-reboot", PUBLIC_IP)
    const subscribed = () => logged(/^UPnP events from the upnp-igd router: subscribed \(SID uuid:/)
    const before = subscribed().length
    const rebootedAt = performance.now()
    await rebootGateway()
    await waitFor(() => subscribed().length > before, { description: "a new subscription", timeoutMs: 15_000 })
    console.log(`router reboot → new subscription: ${(performance.now() - rebootedAt).toFixed(0)} ms`)
    // The renewal would come 15 min later: the announcement or the probe's reboot judgement did it.
    expect(logged(/subscribing to the upnp-igd router's events afresh$/).length).toBeGreaterThanOrEqual(1)
    const sid = /SID (uuid:\S+),/.exec(subscribed().at(-1)!)?.[1]
    // miniupnpd drops a change made while a NOTIFY is in flight, and shows no sign of one: the new
    // subscription's first NOTIFY (the address as it is) and those of the repair's AddPortMappings
    // (the table's size changed) must all be in before the renumbering.
    await waitFor(() => logged(new RegExp(`^NOTIFY SID ${sid} SEQ 0: `)).length > 0, {
      description: "the new subscription's initial NOTIFY",
      timeoutMs: 10_000
    })
    await waitFor(async () => (await eventsFor("events-reboot")).some((event) => event.reason === "MappingRepaired"), {
      description: "the rebooted router's mapping repaired",
      timeoutMs: 15_000
    })
    await notifiesQuiet(1_000)
    await setGatewayWanAddress("122.112.219.231/24", {
      afterRemoval: () =>
        waitFor(() => logged(new RegExp(`^NOTIFY SID ${sid} SEQ \\d+: ExternalIPAddress 0\\.0\\.0\\.0;`)).length > 0, {
          description: "the removal's NOTIFY on the new subscription",
          timeoutMs: 10_000
        }).then(() => undefined)
    })
    await published("events-reboot", "122.112.219.231")
  })
})

describe("a controller with eventing off", () => {
  beforeAll(async () => {
    await restart(["--upnp-events=false"])
  })

  it("the renumbering still arrives through the probe, and nothing is logged per pass", async () => {
    await create("events-off", 18083)
    await published("events-off", PUBLIC_IP)
    expect(logged(/UPnP events/)).toEqual(["UPnP events are off (--upnp-events=false): probing the upnp-igd router every 2s"])
    // The event for the mapping is sent after the status: wait for it, so that it does not count as a pass's line.
    await waitFor(() => logged(/^event Normal EnsuredLoadBalancer: .*TCP 18083 mapped/).length > 0, {
      description: "the EnsuredLoadBalancer event",
      timeoutMs: 10_000
    })
    // Three probe passes at rest: not a line.
    const quiet = messages().length
    const probesBefore = (await gatewayCalls(controller!))["GetStatusInfo"] ?? 0
    await waitFor(async () => ((await gatewayCalls(controller!))["GetStatusInfo"] ?? 0) >= probesBefore + 3, {
      description: "three probes",
      timeoutMs: 15_000
    })
    expect(messages().slice(quiet)).toEqual([])
    const movedAt = performance.now()
    await setGatewayWanAddress("122.112.219.232/24")
    await published("events-off", "122.112.219.232")
    console.log(`eventing off: new WAN address → Service status: ${(performance.now() - movedAt).toFixed(0)} ms`)
    expect(logged(/^NOTIFY SID/)).toEqual([])
    expect(logged(/UPnP events/)).toHaveLength(1)
  })
})
