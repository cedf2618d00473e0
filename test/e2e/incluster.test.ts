/**
 * In-cluster for real: the manifests applied to the real apiserver, and the controller run from
 * exactly what the image holds (the startup snapshot built from the one-file bundle, no
 * node_modules; built by scripts/build-artifact.sh) as an unprivileged user, authenticated as
 * the manifests' ServiceAccount, with leader election on. Its permissions are the ClusterRole's,
 * no more.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  type ControllerUnderTest,
  edgeCcmAsImage,
  eventsFor,
  getService,
  ingressIp,
  loadBalancerService,
  MANIFESTS_NAMESPACE as NAMESPACE,
  metricsText,
  NOBODY,
  startAsImage
} from "./support/controller.ts"
import { curlFromWan, ensureNamespace, kubectl, kubectlJson, loadLab, serveNodePort, upnpcList, waitFor } from "./support/lab.ts"

const root = path.resolve(import.meta.dirname, "../..")

let controller: ControllerUnderTest

beforeAll(async () => {
  // kubectl apply -k needs its Namespace first: a server-side dry run of a new Namespace and its objects fails.
  await ensureNamespace(NAMESPACE)
  const dryRun = await kubectl(["apply", "-k", path.join(root, "manifests"), "--dry-run=server"])
  expect(dryRun.code, dryRun.stderr).toBe(0)
  const applied = await kubectl(["apply", "-k", path.join(root, "manifests")])
  expect(applied.code, applied.stderr).toBe(0)
  expect(applied.stdout).toContain("clusterrole.rbac.authorization.k8s.io/edge-cloud-controller-manager")
  expect(applied.stdout).toContain("daemonset.apps/edge-cloud-controller-manager")

  controller = await startAsImage()
})

afterAll(async () => {
  await controller?.stop()
  await kubectl(["delete", "-k", path.join(root, "manifests"), "--ignore-not-found", "--wait=false"])
})

describe("the controller as the image runs it", () => {
  it("runs unprivileged, leads, and serves the seed walkthrough with only the ClusterRole's rights", async () => {
    const status = fs.readFileSync(`/proc/${controller.pid}/status`, "utf8")
    expect(status).toMatch(new RegExp(`^Uid:\\s+${NOBODY}\\s`, "m"))
    const lease = await kubectlJson<{ spec: { holderIdentity: string } }>(
      ["get", "lease", "edge-cloud-controller-manager", "-n", NAMESPACE]
    )
    expect(lease.spec.holderIdentity).toBe("node-1")

    await kubectl(["create", "-f", path.join(root, "examples/loadbalancers/upnp-igd-http-nginx.yaml")])
    const service = await waitFor(async () => {
      const s = await getService("http-nginx-service")
      return ingressIp(s) === "122.112.219.229" ? s : undefined
    }, { description: "EXTERNAL-IP", timeoutMs: 5_000 })
    const nodePort = service.spec.ports[0]!.nodePort!
    const server = await serveNodePort(nodePort)
    try {
      expect((await curlFromWan("http://122.112.219.229:8080/")).body).toBe(server.body)
    } finally {
      await server.close()
    }
    expect((await eventsFor("http-nginx-service")).map((e) => e.reason)).toContain("EnsuredLoadBalancer")
    await kubectl(["delete", "-f", path.join(root, "examples/loadbalancers/upnp-igd-http-nginx.yaml"), "--wait=false"])
    await waitFor(async () => (await getService("http-nginx-service")) === undefined, {
      description: "the Service to be gone"
    })
    expect((await upnpcList()).find((m) => m.externalPort === 8080)).toBeUndefined()
  })

  it("as a command, takes its arguments and environment from its start, not from the build of its snapshot", async () => {
    const byFlag = await edgeCcmAsImage(["gateway", "status", "--gateway-url", loadLab().rootDescUrl])
    expect(byFlag.code, byFlag.stderr).toBe(0)
    expect(byFlag.stdout).toMatch(/^external IP\s+122\.112\.219\.229 /m)
    // Only the environment names this URL (the router, a closed port): the failure names it.
    const closedPort = "http://192.168.77.1:9/rootDesc.xml"
    const byEnvironment = await edgeCcmAsImage(["gateway", "status"], { env: { EDGE_CCM_GATEWAY_URL: closedPort } })
    expect(byEnvironment.code).toBe(1)
    expect(byEnvironment.stderr).toContain(`root description on ${closedPort}: gateway unreachable`)
  })

  it("serves /healthz and /readyz with nothing but ok, and Prometheus /metrics over HTTPS with its own reviews", async () => {
    const healthz = await fetch(`${controller.healthUrl}/healthz`)
    expect(healthz.status).toBe(200)
    expect(await healthz.text()).toBe('{"ok":true}')
    expect(await (await fetch(`${controller.healthUrl}/readyz`)).text()).toBe('{"ok":true}')
    // The detail went to the log, once, when it became ready.
    expect(controller.output()).toMatch(/"message":"ready"/)
    // Scraped with the lab admin's token: the controller, as its ServiceAccount, had to review it.
    const metrics = await metricsText(controller)
    for (
      const name of [
        "edge_ccm_reconcile_total",
        "edge_ccm_reconcile_duration_seconds_bucket",
        "edge_ccm_gateway_requests_total",
        "edge_ccm_gateway_request_duration_seconds_bucket",
        "edge_ccm_owned_mappings",
        "edge_ccm_external_ip_info",
        "edge_ccm_leader"
      ]
    ) expect(metrics, name).toContain(name)
    expect(metrics).toMatch(/edge_ccm_external_ip_info\{[^}]*ip="122\.112\.219\.229"[^}]*\} 1/)
    expect(metrics).toMatch(/edge_ccm_leader\{[^}]*\} 1/)
    for (const gauge of ["edge_ccm_ready 1", "edge_ccm_services_synced 1", "edge_ccm_gateway_reachable 1"]) {
      expect(metrics.split("\n"), gauge).toContain(gauge)
    }
  })

  it("says precisely which permission is missing when a rule is removed, and recovers when it is back", async () => {
    const role = await kubectlJson<{ rules: Array<{ resources: Array<string> }> }>(
      ["get", "clusterrole", "edge-cloud-controller-manager"]
    )
    const withoutStatus = {
      ...role,
      rules: role.rules.filter((rule) => !rule.resources.includes("services/status"))
    }
    expect(withoutStatus.rules.length).toBe(role.rules.length - 1)
    const replaced = await kubectl(["replace", "-f", "-"], { input: JSON.stringify(withoutStatus) })
    expect(replaced.code, replaced.stderr).toBe(0)
    try {
      await kubectl(["create", "-f", "-"], {
        input: loadBalancerService("rbac-probe", { ports: [{ name: "http", port: 8701 }] })
      })
      const event = await waitFor(
        async () => (await eventsFor("rbac-probe")).find((e) => e.reason === "SyncLoadBalancerFailed"),
        { description: "a SyncLoadBalancerFailed event", timeoutMs: 15_000 }
      )
      expect(event.note).toContain("services/status")
      expect(event.note).toMatch(/403|[Ff]orbidden/)
      expect(controller.output()).toContain("services/status")
    } finally {
      const restored = await kubectl(["apply", "-k", path.join(root, "manifests")])
      expect(restored.code, restored.stderr).toBe(0)
    }
    await waitFor(async () => ingressIp(await getService("rbac-probe")) === "122.112.219.229", {
      description: "the Service published once the permission is back",
      timeoutMs: 30_000
    })
    await kubectl(["delete", "service", "rbac-probe", "--wait=false"])
    await waitFor(async () => (await getService("rbac-probe")) === undefined, { description: "rbac-probe gone" })
  })
})
