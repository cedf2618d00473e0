/**
 * A tenant on a shared cluster, for real: a ServiceAccount that may only read, update, patch
 * and delete Services in namespace `tenant` does everything it can to its own Service to get
 * another namespace's mapping deleted or stolen. prod/web's mapping stays in the router's table
 * (nftables in the gateway, sampled every 0.2 s) and its curl from the Internet keeps working.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest"
import { eventsFor, getService, ingressIp, type ServiceView, startController } from "./support/controller.ts"
import {
  createServiceAccountToken,
  curlReaches,
  kubeconfigForToken,
  kubectl,
  type LabProcess,
  loadLab,
  nftMappingOn,
  nftMappings,
  type NodePortServer,
  serveNodePort,
  waitFor
} from "./support/lab.ts"

const TENANT = "tenant"
const PROD = "prod"

let controller: LabProcess
let tenantKubeconfig: string
let prodServer: NodePortServer | undefined

const apply = async (manifest: unknown, kubeconfig?: string) => {
  const result = await kubectl(["apply", "-f", "-"], {
    input: JSON.stringify(manifest),
    ...(kubeconfig === undefined ? {} : { kubeconfig })
  })
  expect(result.code, result.stderr).toBe(0)
}

const loadBalancer = (namespace: string, name: string, port: { name: string; port: number }) => ({
  apiVersion: "v1",
  kind: "Service",
  metadata: { name, namespace, annotations: { "midokura.com/load-balancer-type": "upnp-igd" } },
  spec: { type: "LoadBalancer", selector: { app: name }, ports: [{ ...port, targetPort: 80, protocol: "TCP" }] }
})

/** What the tenant runs: kubectl with its own token. */
const asTenant = (args: ReadonlyArray<string>) => kubectl(["-n", TENANT, ...args], { kubeconfig: tenantKubeconfig })

const annotationsOf = async (namespace: string, name: string) =>
  (await getService(name, namespace))?.metadata.annotations ?? {}

beforeAll(async () => {
  for (const namespace of [TENANT, PROD]) await apply({ apiVersion: "v1", kind: "Namespace", metadata: { name: namespace } })
  // The tenant: its own Services only, and nothing but get/list/update/patch (and delete, for the last step).
  await apply({ apiVersion: "v1", kind: "ServiceAccount", metadata: { name: "editor", namespace: TENANT } })
  await apply({
    apiVersion: "rbac.authorization.k8s.io/v1",
    kind: "Role",
    metadata: { name: "service-editor", namespace: TENANT },
    rules: [{ apiGroups: [""], resources: ["services"], verbs: ["get", "list", "update", "patch", "delete"] }]
  })
  await apply({
    apiVersion: "rbac.authorization.k8s.io/v1",
    kind: "RoleBinding",
    metadata: { name: "service-editor", namespace: TENANT },
    roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "service-editor" },
    subjects: [{ kind: "ServiceAccount", name: "editor", namespace: TENANT }]
  })
  tenantKubeconfig = kubeconfigForToken(await createServiceAccountToken(TENANT, "editor", { expirationSeconds: 3600 }))
  controller = await startController()
})

afterAll(async () => {
  for (const namespace of [TENANT, PROD]) {
    await kubectl(["delete", "service", "--all", "-n", namespace, "--wait=false"])
    await waitFor(async () => {
      const list = await kubectl(["get", "services", "-n", namespace, "-o", "name"])
      return list.stdout.trim() === ""
    }, { description: `Services in ${namespace} gone`, timeoutMs: 30_000 })
  }
  await prodServer?.close()
  await controller?.stop()
})

afterEach(async (context) => {
  if (context.task.result?.state === "fail") console.log(`controller output:\n${controller.output().slice(-4000)}`)
})

describe("a tenant attacking another namespace's mapping through its own Service", () => {
  it("leaves prod/web's mapping in the router at every sample, and its curl working", async () => {
    const lab = loadLab()
    // The victim: prod/web on TCP 443, served on its nodePort and published.
    await apply(loadBalancer(PROD, "web", { name: "p", port: 443 }))
    const prod = await waitFor(async () => {
      const service = await getService("web", PROD)
      return ingressIp(service) === lab.gatewayWanIp ? service : undefined
    }, { description: "prod/web published", timeoutMs: 20_000 })
    const prodNodePort = prod.spec.ports[0]!.nodePort!
    prodServer = await serveNodePort(prodNodePort)
    await curlReaches(443, prodNodePort)
    const prodAnnotations = await annotationsOf(PROD, "web")
    expect(prodAnnotations["midokura.com/mappings-signature"]).toMatch(/^v1\./)

    // The tenant's own Service (made by its admin: the tenant may not create).
    await apply(loadBalancer(TENANT, "x", { name: "http", port: 8443 }))
    const tenant = await waitFor(async () => {
      const service = await getService("x", TENANT)
      return ingressIp(service) === lab.gatewayWanIp ? service : undefined
    }, { description: "tenant/x published", timeoutMs: 20_000 })
    const tenantNodePort = tenant.spec.ports[0]!.nodePort!
    const forbidden = await asTenant(["create", "service", "clusterip", "other", "--tcp=80"])
    expect(forbidden.code).not.toBe(0)
    expect(forbidden.stderr).toContain("forbidden")

    // Sample prod/web's rule in the gateway's nftables every 0.2 s, for as long as the attack
    // lasts and at least 10 s.
    const samples: Array<{ readonly at: number; readonly present: boolean }> = []
    let sampling = true
    const started = Date.now()
    const sampler = (async () => {
      while (sampling || (samples.at(-1)?.at ?? 0) < 10_000) {
        const next = Date.now() + 200
        const rule = await nftMappingOn(443, "TCP")
        samples.push({ at: Date.now() - started, present: rule?.internalPort === prodNodePort })
        await new Promise((resolve) => setTimeout(resolve, Math.max(0, next - Date.now())))
      }
    })()

    const patch = async (annotations: Record<string, string | null>) => {
      const result = await asTenant([
        "patch", "service", "x", "--type=merge", "-p", JSON.stringify({ metadata: { annotations } })
      ])
      expect(result.code, result.stderr).toBe(0)
    }
    const passesSince = async (count: number) =>
      waitFor(async () => {
        const events = await eventsFor("x", TENANT)
        return events.filter((event) => event.reason === "InvalidRecord").length >= count
      }, { description: `${count} InvalidRecord Warning(s) on tenant/x`, timeoutMs: 15_000 })
    const prodRecord = JSON.parse(prodAnnotations["midokura.com/mappings"]!) as Array<Record<string, unknown>>
    const ownRecord = JSON.parse((await annotationsOf(TENANT, "x"))["midokura.com/mappings"]!) as Array<Record<string, unknown>>

    // 1. prod/web's record and signature, copied whole.
    await patch({
      "midokura.com/mappings": prodAnnotations["midokura.com/mappings"]!,
      "midokura.com/mappings-signature": prodAnnotations["midokura.com/mappings-signature"]!
    })
    await passesSince(1)
    // 2. Its own record plus prod/web's entry, unsigned.
    await patch({
      "midokura.com/mappings": JSON.stringify([...ownRecord, ...prodRecord]),
      "midokura.com/mappings-signature": null
    })
    await passesSince(2)
    // 3. Its own entry pointing at prod/web's nodePort, over NAT-PMP (which deletes by internal port).
    await patch({
      "midokura.com/load-balancer-type": "nat-pmp",
      "midokura.com/mappings": JSON.stringify([{
        ...ownRecord[0]!,
        backend: "nat-pmp",
        gateway: `${lab.gatewayLanIp}:5351`,
        externalPort: 443,
        internalPort: prodNodePort
      }])
    })
    await passesSince(3)
    await patch({ "midokura.com/load-balancer-type": "upnp-igd" })
    // 4. A port name shaped like prod/web's description: the apiserver refuses it outright…
    const shaped = await asTenant([
      "patch", "service", "x", "--type=json", "-p",
      JSON.stringify([{ op: "replace", path: "/spec/ports/0/name", value: "kubernetes/prod/web/p" }])
    ])
    expect(shaped.code).not.toBe(0)
    expect(shaped.stderr).toMatch(/Invalid value|must/)
    // …and prod/web's own port name and number give tenant/x a description of its own, and the
    // port goes to the older Service.
    const same = await asTenant([
      "patch", "service", "x", "--type=json", "-p",
      JSON.stringify([{ op: "replace", path: "/spec/ports/0/name", value: "p" }, {
        op: "replace",
        path: "/spec/ports/0/port",
        value: 443
      }])
    ])
    expect(same.code, same.stderr).toBe(0)
    await waitFor(async () => {
      const tenant: ServiceView | undefined = await getService("x", TENANT)
      return tenant?.status?.loadBalancer?.ingress?.[0]?.ports?.[0]?.error === "midokura.com/PortConflict"
    }, { description: "tenant/x told that 443 belongs to an older Service", timeoutMs: 15_000 })
    // 5. A forged record again, then the Service deleted.
    await patch({ "midokura.com/mappings": prodAnnotations["midokura.com/mappings"]! })
    const deleted = await asTenant(["delete", "service", "x", "--wait=false"])
    expect(deleted.code, deleted.stderr).toBe(0)
    await waitFor(async () => (await getService("x", TENANT)) === undefined, {
      description: "tenant/x gone (its finalizer released)",
      timeoutMs: 15_000
    })

    sampling = false
    await sampler
    const missing = samples.filter((sample) => !sample.present)
    expect(samples.length).toBeGreaterThanOrEqual(40)
    expect(samples.at(-1)!.at).toBeGreaterThanOrEqual(10_000)
    expect(missing, `prod/web's rule missing at ${missing.map((m) => `${m.at} ms`).join(", ")}`).toEqual([])
    await curlReaches(443, prodNodePort)
    // And the tenant's own mappings, whichever protocol made them, are gone with its Service.
    await waitFor(async () => (await nftMappings()).every((rule) => rule.internalPort !== tenantNodePort), {
      description: `no rule left to tenant/x's nodePort ${tenantNodePort}`,
      timeoutMs: 15_000
    })
    console.log(`tenancy: ${samples.length} samples over ${samples.at(-1)!.at} ms, prod/web's rule present in all`)
  })
})
