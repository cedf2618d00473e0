import { assert, describe, it } from "@effect/vitest"
import { eventJson, eventLine } from "../../src/cli/GatewayWatchCommand.ts"

describe("edge-ccm gateway watch output", () => {
  const at = new Date("2026-12-07T08:01:00.688Z")

  it("one line per event for people, the first value without an arrow", () => {
    assert.deepStrictEqual(
      [
        eventLine({ _tag: "Subscribed", sid: "uuid:1", timeoutSeconds: 1800 }),
        eventLine({ _tag: "ExternalIPAddressChanged", externalIp: "122.112.219.229", previous: undefined, sid: "uuid:1", seq: 0 }),
        eventLine({ _tag: "ExternalIPAddressChanged", externalIp: "", previous: "122.112.219.229", sid: "uuid:1", seq: 1 }),
        eventLine({ _tag: "ConnectionStatusChanged", status: "Disconnected", previous: "Connected", sid: "uuid:1", seq: 1 }),
        eventLine({ _tag: "SubscriptionLost", sid: "uuid:1", reason: "renewal failed: renewal answered HTTP 412" })
      ],
      [
        "subscribed uuid:1 for 1800 s",
        "external IP 122.112.219.229",
        "external IP 122.112.219.229 -> -",
        "status Connected -> Disconnected",
        "subscription uuid:1 lost (renewal failed: renewal answered HTTP 412); subscribing again"
      ]
    )
  })

  it("--json: one object per line, `event` naming it, null where a value is unknown", () => {
    const line = eventJson({ _tag: "ExternalIPAddressChanged", externalIp: "122.112.219.229", previous: undefined, sid: "uuid:1", seq: 0 }, at)
    assert.notInclude(line, "\n")
    assert.deepStrictEqual(JSON.parse(line), {
      at: "2026-12-07T08:01:00.688Z",
      event: "ExternalIPAddressChanged",
      externalIp: "122.112.219.229",
      previous: null,
      sid: "uuid:1",
      seq: 0
    })
  })
})
