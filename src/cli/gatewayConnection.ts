/**
 * How a gateway subcommand reaches the router (the `PortMapper` or `UpnpGateway` its flags
 * describe) and how it reports back: output on stdout, and any failure as one line on stderr
 * with a non-zero exit.
 */
import { Console, Effect, type Layer, Option } from "effect"
import type { GatewayError } from "../gateway/GatewayError.ts"
import { NatPmpGateway } from "../gateway/natpmp/NatPmpGateway.ts"
import { PcpGateway } from "../gateway/pcp/PcpGateway.ts"
import type { PortMapper } from "../gateway/PortMapper.ts"
import type { DiscoveryError, DiscoveryOptions } from "../gateway/upnp/Discovery.ts"
import { UpnpGateway } from "../gateway/upnp/UpnpGateway.ts"
import type { ConnectionFlags, PortControlFlags, PortControlVia } from "./gatewayFlags.ts"
import { CommandFailed } from "./output.ts"

/** The UPnP gateway the connection flags describe (SSDP discovery unless --gateway-url). */
export const upnpLayer = (flags: ConnectionFlags) => {
  const discovery: Partial<DiscoveryOptions> = {
    timeout: flags.timeout,
    ...Option.match(flags.ssdpAddress, { onNone: () => ({}), onSome: (ssdpAddress) => ({ ssdpAddress }) }),
    ...Option.match(flags.ssdpPort, { onNone: () => ({}), onSome: (ssdpPort) => ({ ssdpPort }) }),
    ...Option.match(flags.multicastInterface, {
      onNone: () => ({}),
      onSome: (multicastInterface) => ({ multicastInterface })
    }),
    ...(flags.unicast ? {} : { unicastGateway: undefined })
  }
  return UpnpGateway.layer({
    gatewayUrl: Option.getOrUndefined(flags.gatewayUrl),
    gatewayAddress: Option.getOrUndefined(flags.gatewayAddress),
    soapTimeout: flags.soapTimeout,
    discoveryTimeout: flags.timeout,
    discovery
  })
}

/** The NAT-PMP or PCP gateway at --gateway-address (default: the default route's gateway). */
export const portControlLayer = (via: PortControlVia, flags: PortControlFlags & ConnectionFlags): Layer.Layer<PortMapper> => {
  const options = { gateway: Option.getOrUndefined(flags.gatewayAddress), port: flags.gatewayPort }
  return via === "nat-pmp" ? NatPmpGateway.layer(options) : PcpGateway.layer(options)
}

/** The `PortMapper` for `--via`. */
export const mapperLayer = (flags: ConnectionFlags & PortControlFlags): Layer.Layer<PortMapper> =>
  flags.via === "upnp-igd" ? upnpLayer(flags) : portControlLayer(flags.via, flags)

/**
 * Runs a command against the gateway; any failure is printed as one line on stderr
 * (what failed, against which router, the protocol's code and its meaning) and exits non-zero.
 */
export const against = <A, R>(
  name: string,
  layer: Layer.Layer<R>,
  body: Effect.Effect<A, GatewayError | DiscoveryError, R>,
  options?: { readonly suggestOtherProtocols?: boolean }
) =>
  body.pipe(
    Effect.provide(layer),
    Effect.catch((error) =>
      failWith(
        name,
        1,
        oneLine(error.message) +
          // Routers with UPnP switched off for safety often still speak NAT-PMP or PCP.
          (options?.suggestOtherProtocols === true && error._tag === "GatewayNotFound"
            ? "; a gateway with UPnP off may still answer --via pcp or --via nat-pmp"
            : "")
      )
    )
  )

/** One line on stderr, then the exit code: 1 for a failure, 2 for a usage error. */
export const failWith = (name: string, exitCode: number, text: string) =>
  Console.error(`edge-ccm gateway ${name}: ${text}`).pipe(
    Effect.andThen(Effect.fail(new CommandFailed({ command: `gateway ${name}`, exitCode })))
  )

/** A usage error found after parsing (a flag that only some protocols need): nothing is sent. */
export const usage = (name: string, text: string) => failWith(name, 2, text)

/** An error message on one line. */
export const oneLine = (text: string) => text.replace(/\s*\n\s*/g, " ").trim()

/** Prints a value as indented JSON. */
export const printJson = (value: unknown) => Console.log(JSON.stringify(value, null, 2))

/** JSON has null where TypeScript has undefined. */
export const orNull = <A>(value: A | undefined): A | null => value === undefined ? null : value

/** A lease for people: `3600 s`, `permanent`, or `-` when unknown. */
export const seconds = (value: number | undefined) => value === undefined ? "-" : value === 0 ? "permanent" : `${value} s`

/** What an external address's class means for reaching the Service. */
export const externalIpMeaning = (ipClass: string) =>
  ipClass === "public"
    ? "public"
    : ipClass === "private"
    ? "private: double NAT, not reachable from the Internet"
    : "missing: WAN down, or a private address the router hides (double NAT)"
