/**
 * The flags of `edge-ccm gateway …`: which router and how to reach it (`connectionFlags`),
 * which protocol (`portControlFlags`), and the few that several subcommands share. Every flag
 * can also come from the environment (`EDGE_CCM_…`).
 */
import { Config, Option, Result, Schema } from "effect"
import { type Command, Flag } from "effect/cli"
import { NetAddress } from "effect/net"
import { DURATION_FORMS, parseDuration } from "../controller/DurationString.ts"
import { Backend, MappablePort } from "../gateway/Mapping.ts"
import { PCP_PORT } from "../gateway/pcp/PcpPacket.ts"

/** A duration flag in the project's one grammar (DurationString.ts): `2s`, `500ms`, `1h30m`. */
export const duration = (name: string, env: string, fallback: string, description: string) =>
  Flag.String(name).pipe(
    Flag.withDescription(`${description}, e.g. 2s or 500ms (default ${fallback}) (env ${env})`),
    Flag.withFallbackConfig(Config.String(env)),
    Flag.withDefault(fallback),
    Flag.filterMap(
      (text) => Option.fromUndefinedOr(parseDuration(text)),
      (text) => `--${name}: ${JSON.stringify(text)} is not a duration (${DURATION_FORMS})`
    )
  )

/** A string flag that may be left out, with its environment variable. */
export const optionalString = (name: string, env: string, description: string) =>
  Flag.String(name).pipe(
    Flag.withDescription(`${description} (env ${env})`),
    Flag.withFallbackConfig(Config.String(env)),
    Flag.optional
  )

/** An IPv4 address flag that may be left out, with its environment variable. */
export const optionalIpv4 = (name: string, env: string, description: string) =>
  Flag.String(name).pipe(
    Flag.withDescription(`${description} (env ${env})`),
    Flag.withFallbackConfig(Config.String(env)),
    Flag.filterMap(
      (text) => Result.isSuccess(NetAddress.ipv4FromString(text)) ? Option.some(text) : Option.none(),
      (text) => `--${name}: ${JSON.stringify(text)} is not an IPv4 address`
    ),
    Flag.optional
  )

/** A port flag: 1-65535. */
export const portFlag = (name: string, description: string) =>
  Flag.Int(name).pipe(Flag.withDescription(description), Flag.withSchema(MappablePort))

/** Which router, and (UPnP IGD) where its description is and how to find it by SSDP. */
export const connectionFlags = {
  gatewayAddress: Flag.String("gateway-address").pipe(
    Flag.withAlias("gateway"),
    Flag.withDescription(
      "IPv4 address of the router to use: UPnP IGD uses only this host's IGD, NAT-PMP/PCP talk to it " +
        "(default: the default route's gateway; other LAN hosts are ignored) (env EDGE_CCM_GATEWAY_ADDRESS)"
    ),
    Flag.withFallbackConfig(Config.String("EDGE_CCM_GATEWAY_ADDRESS").pipe(Config.orElse(() => Config.String("EDGE_CCM_GATEWAY")))),
    Flag.filterMap(
      (text) => Result.isSuccess(NetAddress.ipv4FromString(text)) ? Option.some(text) : Option.none(),
      (text) => `--gateway-address: ${JSON.stringify(text)} is not an IPv4 address`
    ),
    Flag.optional
  ),
  gatewayUrl: optionalString(
    "gateway-url",
    "EDGE_CCM_GATEWAY_URL",
    "UPnP IGD: root description URL of the gateway, e.g. http://192.168.1.1:49536/rootDesc.xml; skips SSDP discovery"
  ),
  soapTimeout: duration("soap-timeout", "EDGE_CCM_SOAP_TIMEOUT", "5s", "UPnP IGD: timeout of each HTTP request to the gateway"),
  timeout: duration("timeout", "EDGE_CCM_DISCOVERY_TIMEOUT", "2s", "UPnP IGD: how long SSDP replies are collected"),
  ssdpAddress: optionalIpv4(
    "ssdp-address",
    "EDGE_CCM_SSDP_ADDRESS",
    "Where M-SEARCH is sent (default 239.255.255.250)"
  ),
  ssdpPort: Flag.Int("ssdp-port").pipe(
    Flag.withDescription("SSDP port (default 1900) (env EDGE_CCM_SSDP_PORT)"),
    Flag.withFallbackConfig(Config.Int("EDGE_CCM_SSDP_PORT")),
    Flag.withSchema(MappablePort),
    Flag.optional
  ),
  multicastInterface: optionalIpv4(
    "multicast-interface",
    "EDGE_CCM_MULTICAST_INTERFACE",
    "Local IPv4 address of the interface to search on"
  ),
  unicast: Flag.Boolean("unicast").pipe(
    Flag.withDescription("Also search unicast at the default gateway; --no-unicast turns it off (env EDGE_CCM_SSDP_UNICAST)"),
    Flag.withFallbackConfig(Config.Boolean("EDGE_CCM_SSDP_UNICAST")),
    Flag.withDefault(true)
  )
}

/** The protocols `--via` names: the values of the `midokura.com/load-balancer-type` annotation. */
export const VIA = Backend.literals

/** A protocol `--via` names. */
export type Via = Backend

/** The protocols without discovery or a table: NAT-PMP and PCP. */
export type PortControlVia = Exclude<Via, "upnp-igd">

/** Each protocol as people write it. */
export const PROTOCOL_NAMES: Record<Via, string> = { "upnp-igd": "UPnP IGD", "nat-pmp": "NAT-PMP", "pcp": "PCP" }

/** NAT-PMP and PCP share one port. */
export const NATPMP_PCP_PORT = PCP_PORT

/** NAT-PMP and PCP have no discovery: they talk to one address, the default route's gateway unless told. */
export const portControlFlags = {
  via: Flag.Literals("via", VIA).pipe(
    Flag.withDescription(
      "Protocol to speak to the gateway: upnp-igd, nat-pmp or pcp, as in the load-balancer-type annotation (default upnp-igd) (env EDGE_CCM_VIA)"
    ),
    Flag.withFallbackConfig(Config.Literals(VIA, "EDGE_CCM_VIA")),
    Flag.withDefault("upnp-igd")
  ),
  gatewayPort: Flag.Int("gateway-port").pipe(
    Flag.withDescription(`NAT-PMP/PCP: the gateway's UDP port (default ${NATPMP_PCP_PORT}) (env EDGE_CCM_GATEWAY_PORT)`),
    Flag.withFallbackConfig(Config.Int("EDGE_CCM_GATEWAY_PORT")),
    Flag.withSchema(MappablePort),
    Flag.withDefault(NATPMP_PCP_PORT)
  )
}

/** A PCP nonce as `map --via pcp` prints it: 96 bits in hex. */
export const nonceFlag = (description: string) =>
  Flag.String("nonce").pipe(
    Flag.withDescription(description),
    Flag.withSchema(Schema.String.check(Schema.isPattern(/^[0-9a-fA-F]{24}$/, {
      message: "a PCP nonce is 24 hex digits (96 bits), as `gateway map --via pcp` printed it"
    }))),
    Flag.map((nonce) => nonce.toLowerCase()),
    Flag.optional
  )

/** `--json`: machine-readable output. */
export const json = Flag.Boolean("json").pipe(Flag.withDescription("Print JSON instead of a table"), Flag.withDefault(false))

/** `--protocol`: TCP or UDP. */
export const protocol = Flag.Literals("protocol", ["TCP", "UDP"]).pipe(Flag.withDescription("TCP or UDP"))

/** The parsed `connectionFlags`. */
export type ConnectionFlags = Command.Command.Config.Infer<typeof connectionFlags>

/** The parsed `portControlFlags`. */
export type PortControlFlags = Command.Command.Config.Infer<typeof portControlFlags>

/** The flags that aim a NAT-PMP/PCP command at the same gateway again, as given. */
export const aimedAt = (flags: PortControlFlags & ConnectionFlags): string =>
  [
    ...Option.match(flags.gatewayAddress, { onNone: () => [], onSome: (gateway) => [` --gateway-address ${gateway}`] }),
    ...(flags.gatewayPort === NATPMP_PCP_PORT ? [] : [` --gateway-port ${flags.gatewayPort}`])
  ].join("")
