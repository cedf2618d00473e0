/**
 * Our own address toward the router: the InternalClient a secure-mode router accepts.
 * Connecting a UDP socket only asks the kernel to pick a route and source address;
 * nothing is sent.
 */
import * as Dgram from "node:dgram"
import { Effect } from "effect"
import { GatewayUnreachable } from "./GatewayError.ts"
import { isMappablePort } from "./Mapping.ts"

/** The local IPv4 address the kernel would use to reach `routerIp:routerPort`. */
export const localAddressToward = Effect.fn("localAddressToward")(
  function*(routerIp: string, routerPort: number) {
    const router = `${routerIp}:${routerPort}`
    if (!isMappablePort(routerPort)) {
      return yield* new GatewayUnreachable({ router, action: "local address", reason: "invalid router port" })
    }
    return yield* Effect.callback<string, GatewayUnreachable>((resume) => {
      const socket = Dgram.createSocket("udp4")
      let open = true
      const close = () => {
        if (open) {
          open = false
          socket.close()
        }
      }
      socket.once("error", (error) => {
        close()
        resume(Effect.fail(new GatewayUnreachable({ router, action: "local address", reason: error.message })))
      })
      socket.connect(routerPort, routerIp, () => {
        const address = socket.address().address
        close()
        resume(Effect.succeed(address))
      })
      return Effect.sync(close)
    })
  }
)
