/** The embedding example (examples/embedding/main.ts), composed from layers, against the lab. */
import * as path from "node:path"
import { afterAll, expect, it } from "vitest"
import { getService, ingressIp, loadBalancerService } from "./support/controller.ts"
import { kubectl, type LabProcess, loadLab, spawnInNamespace, upnpcList, waitFor } from "./support/lab.ts"

const root = path.resolve(import.meta.dirname, "../..")
let program: LabProcess | undefined

afterAll(async () => {
  await kubectl(["delete", "service", "embedded", "--ignore-not-found", "--wait=false"])
  if (program !== undefined) {
    await waitFor(async () => (await getService("embedded")) === undefined, { description: "embedded Service gone" })
    await program.stop()
  }
})

it("maps a Service with its own configuration (cluster name, router URL)", async () => {
  const lab = loadLab()
  program = spawnInNamespace("lan", [process.execPath, path.join(root, "examples/embedding/main.ts")], {
    cwd: root,
    env: { KUBECONFIG: lab.kubeconfig, ROUTER_URL: lab.rootDescUrl, CLUSTER_NAME: "embedded-lab" }
  })
  const created = await kubectl(["create", "-f", "-"], {
    input: loadBalancerService("embedded", { ports: [{ name: "web", port: 8901 }] })
  })
  expect(created.code, created.stderr).toBe(0)
  await waitFor(async () => ingressIp(await getService("embedded")) === "122.112.219.229", {
    description: "the embedded controller to publish the address",
    timeoutMs: 15_000
  })
  const mapping = (await upnpcList()).find((m) => m.externalPort === 8901)
  expect(mapping?.description).toBe("embedded-lab/default/embedded/web")
  expect(program.output()).toContain("embedded controller running for cluster embedded-lab")
})
