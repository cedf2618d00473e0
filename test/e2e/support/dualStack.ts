/**
 * What the dual-stack e2e tests share: the Service they create, the wait for both ingress
 * addresses, and the curls that prove each family (IPv4 through the router's mapping to the
 * nodePort, IPv6 dropped by the router's firewall where no pinhole is).
 */
import { expect } from "vitest"
import { getService, loadBalancerService, type ServiceView } from "./controller.ts"
import { curlFromWan, kubectl, type NodePortServer, serveNodePort, waitFor } from "./lab.ts"

/** The Service's ingress addresses, in order (the router's IPv4 one first). */
export const ingressIps = (service: ServiceView | undefined): Array<string | undefined> =>
  (service?.status?.loadBalancer?.ingress ?? []).map((i) => i.ip)

/** Creates a PreferDualStack LoadBalancer Service (IPv4, IPv6) in `default`. */
export async function createDualStackService(name: string, options: Parameters<typeof loadBalancerService>[1]): Promise<void> {
  const manifest = JSON.parse(loadBalancerService(name, options)) as { spec: Record<string, unknown> }
  manifest.spec["ipFamilyPolicy"] = "PreferDualStack"
  manifest.spec["ipFamilies"] = ["IPv4", "IPv6"]
  const created = await kubectl(["create", "-f", "-"], { input: JSON.stringify(manifest) })
  expect(created.code, created.stderr).toBe(0)
}

/** Waits until the Service publishes two ingress addresses, and says how long that took. */
export async function bothAddressesPublished(name: string, since: number, timeoutMs: number): Promise<ServiceView> {
  const service = await waitFor(async () => {
    const s = await getService(name)
    return ingressIps(s).length === 2 ? s : undefined
  }, { description: "both ingress addresses", timeoutMs, intervalMs: 50 })
  console.log(`both addresses published ${Date.now() - since} ms after kubectl create`)
  return service
}

/** curl from the Internet to the router's address at `port` reaches the stand-in on the Service's nodePort. */
export async function expectReachedOverIpv4(service: ServiceView, publicIp: string, port: number): Promise<void> {
  const nodePort = service.spec.ports.find((p) => p.port === port)?.nodePort
  expect(nodePort).toBeGreaterThanOrEqual(30000)
  const ipv4 = await serveNodePort(nodePort!)
  try {
    const answer = await curlFromWan(`http://${publicIp}:${port}/`)
    expect(answer.ok, answer.error).toBe(true)
    expect(answer.body).toBe(ipv4.body)
  } finally {
    await ipv4.close()
  }
}

/** curl from the Internet to `[address]:port` times out (dropped by the router), and `server` saw nothing. */
export async function expectDroppedOverIpv6(address: string, port: number, server: NodePortServer): Promise<void> {
  const closed = await curlFromWan(`http://[${address}]:${port}/`, { timeoutMs: 3000 })
  expect(closed.curlExitCode).toBe(28) // timed out: dropped by the gateway's forward chain
  expect(server.requests()).toBe(0)
}
