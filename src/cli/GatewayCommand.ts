/**
 * `edge-ccm gateway …`: our `upnpc`. Finds the LAN's Internet gateway, shows its state and
 * mapping table, and maps or unmaps a port by hand, through the same clients the controller
 * uses: UPnP IGD by default, NAT-PMP or PCP with `--via` (the names of the load-balancer-type
 * annotation). Every flag can also come from the environment (`EDGE_CCM_…`).
 */
import { Command } from "effect/cli"
import { discover, list, status } from "./GatewayInspectCommands.ts"
import { map, unmap } from "./GatewayMappingCommands.ts"
import { watch } from "./GatewayWatchCommand.ts"
import { gatewayPinholeCommand } from "./PinholeCommand.ts"

/** `edge-ccm gateway` and its subcommands. */
export const gatewayCommand = Command.make("gateway").pipe(
  Command.withDescription(
    "Talk to the LAN's Internet gateway over UPnP IGD, NAT-PMP or PCP (--via): discover, status, list, map, unmap, pinhole (IPv6), watch (its events)"
  ),
  Command.withSubcommands([discover, status, list, map, unmap, gatewayPinholeCommand, watch])
)
