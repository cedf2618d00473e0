/**
 * `edge-ccm gateway watch`: subscribes to the selected UPnP gateway's WAN connection events
 * (GENA) and prints each as it arrives, until interrupted; the subscription is then cancelled.
 */
import { Console, Effect, Stream } from "effect"
import { Command, Flag } from "effect/cli"
import { type WanEvent, watchWanEvents } from "../gateway/upnp/Eventing.ts"
import { UpnpGateway } from "../gateway/upnp/UpnpGateway.ts"
import { against, failWith, upnpLayer } from "./gatewayConnection.ts"
import { connectionFlags, json, portFlag } from "./gatewayFlags.ts"

/** One event for people. */
export const eventLine = (event: WanEvent): string => {
  switch (event._tag) {
    case "Subscribed":
      return `subscribed ${event.sid} for ${event.timeoutSeconds} s`
    case "Renewed":
      return `renewed ${event.sid} for ${event.timeoutSeconds} s`
    case "SubscriptionLost":
      return `subscription ${event.sid || "-"} lost (${event.reason}); subscribing again`
    case "ExternalIPAddressChanged":
      return event.previous === undefined
        ? `external IP ${event.externalIp || "-"}`
        : `external IP ${event.previous || "-"} -> ${event.externalIp || "-"}`
    case "ConnectionStatusChanged":
      return event.previous === undefined ? `status ${event.status}` : `status ${event.previous} -> ${event.status}`
  }
}

/** One event as a JSON line: `event` names it; the other keys are the event's own, null when unknown. */
export const eventJson = (event: WanEvent, at: Date) => {
  const { _tag, ...fields } = event
  return JSON.stringify({
    at: at.toISOString(),
    event: _tag,
    ...Object.fromEntries(Object.entries(fields).map(([key, value]) => [key, value ?? null]))
  })
}

/** `gateway watch`. */
export const watch = Command.make(
  "watch",
  {
    ...connectionFlags,
    json,
    callbackPort: portFlag("callback-port", "Port of the event callback server on the node's LAN address (default: any free port)").pipe(
      Flag.optional
    )
  },
  (flags) =>
    Effect.gen(function*() {
      const selected = yield* against("watch", upnpLayer(flags), Effect.flatMap(UpnpGateway, (gateway) => gateway.selected))
      const eventUrl = selected.service.eventSubUrl
      if (eventUrl === undefined) {
        return yield* failWith("watch", 1, `${selected.service.controlUrl}: the WAN service has no usable event URL`)
      }
      yield* Stream.runForEach(
        watchWanEvents({
          eventUrl,
          localAddress: selected.localAddress,
          ...(flags.callbackPort._tag === "Some" ? { callbackPort: flags.callbackPort.value } : {})
        }),
        (event) => Console.log(flags.json ? eventJson(event, new Date()) : eventLine(event))
      ).pipe(Effect.catchTag("EventSubscriptionFailed", (error) => failWith("watch", 1, error.message)))
    })
).pipe(
  Command.withDescription(
    "Subscribe to the UPnP gateway's WAN events (external IP, connection status) and print each as it arrives, " +
      "until interrupted (UPnP IGD only)"
  ),
  Command.withExamples([{ command: "edge-ccm gateway watch --json", description: "One JSON object per line" }])
)
