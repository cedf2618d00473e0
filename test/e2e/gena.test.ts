/**
 * UPnP eventing (GENA) against the lab's real miniupnpd, from the node namespace
 * (192.168.77.10): the subscription's initial NOTIFY carries the WAN address, a renumbering on
 * the router arrives as a NOTIFY, forged NOTIFYs from the peer host and from the router's own
 * address are refused without being read, and a router restart is survived. Then
 * `edge-ccm gateway watch` once, as the real executable.
 */
import { NodeHttpClient } from "@effect/platform-node"
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import { Effect, Fiber, Metric, Stream } from "effect"
import { eventNotifies } from "../../src/gateway/metrics.ts"
import { Description } from "../../src/gateway/upnp/Description.ts"
import { type WanEvent, watchWanEvents } from "../../src/gateway/upnp/Eventing.ts"
import * as lab from "./support/lab.ts"

let state: lab.LabState
let eventUrl: string

beforeAll(async () => {
  state = lab.loadLab()
  const root = await Effect.runPromise(
    Effect.flatMap(Description, (description) => description.fetch(state.rootDescUrl)).pipe(
      Effect.provide(Description.layer()),
      Effect.provide(NodeHttpClient.layerNodeHttp)
    )
  )
  eventUrl = root.wanServices[0]?.eventSubUrl ?? ""
})

afterEach(async () => {
  await lab.restoreGateway()
})

afterAll(async () => {
  await lab.stopAllProcesses()
})

/** A watch running in this process, its events and refusals recorded as they come. */
const startWatch = (options: { readonly requestedTimeoutSeconds?: number; readonly callbackPort?: number } = {}) => {
  const events: Array<{ readonly at: number; readonly event: WanEvent }> = []
  const refused: Array<string> = []
  const fiber = Effect.runFork(
    watchWanEvents({
      eventUrl,
      localAddress: state.nodeIp,
      onRefused: (reason, status) => refused.push(`${status} ${reason}`),
      ...options
    }).pipe(Stream.runForEach((event) => Effect.sync(() => events.push({ at: performance.now(), event }))))
  )
  const stop = () => Effect.runPromise(Fiber.interrupt(fiber))
  const addresses = () =>
    events.flatMap(({ at, event }) => event._tag === "ExternalIPAddressChanged" ? [{ at, ip: event.externalIp }] : [])
  const subscriptions = () => events.flatMap(({ event }) => event._tag === "Subscribed" ? [event.sid] : [])
  return { events, refused, stop, addresses, subscriptions }
}

/** A NOTIFY sent with curl from a lab namespace, from `source`; returns the HTTP status curl saw. */
const forgeNotify = async (
  from: "peer" | "gw",
  url: string,
  headers: Readonly<Record<string, string>>,
  bodyBytes: number
) => {
  const body = `<e:propertyset xmlns:e="urn:schemas-upnp-org:event-1-0"><e:property><ExternalIPAddress>6.6.6.6</ExternalIPAddress></e:property></e:propertyset>`
  const script = `head -c ${bodyBytes} /dev/zero | tr '\\0' ' ' | { printf '%s' '${body}'; cat; } | ` +
    `curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X NOTIFY ` +
    Object.entries(headers).map(([name, value]) => `-H '${name}: ${value}' `).join("") +
    `-H 'Content-Type: text/xml' --data-binary @- '${url}'`
  const result = await lab.inNamespace(from, ["sh", "-c", script], { timeoutMs: 15_000 })
  return result.stdout.trim()
}

/** The NOTIFYs this process's watches have accepted from the lab's router so far. */
const acceptedNotifies = () =>
  Effect.runPromise(Metric.value(Metric.withAttributes(eventNotifies, { router: new URL(eventUrl).hostname, result: "accepted" })))
    .then((counter) => counter.count)

/**
 * Renumbers the router's WAN, waiting between the old address going and the new one coming until
 * `seen` says the first change was heard: miniupnpd drops a change made while its NOTIFY of the
 * previous one is in flight, so without the wait the test would race the router.
 */
const renumber = (cidr: string, seen: () => boolean) =>
  lab.setGatewayWanAddress(cidr, {
    afterRemoval: async () => {
      await lab.waitFor(seen, { timeoutMs: 10_000, description: "the NOTIFY of the removed address" })
    }
  })

describe("GENA against the lab's miniupnpd", () => {
  it("the description gives the WAN service's event URL on the router", () => {
    expect(eventUrl).toBe(`http://${state.gatewayLanIp}:49536/evt/IPConn`)
  })

  it("the initial NOTIFY brings the WAN address; a renumbering arrives as NOTIFYs within milliseconds", async () => {
    const watch = startWatch()
    try {
      await lab.waitFor(() => watch.addresses().length >= 1, { timeoutMs: 10_000, description: "the initial NOTIFY" })
      expect(watch.subscriptions()).toHaveLength(1)
      expect(watch.addresses()[0]?.ip).toBe(state.gatewayWanIp)
      let removedAt = 0
      let addedAt = 0
      await lab.setGatewayWanAddress("122.112.219.230/24", {
        afterRemoval: async () => {
          removedAt = performance.now()
          await lab.waitFor(() => watch.addresses().length >= 2, { timeoutMs: 10_000, description: "the removal's NOTIFY" })
          addedAt = performance.now()
        }
      })
      const changed = await lab.waitFor(
        () => watch.addresses().find((address) => address.ip === "122.112.219.230"),
        { timeoutMs: 10_000, description: "a NOTIFY with the new address" }
      )
      const removal = watch.addresses()[1]!
      console.log(
        `NOTIFY of the removal ${(removal.at - removedAt).toFixed(0)} ms after it, ` +
          `of the new address ${(changed.at - addedAt).toFixed(0)} ms after it`
      )
      expect(watch.addresses().map((address) => address.ip)).toEqual([state.gatewayWanIp, "0.0.0.0", "122.112.219.230"])
      expect(watch.events.map(({ event }) => event._tag)).not.toContain("SubscriptionLost")
    } finally {
      await watch.stop()
    }
  })

  it("forged NOTIFYs (from the peer host, with a wrong SID, with a 1 MiB body) are refused unread, memory stays bounded", async () => {
    const watch = startWatch({ callbackPort: 40123 })
    try {
      await lab.waitFor(() => watch.addresses().length >= 1, { timeoutMs: 10_000, description: "the initial NOTIFY" })
      const sid = watch.subscriptions()[0]!
      const url = `http://${state.nodeIp}:40123/gena/${"0".repeat(32)}`
      const genaHeaders = { "NT": "upnp:event", "NTS": "upnp:propchange", "SEQ": "1" }
      const rssBefore = process.memoryUsage().rss
      expect(await forgeNotify("peer", url, { ...genaHeaders, "SID": sid }, 0)).toBe("000")
      // From the router's own address (another process on the router), as an attacker there could.
      const fromRouter = (headers: Record<string, string>, bytes: number) =>
        forgeNotify("gw", url, { ...genaHeaders, ...headers }, bytes)
      expect(await fromRouter({ "SID": "uuid:00000000-0000-0000-0000-00000000dead" }, 0)).toBe("412")
      const big = await Promise.all(Array.from({ length: 8 }, () => fromRouter({ "SID": sid }, 1024 * 1024)))
      // curl may see the connection closed while it still sends: 413 or nothing, never 200.
      for (const status of big) expect(["413", "000"]).toContain(status)
      const rssGrowth = (process.memoryUsage().rss - rssBefore) / (1024 * 1024)
      console.log(`8 forged 1 MiB NOTIFYs: RSS ${(rssGrowth >= 0 ? "+" : "")}${rssGrowth.toFixed(1)} MiB`)
      expect(rssGrowth).toBeLessThan(8)
      await lab.waitFor(() => watch.refused.length >= 10, { timeoutMs: 10_000, description: "ten refusals" })
      expect(watch.refused[0]).toBe(`0 connection from ${state.peerIp}, not the router ${state.gatewayLanIp}`)
      expect(watch.refused[1]).toBe("412 unknown SID")
      for (const refusal of watch.refused.slice(2)) expect(refusal).toMatch(/^413 body of 10487\d\d bytes is over 16384$/)
      // Nothing forged got through, and the genuine stream goes on.
      expect(watch.addresses().map((address) => address.ip)).toEqual([state.gatewayWanIp])
      await renumber("122.112.219.231/24", () => watch.addresses().length >= 2)
      await lab.waitFor(() => watch.addresses().some((address) => address.ip === "122.112.219.231"), {
        timeoutMs: 10_000,
        description: "the genuine NOTIFY after the forgeries"
      })
      expect(watch.events.map(({ event }) => event._tag)).not.toContain("SubscriptionLost")
    } finally {
      await watch.stop()
    }
  })

  it("a router restart: the renewal's 412 leads to a new subscription, whose NOTIFYs arrive", async () => {
    const watch = startWatch({ requestedTimeoutSeconds: 4 })
    try {
      await lab.waitFor(() => watch.addresses().length >= 1, { timeoutMs: 10_000, description: "the initial NOTIFY" })
      const first = watch.subscriptions()[0]!
      const acceptedBefore = await acceptedNotifies()
      await lab.rebootGateway()
      await lab.waitFor(() => watch.subscriptions().length >= 2, { timeoutMs: 15_000, description: "a new subscription" })
      // Its initial NOTIFY (the address unchanged, so no event) must be in before the renumbering,
      // whose removal miniupnpd would not send while that one is in flight.
      await lab.waitFor(async () => (await acceptedNotifies()) > acceptedBefore, {
        timeoutMs: 10_000,
        description: "the new subscription's initial NOTIFY"
      })
      const lost = watch.events.find(({ event }) => event._tag === "SubscriptionLost")?.event
      expect(lost).toEqual({ _tag: "SubscriptionLost", sid: first, reason: "renewal failed: renewal answered HTTP 412" })
      const heard = watch.addresses().length
      await renumber("122.112.219.232/24", () => watch.addresses().length > heard)
      await lab.waitFor(() => watch.addresses().some((address) => address.ip === "122.112.219.232"), {
        timeoutMs: 10_000,
        description: "a NOTIFY on the new subscription"
      })
    } finally {
      await watch.stop()
    }
  })

  it("edge-ccm gateway watch --json prints the events, and unsubscribes on Ctrl-C", async () => {
    const cli = lab.spawnInNamespace("lan", [process.execPath, "src/bin.ts", "gateway", "watch", "--json"], {
      cwd: new URL("../..", import.meta.url).pathname
    })
    const lines = () =>
      cli.stdout().split("\n").filter((line) => line !== "").map((line) => JSON.parse(line) as Record<string, unknown>)
    await lab.waitFor(() => lines().some((line) => line["event"] === "ExternalIPAddressChanged"), {
      timeoutMs: 20_000,
      description: "the first events"
    })
    await renumber("122.112.219.233/24", () => lines().some((line) => line["externalIp"] === "0.0.0.0"))
    await lab.waitFor(() => lines().some((line) => line["externalIp"] === "122.112.219.233"), {
      timeoutMs: 10_000,
      description: "the renumbering printed"
    })
    const sid = String(lines().find((line) => line["event"] === "Subscribed")?.["sid"])
    expect(lines().slice(0, 3).map((line) => line["event"])).toEqual([
      "Subscribed",
      "ExternalIPAddressChanged",
      "ConnectionStatusChanged"
    ])
    expect(lines().find((line) => line["externalIp"] === "122.112.219.233")).toMatchObject({ previous: "0.0.0.0" })
    const exit = await cli.stop({ signal: "SIGINT" })
    expect(exit.signal === "SIGINT" || exit.code !== null).toBe(true)
    // Unsubscribed: the router no longer knows the SID.
    const renewal = await lab.inNamespace("lan", [
      "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "SUBSCRIBE", "-H", `SID: ${sid}`, "-H", "TIMEOUT: Second-30", eventUrl
    ])
    expect(renewal.stdout).toBe("412")
  })
})
