/**
 * Reboot detection by SSDP announcement alone: with the uptime probe slowed to 10 minutes and
 * the resync to 10 minutes, only the router's NOTIFY (a new BOOTID.UPNP.ORG) can trigger the
 * repair after a reboot.
 */
import { afterAll, beforeAll, expect, it } from "vitest"
import {
  deleteTestServices,
  eventsFor,
  getService,
  ingressIp,
  loadBalancerService,
  startController
} from "./support/controller.ts"
import { kubectl, type LabProcess, rebootGateway, upnpcList, waitFor } from "./support/lab.ts"

let controller: LabProcess

beforeAll(async () => {
  controller = await startController({ flags: ["--gateway-probe-interval", "10m", "--resync-interval", "10m"] })
})

afterAll(async () => {
  await deleteTestServices()
  await controller?.stop()
})

it("re-asserts every mapping when the router announces a new boot", async () => {
  const created = await kubectl(["create", "-f", "-"], {
    input: loadBalancerService("announced", { ports: [{ name: "http", port: 9401 }] })
  })
  expect(created.code, created.stderr).toBe(0)
  await waitFor(async () => ingressIp(await getService("announced")) !== undefined, { description: "published" })
  const mapped = async () => (await upnpcList()).some((m) => m.externalPort === 9401)
  expect(await mapped()).toBe(true)

  await rebootGateway()
  const rebooted = Date.now()
  await waitFor(mapped, { description: "the mapping back after the router's announcement", timeoutMs: 5_000 })
  console.log(`mapping restored ${Date.now() - rebooted} ms after the reboot, from the SSDP announcement alone`)
  // Repaired because of the announcement (the probe and the resync are 10 minutes away), and a
  // real repair: the router had lost the mapping, so the controller mapped it again.
  expect(controller.output()).toContain("announced BOOTID.UPNP.ORG")
  await waitFor(async () => (await eventsFor("announced")).some((e) => e.reason === "MappingRepaired"), {
    description: "a MappingRepaired event"
  })
})
