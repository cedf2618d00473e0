/**
 * SSDP discovery of Internet gateways: searches (SsdpSearch.ts) and the NOTIFY advertisements
 * heard on the group (SsdpAdvertisements.ts), whose BOOTID/CONFIGID reveal a router's reboot.
 *
 * Only the trusted router is heard (see TrustedRouter.ts): a datagram from any other source is
 * dropped before anything is decoded into a table or fetched. What is kept is bounded, so an
 * SSDP flood costs constant memory: at most MAX_SEARCH_CANDIDATES LOCATIONs per search, and
 * MAX_KNOWN_DEVICES remembered USNs.
 */
import * as NodeFileSystem from "@effect/platform-node/NodeFileSystem"
import { Context, Duration, Effect, FileSystem, Layer, Stream } from "effect"
import { NetAddress } from "effect/net"
import { resolveTrustedRouter } from "../TrustedRouter.ts"
import { type DiscoveryError, type DiscoveryOptions, validateDiscoveryOptions } from "./DiscoveryOptions.ts"
import { listenForAdvertisements, makeAdvertisementReader, type SsdpAdvertisement } from "./SsdpAdvertisements.ts"
import { makeSearch, type SearchResult } from "./SsdpSearch.ts"

export {
  defaultDiscoveryOptions,
  DiscoveryError,
  type DiscoveryOptions,
  SOCKET_QUEUE_DATAGRAMS
} from "./DiscoveryOptions.ts"
export {
  type AdvertisementReader,
  makeAdvertisementReader,
  MAX_KNOWN_DEVICES,
  type SsdpAdvertisement
} from "./SsdpAdvertisements.ts"
export {
  type IgnoredResponder,
  MAX_REPORTS_PER_SEARCH,
  MAX_SEARCH_CANDIDATES,
  type SearchResult,
  type SsdpResponse
} from "./SsdpSearch.ts"

/** How long the default route read for advertisements is reused (a DHCP change is seen after this). */
const TRUSTED_ROUTER_REREAD = Duration.seconds(5)

/** SSDP discovery: searches for the trusted router's gateways, and its advertisements. */
export class Discovery extends Context.Service<Discovery, {
  /**
   * Every distinct candidate of the trusted router that answered within the window,
   * deduplicated by LOCATION, and the other hosts that answered. Never fails: empty
   * `responses` mean the router did not answer.
   */
  readonly search: (options?: { readonly timeout?: Duration.Input }) => Effect.Effect<SearchResult>
  /**
   * The trusted router's NOTIFY advertisements on the multicast group (ssdp:alive/byebye/update
   * with BOOTID/CONFIGID), for reboot detection. Joins the group on `multicastInterface` only.
   */
  readonly advertisements: Stream.Stream<SsdpAdvertisement, DiscoveryError>
}>()("edge-ccm/gateway/upnp/Discovery") {
  /** Discovery over real UDP sockets; needs nothing beyond Node itself. */
  static layer(options?: Partial<DiscoveryOptions>): Layer.Layer<Discovery> {
    return Layer.effect(Discovery, make(options).pipe(Effect.orDie)).pipe(Layer.provide(NodeFileSystem.layer))
  }
}

/** Builds the service; fails only on invalid options. */
export const make = Effect.fnUntraced(function*(input?: Partial<DiscoveryOptions>) {
  const settings = yield* validateDiscoveryOptions(input)
  const fs = yield* FileSystem.FileSystem
  const devices = makeAdvertisementReader()

  const configuredRouter = settings.gatewayAddress === undefined ? undefined : NetAddress.formatIp(settings.gatewayAddress)
  const trustedRouter = resolveTrustedRouter(configuredRouter).pipe(Effect.provideService(FileSystem.FileSystem, fs))
  // Per datagram under a flood: the route table is not read for each one.
  const trustedRouterForAdvertisements = yield* Effect.cachedWithTTL(trustedRouter, TRUSTED_ROUTER_REREAD)

  const search = makeSearch(settings, trustedRouter, devices.remember)
  const advertisements = listenForAdvertisements(settings, trustedRouterForAdvertisements, devices)

  return Discovery.of({ search, advertisements })
})
