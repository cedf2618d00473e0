/** Router call metrics, by action and outcome (served on /metrics by the runtime). */
import { Clock, Effect, Exit, Metric } from "effect"
import type { GatewayError } from "./GatewayError.ts"

/** Router calls by action. */
export const gatewayRequests = Metric.counter("edge_ccm_gateway_requests_total", {
  description: "Calls to the router, by action (SOAP action or NAT-PMP/PCP opcode)",
  incremental: true
})

/** Failed router calls by action and code. */
export const gatewayRequestErrors = Metric.counter("edge_ccm_gateway_request_errors_total", {
  description: "Failed calls to the router, by action and code (the UPnP/PCP code, or unreachable, protocol)",
  incremental: true
})

/** Router call latency. */
export const gatewayRequestDuration = Metric.histogram("edge_ccm_gateway_request_duration_seconds", {
  description: "Router call latency, retries included",
  boundaries: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]
})

/** GENA NOTIFYs from the router, by router address and result. */
export const eventNotifies = Metric.counter("edge_ccm_gateway_event_notifies_total", {
  description: "UPnP event NOTIFYs at the callback server, by router and result (accepted: ours and in sequence; " +
    "refused before the body was read: another source, SID, path or size)",
  incremental: true
})

const errorCode = (error: GatewayError): string => {
  switch (error._tag) {
    case "UpnpError":
    case "PortControlError":
      return String(error.code)
    case "GatewayUnreachable":
    case "GatewayNotFound":
      return "unreachable"
    case "PortConflict":
      return "conflict"
    case "DoubleNat":
      return "double_nat"
    case "GatewayProtocolError":
    case "InvalidMapping":
      return "protocol"
    case "PortControlError":
      return String(error.code)
  }
}

/** Counts and times one router call. */
export const measured = <A, E extends GatewayError, R>(action: string, effect: Effect.Effect<A, E, R>) =>
  Effect.gen(function*() {
    const started = yield* Clock.currentTimeMillis
    const exit = yield* Effect.exit(effect)
    const ended = yield* Clock.currentTimeMillis
    yield* Metric.update(Metric.withAttributes(gatewayRequests, { action }), 1)
    yield* Metric.update(Metric.withAttributes(gatewayRequestDuration, { action }), (ended - started) / 1000)
    if (Exit.isFailure(exit)) {
      const failure = exit.cause.reasons.find((reason) => reason._tag === "Fail")
      const code = failure?._tag === "Fail" ? errorCode(failure.error) : "defect"
      yield* Metric.update(Metric.withAttributes(gatewayRequestErrors, { action, code }), 1)
    }
    return yield* exit
  })
