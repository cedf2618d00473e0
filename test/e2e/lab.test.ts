/**
 * The lab itself (scripts/lab/README.md): a real kube-apiserver + etcd on the node namespace and
 * a real miniupnpd gateway, reached the way the controller will reach them. Runs inside the
 * node namespace through `npm run test:e2e`.
 */
import * as k8s from "@kubernetes/client-node"
import * as path from "node:path"
import { afterEach, describe, expect, it } from "vitest"
import { repoRoot } from "../../scripts/lab/driver.ts"
import * as lab from "./support/lab.ts"

const example = path.join(repoRoot, "examples/loadbalancers/upnp-igd-http-nginx.yaml")
const description = "kubernetes/default/http-nginx-service/http"

interface Service {
  metadata: { name: string; annotations?: Record<string, string> }
  spec: {
    type: string
    clusterIP: string
    selector: Record<string, string>
    ports: Array<{ name: string; port: number; targetPort: number; nodePort: number; protocol: string }>
  }
}

function inServiceCidr(ip: string): boolean {
  return /^10\.96\.\d{1,3}\.\d{1,3}$/.test(ip)
}

async function createExample(): Promise<Service> {
  const created = await lab.kubectl(["create", "-f", example])
  expect(created.code, created.stderr).toBe(0)
  return lab.kubectlJson<Service>(["get", "service", "http-nginx-service"])
}

async function deleteExample(): Promise<void> {
  const r = await lab.kubectl(["delete", "-f", example, "--ignore-not-found"])
  expect(r.code, r.stderr).toBe(0)
}

async function createLoadBalancerService(name: string): Promise<void> {
  const r = await lab.kubectl(["create", "-f", "-"], {
    input: JSON.stringify({
      apiVersion: "v1",
      kind: "Service",
      metadata: { name, namespace: "default" },
      spec: { type: "LoadBalancer", selector: { app: name }, ports: [{ name: "http", port: 8080, targetPort: 80 }] }
    })
  })
  expect(r.code, r.stderr).toBe(0)
}

async function deleteService(name: string): Promise<void> {
  const r = await lab.kubectl(["delete", "service", name, "--ignore-not-found"])
  expect(r.code, r.stderr).toBe(0)
}

afterEach(async () => {
  await lab.stopAllProcesses()
  await lab.restoreGateway()
})

describe("the lab's API server", () => {
  it("is a real kube-apiserver v1.34, reached with a matching kubectl", async () => {
    const r = await lab.kubectl(["version", "-o", "json"])
    expect(r.code, r.stderr).toBe(0)
    const version = JSON.parse(r.stdout) as { serverVersion: { gitVersion: string }; clientVersion: { gitVersion: string } }
    expect(version.serverVersion.gitVersion).toMatch(/^v1\.34\.\d+$/)
    expect(version.clientVersion.gitVersion).toBe(version.serverVersion.gitVersion)
    const node = await lab.kubectlJson<{ status: { addresses: Array<{ type: string; address: string }> } }>(["get", "node", "node-1"])
    expect(node.status.addresses).toContainEqual({ type: "InternalIP", address: lab.loadLab().nodeIp })
  })

  it("stores the seed's example: the Deployment, and a Service with a ClusterIP in 10.96/16 and a nodePort", async () => {
    try {
      const service = await createExample()
      const deployment = await lab.kubectlJson<{
        spec: { replicas: number; template: { spec: { containers: Array<{ name: string; image: string; ports: Array<{ containerPort: number }> }> } } }
      }>(["get", "deployment", "http-nginx-deployment"])
      expect(deployment.spec.replicas).toBe(2)
      expect(deployment.spec.template.spec.containers[0]).toMatchObject({ name: "nginx", image: "nginx", ports: [{ containerPort: 80 }] })

      expect(service.metadata.annotations?.["midokura.com/load-balancer-type"]).toBe("upnp-igd")
      expect(service.spec.type).toBe("LoadBalancer")
      expect(service.spec.selector).toEqual({ app: "nginx" })
      expect(inServiceCidr(service.spec.clusterIP)).toBe(true)
      expect(service.spec.ports).toHaveLength(1)
      const port = service.spec.ports[0]
      expect(port).toMatchObject({ name: "http", port: 8080, targetPort: 80, protocol: "TCP" })
      expect(port?.nodePort).toBeGreaterThanOrEqual(30000)
      expect(port?.nodePort).toBeLessThanOrEqual(32767)

      const table = await lab.kubectl(["get", "service", "http-nginx-service"])
      expect(table.stdout).toMatch(new RegExp(`http-nginx-service\\s+LoadBalancer\\s+${service.spec.clusterIP.replaceAll(".", "\\.")}\\s+<pending>\\s+8080:${port?.nodePort}/TCP`))
    } finally {
      await deleteExample()
    }
  })

  it("serves a watch through @kubernetes/client-node: ADDED, then MODIFIED", async () => {
    const name = lab.uniqueName("watch")
    const seen: Array<{ type: string; name: string | undefined }> = []
    const failures: Array<unknown> = []
    const watch = new k8s.Watch(lab.kubeConfig())
    const request = await watch.watch(
      "/api/v1/namespaces/default/services",
      {},
      (type, object: k8s.V1Service) => {
        seen.push({ type, name: object.metadata?.name })
      },
      (error) => {
        if (error) failures.push(error)
      }
    )
    try {
      await createLoadBalancerService(name)
      await lab.waitFor(() => seen.some((e) => e.type === "ADDED" && e.name === name), { description: `ADDED ${name}`, timeoutMs: 15_000 })
      const labelled = await lab.kubectl(["label", "service", name, "edge-ccm-lab/touched=yes"])
      expect(labelled.code, labelled.stderr).toBe(0)
      await lab.waitFor(() => seen.some((e) => e.type === "MODIFIED" && e.name === name), { description: `MODIFIED ${name}`, timeoutMs: 15_000 })
      expect(failures).toEqual([])
    } finally {
      request.abort()
      await deleteService(name)
    }
  })

  it("takes a status-subresource patch: EXTERNAL-IP shows in `kubectl get svc`", async () => {
    const name = lab.uniqueName("status")
    const externalIp = lab.loadLab().gatewayWanIp
    const core = lab.kubeConfig().makeApiClient(k8s.CoreV1Api)
    try {
      await createLoadBalancerService(name)
      const patched = await core.patchNamespacedServiceStatus(
        { name, namespace: "default", body: { status: { loadBalancer: { ingress: [{ ip: externalIp }] } } } },
        k8s.setHeaderOptions("Content-Type", k8s.PatchStrategy.StrategicMergePatch)
      )
      expect(patched.status?.loadBalancer?.ingress?.[0]?.ip).toBe(externalIp)
      const service = await lab.kubectlJson<Service & { status: { loadBalancer: { ingress: Array<{ ip: string }> } } }>(["get", "service", name])
      expect(service.status.loadBalancer.ingress).toHaveLength(1)
      expect(service.status.loadBalancer.ingress[0]?.ip).toBe(externalIp)
      const table = await lab.kubectl(["get", "svc", name])
      expect(table.code, table.stderr).toBe(0)
      expect(table.stdout).toMatch(new RegExp(`${name}\\s+LoadBalancer\\s+10\\.96\\.\\S+\\s+${externalIp.replaceAll(".", "\\.")}\\s+8080:\\d+/TCP`))
    } finally {
      await deleteService(name)
    }
  })

  it("stores an events.k8s.io/v1 Event about a Service", async () => {
    const name = lab.uniqueName("event")
    const events = lab.kubeConfig().makeApiClient(k8s.EventsV1Api)
    let eventName: string | undefined
    try {
      await createLoadBalancerService(name)
      const created = await events.createNamespacedEvent({
        namespace: "default",
        body: {
          metadata: { generateName: `${name}-` },
          eventTime: new k8s.V1MicroTime(),
          reportingController: "midokura.com/edge-ccm",
          reportingInstance: "edge-ccm-lab",
          action: "Map",
          reason: "PortMapped",
          type: "Normal",
          note: "TCP 8080 mapped",
          regarding: { apiVersion: "v1", kind: "Service", namespace: "default", name }
        }
      })
      eventName = created.metadata?.name
      expect(eventName).toBeDefined()
      const listed = await lab.kubectlJson<{ items: Array<{ reason: string; note: string; regarding: { name: string } }> }>([
        "get", "events.v1.events.k8s.io", "--field-selector", `regarding.name=${name}`
      ])
      expect(listed.items).toHaveLength(1)
      expect(listed.items[0]).toMatchObject({ reason: "PortMapped", note: "TCP 8080 mapped", regarding: { name } })
    } finally {
      if (eventName !== undefined) {
        const r = await lab.kubectl(["delete", "events.v1.events.k8s.io", eventName, "--ignore-not-found"])
        expect(r.code, r.stderr).toBe(0)
      }
      await deleteService(name)
    }
  })

  it("enforces RBAC: a ServiceAccount token without rights is denied `list services` (403), then allowed", async () => {
    const account = lab.uniqueName("sa")
    const role = `${account}-services-reader`
    try {
      const sa = await lab.kubectl(["create", "serviceaccount", account, "-n", "default"])
      expect(sa.code, sa.stderr).toBe(0)
      const token = await lab.createServiceAccountToken("default", account, { expirationSeconds: 600 })
      const kubeconfig = lab.kubeconfigForToken(token)

      const whoami = await lab.kubectl(["auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"], { kubeconfig })
      expect(whoami.stdout).toBe(`system:serviceaccount:default:${account}`)

      const denied = await lab.kubectl(["get", "services", "--all-namespaces"], { kubeconfig })
      expect(denied.code).not.toBe(0)
      expect(denied.stderr).toContain(`"system:serviceaccount:default:${account}" cannot list resource "services"`)
      const core = lab.kubeConfig(token).makeApiClient(k8s.CoreV1Api)
      const error = await core.listServiceForAllNamespaces().then(() => undefined, (e: unknown) => e)
      expect(error).toBeInstanceOf(k8s.ApiException)
      expect((error as k8s.ApiException<unknown>).code).toBe(403)

      const granted = [
        await lab.kubectl(["create", "clusterrole", role, "--verb=get,list,watch", "--resource=services"]),
        await lab.kubectl(["create", "clusterrolebinding", role, `--clusterrole=${role}`, `--serviceaccount=default:${account}`])
      ]
      for (const r of granted) expect(r.code, r.stderr).toBe(0)
      const list = await lab.waitFor(
        () => core.listServiceForAllNamespaces(),
        { description: "list services allowed after the ClusterRoleBinding", timeoutMs: 15_000 }
      )
      expect(list.items.some((s) => s.metadata?.name === "kubernetes")).toBe(true)
    } finally {
      for (const args of [["clusterrolebinding", role], ["clusterrole", role], ["serviceaccount", account, "-n", "default"]]) {
        const r = await lab.kubectl(["delete", ...args, "--ignore-not-found"])
        expect(r.code, r.stderr).toBe(0)
      }
    }
  })
})

describe("the lab's gateway", () => {
  it("is found from the node by SSDP: `upnpc -l` shows ExternalIPAddress = 122.112.219.229", async () => {
    const { gatewayLanIp } = lab.loadLab()
    const listing = await lab.upnpcList({ discover: true })
    expect(listing.raw).toContain(`desc: http://${gatewayLanIp}:49536/rootDesc.xml`)
    expect(listing.raw).toContain(`Local LAN ip address : ${lab.loadLab().nodeIp}`)
    expect(listing.externalIpAddress).toBe("122.112.219.229")
  })

  it("carries a curl from wan through a manual mapping to the nodePort stand-in; a reboot removes the mapping", async () => {
    const server = { close: async () => {} }
    try {
      const service = await createExample()
      const nodePort = service.spec.ports[0]?.nodePort ?? 0
      const standIn = await lab.serveNodePort(nodePort)
      server.close = standIn.close
      const { nodeIp, gatewayWanIp } = lab.loadLab()

      const before = await lab.curlFromWan(`http://${gatewayWanIp}:8080/`, { timeoutMs: 2000 })
      expect(before.ok).toBe(false)

      const added = await lab.upnpcAdd({ externalPort: 8080, internalPort: nodePort, protocol: "TCP", internalClient: nodeIp, description })
      expect(added.ok, added.raw).toBe(true)
      const listing = await lab.upnpcList()
      expect(listing).toContainEqual(expect.objectContaining({
        protocol: "TCP",
        externalPort: 8080,
        internalClient: nodeIp,
        internalPort: nodePort,
        description,
        remoteHost: ""
      }))
      expect(listing.raw).toMatch(new RegExp(` TCP\\s+8080->${nodeIp.replaceAll(".", "\\.")}:${nodePort}\\s+'${description}' ''`))

      const response = await lab.curlFromWan(`http://${gatewayWanIp}:8080/`)
      expect(response).toMatchObject({ ok: true, status: 200, body: `edge-ccm-lab nodePort ${nodePort}\n` })
      expect(standIn.requests()).toBe(1)

      const startsBefore = lab.loadLab().gateway.starts
      await lab.rebootGateway()
      expect(lab.loadLab().gateway.starts).toBe(startsBefore + 1)
      const after = await lab.upnpcList()
      expect(after.externalIpAddress).toBe(gatewayWanIp)
      expect(after).toEqual([])
      expect(await lab.nftMappings()).toEqual([])
      const refused = await lab.curlFromWan(`http://${gatewayWanIp}:8080/`, { timeoutMs: 2000 })
      expect(refused.ok).toBe(false)
      expect(refused.status).toBe(0)
      expect(standIn.requests()).toBe(1)
    } finally {
      await server.close()
      await lab.upnpcDelete({ externalPort: 8080, protocol: "TCP" })
      await deleteExample()
    }
  })

  it("refuses mappings while its WAN address is private (double NAT) and takes them again after renumbering, without a restart", async () => {
    const { nodeIp, gateway } = lab.loadLab()
    const standIn = await lab.serveNodePort(30123)
    try {
      await lab.setGatewayWanAddress("10.0.0.2/24")
      const hidden = await lab.upnpcList()
      expect(hidden.externalIpAddress).toBeNull()
      expect(hidden.raw).toContain("GetExternalIPAddress failed. (empty string)")
      const refused = await lab.upnpcAdd({ externalPort: 9123, internalPort: 30123, internalClient: nodeIp })
      expect(refused.errorCode).toBe(501)

      await lab.setGatewayWanAddress("122.112.219.230/24")
      expect(lab.loadLab().gateway.pid).toBe(gateway.pid)
      expect((await lab.upnpcList()).externalIpAddress).toBe("122.112.219.230")
      const added = await lab.upnpcAdd({ externalPort: 9123, internalPort: 30123, internalClient: nodeIp })
      expect(added.ok, added.raw).toBe(true)
      const response = await lab.curlFromWan("http://122.112.219.230:9123/")
      expect(response.body).toBe("edge-ccm-lab nodePort 30123\n")
    } finally {
      await lab.upnpcDelete({ externalPort: 9123 })
      await standIn.close()
    }
  })

  it("a renumbering whose wait between removal and addition fails still leaves the new address in place", async () => {
    const waitFailed = lab.setGatewayWanAddress("122.112.219.233/24", {
      afterRemoval: () => Promise.reject(new Error("the test's wait failed"))
    })
    await expect(waitFailed).rejects.toThrow("the test's wait failed")
    expect(lab.loadLab().gatewayWanIp).toBe("122.112.219.233")
    expect((await lab.upnpcList()).externalIpAddress).toBe("122.112.219.233")
  })

  it("holds mappings of another LAN host: made from the peer host under secure_mode=yes, refused from the node (718, 606)", async () => {
    const { peerIp } = lab.loadLab()
    await lab.reconfigureGateway({ secureMode: true })
    expect(lab.loadLab().gateway.settings.secureMode).toBe(true)
    try {
      const fromNode = await lab.upnpcAdd({ externalPort: 9200, internalPort: 5000, internalClient: peerIp })
      expect(fromNode.errorCode).toBe(718)
      const fromPeer = await lab.upnpcAdd({ externalPort: 9200, internalPort: 5000, from: "peer", description: "someone else" })
      expect(fromPeer.ok, fromPeer.raw).toBe(true)
      expect(await lab.upnpcList()).toContainEqual(expect.objectContaining({ externalPort: 9200, internalClient: peerIp, description: "someone else" }))
      const deleteFromNode = await lab.upnpcDelete({ externalPort: 9200 })
      expect(deleteFromNode.errorCode).toBe(606)
    } finally {
      await lab.upnpcDelete({ externalPort: 9200, from: "peer" })
    }
  })

  it("speaks NAT-PMP with UPnP disabled; the table is read from nftables", async () => {
    const { nodeIp } = lab.loadLab()
    await lab.reconfigureGateway({ enableUpnp: false })
    try {
      const listing = await lab.upnpcList()
      expect(listing).toEqual([])
      expect(listing.externalIpAddress).toBeNull()
      const mapped = await lab.natpmpc(["-a", "9090", "30001", "tcp", "3600"])
      expect(mapped.stdout).toContain("Mapped public port 9090 protocol TCP to local port 30001")
      expect(await lab.nftMappings()).toEqual([{ protocol: "TCP", externalPort: 9090, internalClient: nodeIp, internalPort: 30001 }])
    } finally {
      await lab.natpmpc(["-a", "9090", "30001", "tcp", "0"])
    }
  })
})
