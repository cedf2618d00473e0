/**
 * `edge-ccm gateway pinhole …`: IPv6 firewall pinholes by hand, through the controller's own
 * WANIPv6FirewallControl:1 client. The router cannot list its pinholes, so `list` shows what
 * it says about the UniqueIDs given; `add` prints the UniqueID that every later command needs.
 * Requests go over IPv6 from the node's own address (the only one a pinhole opens for).
 */
import { NodeHttpClient } from "@effect/platform-node"
import { Config, Console, Duration, Effect, Layer, Option, Result, Schema } from "effect"
import { Command, Flag } from "effect/cli"
import { DURATION_FORMS, parseDuration } from "../controller/DurationString.ts"
import { localIpv6AddressToward } from "../gateway/localAddress.ts"
import { MappablePort } from "../gateway/Mapping.ts"
import { Description } from "../gateway/upnp/Description.ts"
import { PINHOLE_LEASE_SECONDS } from "../gateway/upnp/PinholeError.ts"
import * as Pinholes from "../gateway/upnp/Pinholes.ts"
import { SoapTransport } from "../gateway/upnp/SoapTransport.ts"
import { CommandFailed, renderTable } from "./output.ts"

const target = {
  firewallUrl: Flag.String("firewall-url").pipe(
    Flag.withDescription(
      "The router's WANIPv6FirewallControl:1 control URL on its IPv6 address, e.g. http://[2001:db8:2::1]:49536/ctl/IP6FCtl (env EDGE_CCM_FIREWALL_URL)"
    ),
    Flag.withFallbackConfig(Config.String("EDGE_CCM_FIREWALL_URL")),
    Flag.optional
  ),
  gatewayUrl: Flag.String("gateway-url").pipe(
    Flag.withDescription(
      "The router's IGD:2 root description over IPv6, e.g. http://[2001:db8:2::1]:49536/rootDesc.xml: the firewall service is looked up in it (env EDGE_CCM_GATEWAY_URL)"
    ),
    Flag.withFallbackConfig(Config.String("EDGE_CCM_GATEWAY_URL")),
    Flag.optional
  ),
  json: Flag.Boolean("json").pipe(Flag.withDescription("Print JSON"), Flag.withDefault(false))
}

type Target = Command.Command.Config.Infer<typeof target>

const uniqueId = Flag.Int("id").pipe(
  Flag.withDescription("The pinhole's UniqueID, as `gateway pinhole add` printed it"),
  Flag.withSchema(Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 65535 })))
)

const lease = Flag.String("lease").pipe(
  Flag.withDescription(`Lease, ${PINHOLE_LEASE_SECONDS.min} s to 1 day, e.g. 10m (default 1h)`),
  Flag.withDefault("1h"),
  Flag.filterMap(
    (text) => Option.fromUndefinedOr(parseDuration(text)),
    (text) => `--lease: ${JSON.stringify(text)} is not a duration (${DURATION_FORMS})`
  ),
  Flag.map((duration) => Math.round(Duration.toSeconds(duration)))
)

/** The firewall endpoint the flags name: the static URL, or the one the description lists. */
const endpointFor = (firewallUrl: string | undefined, gatewayUrl: string) =>
  Effect.gen(function*() {
    if (firewallUrl !== undefined) return yield* Effect.fromResult(Pinholes.firewallEndpoint(firewallUrl))
    const descriptions = yield* Description
    return yield* Effect.fromResult(Pinholes.firewallEndpointFrom(yield* descriptions.fetch(gatewayUrl)))
  })

/** One line on stderr, then the exit code (1: the router or the network failed; 2: usage). */
const fail = (name: string, exitCode: number, text: string) =>
  Console.error(`edge-ccm gateway pinhole ${name}: ${text.replace(/\s*\n\s*/g, " ")}`).pipe(
    Effect.andThen(Effect.fail(new CommandFailed({ command: `gateway pinhole ${name}`, exitCode })))
  )

const clients = Layer.mergeAll(SoapTransport.layer(), Description.layer()).pipe(Layer.provide(NodeHttpClient.layerNodeHttp))

/**
 * Runs one subcommand: any failure becomes one line on stderr (the router's refusal with
 * its meaning) and exit code 1.
 */
const runPinholeCommand = <A extends Target>(
  name: string,
  flags: A,
  body: (endpoint: Pinholes.FirewallEndpoint) => Effect.Effect<{ readonly json: unknown; readonly text: string }, { readonly message: string }, SoapTransport>
) =>
  Option.isNone(flags.firewallUrl) && Option.isNone(flags.gatewayUrl)
    ? fail(name, 2, "give --firewall-url or --gateway-url with the router's IPv6 address: pinholes are asked for over IPv6")
    : Effect.gen(function*() {
      const endpoint = yield* endpointFor(Option.getOrUndefined(flags.firewallUrl), Option.getOrElse(flags.gatewayUrl, () => ""))
      const result = yield* body(endpoint)
      yield* Console.log(flags.json ? JSON.stringify(result.json, null, 2) : result.text)
    }).pipe(
      Effect.provide(clients),
      Effect.catch((error) => fail(name, 1, error.message))
    )

const status = Command.make("status", target, (flags) =>
  runPinholeCommand("status", flags, (endpoint) =>
    Effect.gen(function*() {
      const firewall = yield* Pinholes.getFirewallStatus(endpoint)
      const address = yield* Effect.result(localIpv6AddressToward(endpoint.routerIp, endpoint.routerPort))
      const node = Result.isSuccess(address) ? address.success : null
      const json = { controlUrl: endpoint.controlUrl, ...firewall, nodeAddress: node, ...(node === null ? { nodeAddressError: Result.getOrThrow(Result.flip(address)).message } : {}) }
      return {
        json,
        text: renderTable(["", ""], [
          ["control URL", endpoint.controlUrl],
          ["firewall", firewall.firewallEnabled ? "enabled" : "disabled"],
          ["inbound pinholes", firewall.inboundPinholeAllowed ? "allowed" : "not allowed"],
          ["node address", node ?? `none: ${json.nodeAddressError}`]
        ], { header: false })
      }
    }))).pipe(Command.withDescription("The router's IPv6 firewall, and the node address a pinhole would open"))

const add = Command.make(
  "add",
  {
    ...target,
    port: Flag.Int("port").pipe(Flag.withDescription("The node's port to open"), Flag.withSchema(MappablePort)),
    protocol: Flag.Literals("protocol", ["TCP", "UDP"]).pipe(Flag.withDescription("TCP or UDP")),
    lease,
    allowLinkLocal: Flag.Boolean("allow-link-local").pipe(Flag.withDescription("Accept a link-local node address"), Flag.withDefault(false)),
    allowUniqueLocal: Flag.Boolean("allow-unique-local").pipe(Flag.withDescription("Accept a unique-local (fc00::/7) node address"), Flag.withDefault(false))
  },
  (flags) =>
    runPinholeCommand("add", flags, (endpoint) =>
      Effect.gen(function*() {
        const node = yield* localIpv6AddressToward(endpoint.routerIp, endpoint.routerPort, {
          allowLinkLocal: flags.allowLinkLocal,
          allowUniqueLocal: flags.allowUniqueLocal
        })
        const id = yield* Pinholes.addPinhole(endpoint, {
          internalClient: node,
          internalPort: flags.port,
          protocol: flags.protocol,
          leaseSeconds: flags.lease
        })
        return {
          json: { uniqueId: id, internalClient: node, port: flags.port, protocol: flags.protocol, leaseSeconds: flags.lease },
          text: `pinhole ${id}: ${flags.protocol} [${node}]:${flags.port} open for ${flags.lease} s (renew with gateway pinhole update --id ${id})`
        }
      }))
).pipe(Command.withDescription("Open a pinhole to this node's IPv6 address and port; prints its UniqueID"))

const update = Command.make("update", { ...target, id: uniqueId, lease }, (flags) =>
  runPinholeCommand("update", flags, (endpoint) =>
    Pinholes.updatePinhole(endpoint, flags.id, flags.lease).pipe(
      Effect.as({ json: { uniqueId: flags.id, leaseSeconds: flags.lease }, text: `pinhole ${flags.id} renewed for ${flags.lease} s` })
    ))).pipe(Command.withDescription("Renew a pinhole's lease (never by adding it again)"))

const remove = Command.make("delete", { ...target, id: uniqueId }, (flags) =>
  runPinholeCommand("delete", flags, (endpoint) =>
    Pinholes.deletePinhole(endpoint, flags.id).pipe(
      Effect.as({ json: { uniqueId: flags.id, removed: true }, text: `pinhole ${flags.id} removed` })
    ))).pipe(Command.withDescription("Close a pinhole"))

/** What the router says about one UniqueID: its packets, whether it saw traffic, or why not. */
const inspect = (endpoint: Pinholes.FirewallEndpoint, id: number) =>
  Effect.gen(function*() {
    const packets = yield* Effect.result(Pinholes.getPinholePackets(endpoint, id))
    const working = yield* Effect.result(Pinholes.checkPinholeWorking(endpoint, id))
    const describe = (result: Result.Result<unknown, { readonly message: string; readonly code?: number }>) =>
      Result.isSuccess(result) ? result.success : { error: result.failure.message, code: result.failure.code ?? null }
    return { uniqueId: id, packets: describe(packets), working: describe(working) }
  })

const cell = (value: unknown): string =>
  typeof value === "object" && value !== null && "code" in value ? `error ${String(value.code)}` : String(value)

const inspectCommand = (name: string, ids: ReadonlyArray<number>, flags: Target) =>
  runPinholeCommand(name, flags, (endpoint) =>
    Effect.forEach(ids, (id) => inspect(endpoint, id)).pipe(
      Effect.map((rows) => ({
        json: name === "check" ? rows[0] : rows,
        text: renderTable(["ID", "PACKETS", "WORKING"], rows.map((row) => [String(row.uniqueId), cell(row.packets), cell(row.working)]))
      }))
    ))

const check = Command.make("check", { ...target, id: uniqueId }, (flags) => inspectCommand("check", [flags.id], flags)).pipe(
  Command.withDescription("CheckPinholeWorking and GetPinholePackets for one pinhole (miniupnpd 2.3.1 always answers 709 and 0)")
)

const list = Command.make("list", { ...target, ids: uniqueId.pipe(Flag.atLeast(1)) }, (flags) =>
  inspectCommand("list", flags.ids, flags)).pipe(
    Command.withDescription("What the router says about each --id given: routers cannot list their pinholes (402: gone)")
  )

/** `edge-ccm gateway pinhole`, registered by the gateway command. */
export const gatewayPinholeCommand = Command.make("pinhole").pipe(
  Command.withDescription("IPv6 firewall pinholes through UPnP IGD:2 (WANIPv6FirewallControl:1): status, add, update, delete, check, list"),
  Command.withSubcommands([status, add, update, remove, check, list])
)
