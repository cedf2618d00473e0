/** What a Service asks of the router, and the router as the planner sees it: plain data for the planner's tests. */
import type { GatewayView } from "../../src/controller/planner.ts"
import type { DesiredPort, DesiredService } from "../../src/controller/ServiceSpec.ts"

/** The lab's router as the planner sees it: node 192.168.77.10 behind 122.112.219.229. */
export const labGateway: GatewayView = {
  router: "http://192.168.77.1:49536/ctl/IPConn",
  backend: "upnp-igd",
  localAddress: "192.168.77.10",
  externalAddress: { ip: "122.112.219.229", class: "public" }
}

/** `default/web` wanting these ports, with a one-hour lease. */
export const desiredWeb = (ports: ReadonlyArray<DesiredPort>, overrides: Partial<DesiredService> = {}): DesiredService => ({
  key: "default/web",
  namespace: "default",
  name: "web",
  uid: "uid-web",
  createdAt: 1_000,
  backend: "upnp-igd",
  leaseSeconds: 3600,
  ports,
  unmappable: [],
  warnings: [],
  ...overrides
})
