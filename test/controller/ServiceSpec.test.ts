import { describe, expect, it } from "@effect/vitest"
import type { Service } from "../../src/kube/objects.ts"
import { Duration } from "effect"
import { defaultLeaseRange, parseDuration } from "../../src/controller/DurationString.ts"
import {
  desiredService,
  FINALIZER,
  isBystander,
  mappingDescription,
  MAX_DESCRIPTION_BYTES,
  selectService
} from "../../src/controller/ServiceSpec.ts"

const options = { loadBalancerClass: "midokura.com/edge" }
const desiredOptions = { clusterName: "kubernetes", defaultLease: Duration.hours(1), leaseRange: defaultLeaseRange }

const svc = (
  spec: Partial<NonNullable<Service["spec"]>> = {},
  annotations: Record<string, string> | null = { "midokura.com/load-balancer-type": "upnp-igd" }
): Service => ({
  metadata: {
    name: "http-nginx-service",
    namespace: "default",
    uid: "u1",
    creationTimestamp: new Date("2026-01-01T00:00:00Z"),
    ...(annotations === null ? {} : { annotations })
  },
  spec: {
    type: "LoadBalancer",
    ports: [{ name: "http", port: 8080, nodePort: 30000, protocol: "TCP" }],
    ...spec
  }
})

describe("selectService", () => {
  it("takes the seed's annotation and our class, nothing else", () => {
    expect(selectService(svc(), options)).toEqual({ _tag: "Ours", backend: "upnp-igd" })
    expect(selectService(svc({ loadBalancerClass: "midokura.com/edge" }, null), options)._tag).toBe("Ours")
    expect(selectService(svc({}, null), options)._tag).toBe("NotOurs")
    expect(selectService(svc({ type: "NodePort" }), options)._tag).toBe("NotOurs")
    expect(selectService(svc({ type: "ClusterIP" }), options)._tag).toBe("NotOurs")
  })

  it("never touches a Service of another class, even with our annotation", () => {
    expect(selectService(svc({ loadBalancerClass: "metallb.io/metallb" }), options)._tag).toBe("NotOurs")
  })

  it("names the annotation and the accepted values when the value is unknown", () => {
    const selection = selectService(svc({}, { "midokura.com/load-balancer-type": "upnp" }), options)
    expect(selection).toMatchObject({ _tag: "Invalid", annotation: "midokura.com/load-balancer-type" })
    expect(selection._tag === "Invalid" && selection.reason).toMatch(/"upnp".*accepted: upnp-igd/)
  })
})

describe("isBystander", () => {
  it("is a Service that is not a LoadBalancer and carries nothing of ours", () => {
    expect(isBystander(svc({ type: "ClusterIP" }, null))).toBe(true)
    expect(isBystander(svc({ type: "NodePort" }, { "example.com/x": "y" }))).toBe(true)
    expect(isBystander(svc({}, null))).toBe(false)
    expect(isBystander(svc({ type: "ClusterIP" }))).toBe(false)
    const leaving = svc({ type: "ClusterIP" }, null)
    expect(isBystander({ ...leaving, metadata: { ...leaving.metadata, finalizers: [FINALIZER] } })).toBe(false)
  })
})

describe("desiredService", () => {
  it("maps each port to the nodePort with the seed's description format", () => {
    const desired = desiredService(svc(), "upnp-igd", desiredOptions)
    expect(desired.ports).toEqual([{
      portName: "http",
      protocol: "TCP",
      externalPort: 8080,
      internalPort: 30000,
      description: "kubernetes/default/http-nginx-service/http"
    }])
    expect(desired.leaseSeconds).toBe(3600)
    expect(desired.createdAt).toBe(Date.parse("2026-01-01T00:00:00Z"))
  })

  it("names an unnamed port by its number", () => {
    const desired = desiredService(svc({ ports: [{ port: 53, nodePort: 30053, protocol: "UDP" }] }), "upnp-igd", desiredOptions)
    expect(desired.ports[0]!.description).toBe("kubernetes/default/http-nginx-service/53")
  })

  it("reports SCTP and a missing nodePort per port instead of failing", () => {
    const desired = desiredService(
      svc({
        ports: [
          { name: "sig", port: 2905, nodePort: 30100, protocol: "SCTP" },
          { name: "web", port: 80 },
          { name: "ok", port: 443, nodePort: 30443 }
        ]
      }),
      "upnp-igd",
      desiredOptions
    )
    expect(desired.ports.map((p) => p.portName)).toEqual(["ok"])
    expect(desired.unmappable.map((p) => [p.portName, p.reason])).toEqual([
      ["sig", "UnsupportedProtocol"],
      ["web", "NoNodePort"]
    ])
  })

  it("reads the lease override, and warns (keeping the default) on a bad one", () => {
    const override = desiredService(svc({}, { "midokura.com/mapping-lease": "10m" }), "upnp-igd", desiredOptions)
    expect(override.leaseSeconds).toBe(600)
    const bad = desiredService(svc({}, { "midokura.com/mapping-lease": "forever" }), "upnp-igd", desiredOptions)
    expect(bad.leaseSeconds).toBe(3600)
    expect(bad.warnings[0]!.message).toContain("midokura.com/mapping-lease")
    expect(bad.warnings[0]!.message).toContain("forever")
  })

  const leaseOf = (value: string) =>
    desiredService(svc({}, { "midokura.com/load-balancer-type": "upnp-igd", "midokura.com/mapping-lease": value }), "upnp-igd", desiredOptions)

  it.each(["-5s", "Infinity", "0.4s", "1s", "8d", "-5 seconds", "1e400s", "2 weeks"])(
    "refuses the lease %s with an InvalidAnnotation that names it and the range, and uses the default",
    (value) => {
      const desired = leaseOf(value)
      expect(desired.leaseSeconds).toBe(3600)
      expect(desired.warnings).toHaveLength(1)
      expect(desired.warnings[0]!.reason).toBe("InvalidAnnotation")
      expect(desired.warnings[0]!.message).toContain(JSON.stringify(value))
      expect(desired.warnings[0]!.message).toContain("0 (permanent) or 2m to 7d")
    }
  )

  it.each([["0", 0], ["2m", 120], ["1h", 3600], ["7d", 604_800], ["90 minutes", 5400], ["1h30m", 5400]] as const)(
    "accepts the lease %s",
    (value, seconds) => {
      const desired = leaseOf(value)
      expect(desired.warnings).toEqual([])
      expect(desired.leaseSeconds).toBe(seconds)
    }
  )

  it("takes the lease range it is given", () => {
    const narrow = { ...desiredOptions, leaseRange: { min: Duration.minutes(10), max: Duration.hours(2) } }
    const service = (value: string) =>
      svc({}, { "midokura.com/load-balancer-type": "upnp-igd", "midokura.com/mapping-lease": value })
    expect(desiredService(service("5m"), "upnp-igd", narrow).warnings[0]!.message).toContain("0 (permanent) or 10m to 2h")
    expect(desiredService(service("2h"), "upnp-igd", narrow).leaseSeconds).toBe(7200)
  })

  it("warns that source ranges are not enforced, and maps nothing for an IPv6-only Service", () => {
    const ranges = desiredService(svc({ loadBalancerSourceRanges: ["1.2.3.0/24"] }), "upnp-igd", desiredOptions)
    expect(ranges.warnings.map((w) => w.reason)).toEqual(["LoadBalancerSourceRangesIgnored"])
    const v6 = desiredService(svc({ ipFamilies: ["IPv6"] }), "upnp-igd", desiredOptions)
    expect(v6.ports).toEqual([])
    expect(v6.warnings.map((w) => w.reason)).toContain("IPv6Only")
    const dual = desiredService(svc({ ipFamilies: ["IPv6", "IPv4"] }), "upnp-igd", desiredOptions)
    expect(dual.ports).toHaveLength(1)
  })
})

describe("mappingDescription", () => {
  it("keeps short descriptions as they are", () => {
    expect(mappingDescription("kubernetes", "default", "web", "http")).toBe("kubernetes/default/web/http")
  })

  it("caps long ones at 63 bytes with a hash that keeps them distinct", () => {
    const long = "a-very-long-service-name-that-goes-on-and-on-and-on"
    const a = mappingDescription("kubernetes", "production-namespace", long, "http")
    const b = mappingDescription("kubernetes", "production-namespace", long, "https")
    expect(Buffer.byteLength(a)).toBeLessThanOrEqual(MAX_DESCRIPTION_BYTES)
    expect(a.startsWith("kubernetes/production-namespace/")).toBe(true)
    expect(a).not.toBe(b)
    const multibyte = mappingDescription("kubernetes", "ns", "服务".repeat(20), "http")
    expect(Buffer.byteLength(multibyte)).toBeLessThanOrEqual(MAX_DESCRIPTION_BYTES)
  })
})

describe("parseDuration", () => {
  it("accepts Go-style and Effect-style durations", () => {
    expect(Duration.toMillis(parseDuration("1h30m")!)).toBe(5_400_000)
    expect(Duration.toMillis(parseDuration("30s")!)).toBe(30_000)
    expect(Duration.toMillis(parseDuration("0")!)).toBe(0)
    expect(Duration.toMillis(parseDuration("5 seconds")!)).toBe(5_000)
    expect(Duration.toMillis(parseDuration("7d")!)).toBe(604_800_000)
    expect(parseDuration("soon")).toBeUndefined()
  })

  it("refuses negative, infinite and unit-less durations", () => {
    for (const text of ["-5s", "-5 seconds", "Infinity", "-Infinity", "1e400s", "30", "", "5 parsecs"]) {
      expect(parseDuration(text), text).toBeUndefined()
    }
  })
})
