/**
 * Least privilege, measured rather than listed. The manifests are applied and the controller
 * runs from what the image holds, as an unprivileged user, authenticated as the manifests'
 * ServiceAccount, with leader election on. It is made to do everything it does through the
 * API; the lab apiserver's audit log (every request of a ServiceAccount in edge-ccm-system)
 * then says what it asked for, and `kubectl auth can-i --list` what RBAC grants it. Both ways
 * must match: nothing refused, nothing granted that was not used.
 *
 * Also /metrics as Prometheus scrapes it, with manifests/monitoring's binding: 401, 403, 200.
 */
import { loadAllYaml } from "@kubernetes/client-node"
import * as path from "node:path"
import { afterAll, beforeAll, describe, expect, it } from "vitest"
import {
  type ControllerUnderTest,
  eventsFor,
  getService,
  ingressIp,
  loadBalancerService,
  MANIFESTS_NAMESPACE as NAMESPACE,
  MANIFESTS_SERVICE_ACCOUNT,
  sample,
  scrapeMetrics,
  startAsImage
} from "./support/controller.ts"
import { createServiceAccountToken, ensureNamespace, inNamespace, kubectl, loadLab, upnpcList, waitFor } from "./support/lab.ts"
import {
  auditedRequests,
  auditLogSize,
  type AuditedRequest,
  type Permission,
  permissionKey,
  permissionsOf,
  parseCanIList,
  requestKey
} from "./support/rbac.ts"

const root = path.resolve(import.meta.dirname, "../..")
const USER = `system:serviceaccount:${NAMESPACE}:${MANIFESTS_SERVICE_ACCOUNT}`
const RECORD_KEY = "edge-cloud-controller-manager-record-key"
const LEASE = "edge-cloud-controller-manager"
/** manifests/monitoring binds the metrics reader to kube-prometheus's ServiceAccount. */
const PROMETHEUS = { namespace: "monitoring", name: "prometheus-k8s" }
const NOT_A_SCRAPER = { namespace: "monitoring", name: "grafana" }
const REFUSED = "rbac-status-refused"

let controller: ControllerUnderTest
let auditFrom = 0
let prometheusToken = ""
let otherToken = ""

interface Manifest {
  readonly kind: string
  readonly metadata: { readonly name: string; readonly labels?: Readonly<Record<string, string>> }
}

/** The fields of the rendered manifests that must agree for a scrape to reach the controller. */
interface Rendered {
  readonly ServiceMonitor: Manifest & {
    readonly spec: {
      readonly selector: { readonly matchLabels: Readonly<Record<string, string>> }
      readonly endpoints: ReadonlyArray<Readonly<Record<string, unknown>>>
    }
  }
  readonly Service: Manifest & {
    readonly spec: { readonly clusterIP: string; readonly selector: Readonly<Record<string, string>>; readonly ports: ReadonlyArray<unknown> }
  }
  readonly DaemonSet: Manifest & {
    readonly spec: {
      readonly template: {
        readonly metadata: { readonly labels: Readonly<Record<string, string>> }
        readonly spec: { readonly containers: ReadonlyArray<{ readonly args: ReadonlyArray<string>; readonly ports: ReadonlyArray<unknown> }> }
      }
    }
  }
  readonly ClusterRole: Manifest & { readonly rules: ReadonlyArray<unknown> }
}

const render = async (dir: string): Promise<Array<Manifest>> => {
  const rendered = await kubectl(["kustomize", path.join(root, dir)])
  expect(rendered.code, rendered.stderr).toBe(0)
  return loadAllYaml(rendered.stdout) as Array<Manifest>
}

beforeAll(async () => {
  await ensureNamespace(NAMESPACE)
  const applied = await kubectl(["apply", "-k", path.join(root, "manifests")])
  expect(applied.code, applied.stderr).toBe(0)
  // Everything the controller creates is created while we watch: the Lease, and the record key.
  await kubectl(["delete", "lease", LEASE, "-n", NAMESPACE, "--ignore-not-found"])
  await kubectl(["delete", "secret", RECORD_KEY, "-n", NAMESPACE, "--ignore-not-found"])

  // One bound to nothing: what every ServiceAccount of the namespace is granted anyway.
  await kubectl(["create", "serviceaccount", "bound-to-nothing", "-n", NAMESPACE])

  // Prometheus's ServiceAccount and another one, and manifests/monitoring but its
  // ServiceMonitor (prometheus-operator's CRDs are not installed in the lab).
  await ensureNamespace(PROMETHEUS.namespace)
  for (const account of [PROMETHEUS, NOT_A_SCRAPER]) {
    await kubectl(["create", "serviceaccount", account.name, "-n", account.namespace])
  }
  const monitoring = (await render("manifests/monitoring")).filter((object) => object.kind !== "ServiceMonitor")
  const bound = await kubectl(["apply", "-f", "-"], { input: JSON.stringify({ apiVersion: "v1", kind: "List", items: monitoring }) })
  expect(bound.code, bound.stderr).toBe(0)
  prometheusToken = await createServiceAccountToken(PROMETHEUS.namespace, PROMETHEUS.name, { expirationSeconds: 3600 })
  otherToken = await createServiceAccountToken(NOT_A_SCRAPER.namespace, NOT_A_SCRAPER.name, { expirationSeconds: 3600 })

  auditFrom = auditLogSize(loadLab().auditLog)
  controller = await startAsImage()
})

afterAll(async () => {
  await kubectl(["delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", REFUSED, "--ignore-not-found"])
  for (const name of ["rbac-published", REFUSED]) await kubectl(["delete", "service", name, "--ignore-not-found", "--wait=false"])
  await waitFor(async () => (await getService("rbac-published")) === undefined && (await getService(REFUSED)) === undefined, {
    description: "the test's Services to be gone",
    timeoutMs: 30_000
  }).catch(() => undefined)
  await controller?.stop()
  const monitoring = (await render("manifests/monitoring")).filter((object) => object.kind !== "ServiceMonitor")
  await kubectl(["delete", "-f", "-", "--ignore-not-found"], { input: JSON.stringify({ apiVersion: "v1", kind: "List", items: monitoring }) })
})

describe("/metrics as Prometheus scrapes it", () => {
  it("401 without a token or with a forged one, 403 for a ServiceAccount without the ClusterRole, 200 with it", async () => {
    expect((await scrapeMetrics(controller, { token: null })).status).toBe(401)
    expect((await scrapeMetrics(controller, { token: "forged.token.value" })).status).toBe(401)
    const refused = await scrapeMetrics(controller, { token: otherToken })
    expect(refused.status).toBe(403)
    expect(refused.body).not.toContain("edge_ccm")
    const scrape = await scrapeMetrics(controller, { token: prometheusToken })
    expect(scrape.status).toBe(200)
    expect(scrape.body).toMatch(/^# TYPE edge_ccm_ready gauge$/m)
    expect(sample(scrape.body, "edge_ccm_ready")).toBe(1)
    expect(sample(scrape.body, `edge_ccm_leader{lease="${NAMESPACE}/${LEASE}"}`)).toBe(1)
  })

  it("answers the README's curl -sk, and presents its self-signed certificate for the node's address", async () => {
    const { nodeIp } = loadLab()
    const curl = await inNamespace("lan", [
      "curl", "-sk", "-H", `Authorization: Bearer ${prometheusToken}`, `https://${nodeIp}:10259/metrics`
    ])
    expect(curl.code, curl.stderr).toBe(0)
    expect(curl.stdout).toMatch(/^edge_ccm_ready 1$/m)
    const served = await inNamespace("lan", [
      "bash", "-c", `openssl s_client -connect ${nodeIp}:10259 </dev/null 2>/dev/null | openssl x509 -noout -text`
    ])
    expect(served.code, served.stderr).toBe(0)
    expect(served.stdout).toContain("Subject: CN = edge-cloud-controller-manager")
    expect(served.stdout).toContain("Signature Algorithm: ecdsa-with-SHA256")
    expect(served.stdout).toContain(`IP Address:${nodeIp}`)
  })

  it("answers no plain HTTP on its port", async () => {
    const plain = await inNamespace("lan", [
      "curl", "-sS", "-H", `Authorization: Bearer ${prometheusToken}`, `http://${loadLab().nodeIp}:10259/metrics`
    ])
    // 52: the server closed the connection without a reply.
    expect(plain.code).toBe(52)
    expect(plain.stdout).toBe("")
  })

  it("/readyz and /healthz say nothing but ok; the log says why, once", async () => {
    expect(await (await fetch(`${controller.healthUrl}/readyz`)).text()).toBe('{"ok":true}')
    expect(await (await fetch(`${controller.healthUrl}/healthz`)).text()).toBe('{"ok":true}')
    const readiness = () =>
      controller.output().split("\n")
        .filter((line) => line.startsWith("{"))
        .map((line) => (JSON.parse(line) as { message: string }).message)
        .filter((message) => /^(not )?ready\b/.test(message))
    // The log is written when the change is seen (it is checked every second).
    const transitions = await waitFor(() => (readiness().at(-1) === "ready" ? readiness() : undefined), {
      description: "the log line saying it is ready"
    })
    console.log(`readiness as logged:\n  ${transitions.join("\n  ")}`)
    expect(transitions[0]).toMatch(/^not ready: starting/)
    expect(transitions.filter((message) => message === "ready")).toHaveLength(1)
  })

  it("the ServiceMonitor scrapes the Service's port, which selects the DaemonSet's pods on their metrics port", async () => {
    const objects = [...await render("manifests/monitoring"), ...await render("manifests")]
    const of = <K extends keyof Rendered>(kind: K, name?: string) =>
      objects.find((object) => object.kind === kind && (name === undefined || object.metadata.name === name)) as Rendered[K]
    const monitor = of("ServiceMonitor")
    const service = of("Service")
    const daemonSet = of("DaemonSet")
    const container = daemonSet.spec.template.spec.containers[0]!
    for (const [key, value] of Object.entries(monitor.spec.selector.matchLabels)) {
      expect(service.metadata.labels?.[key], key).toBe(value)
    }
    const endpoint = monitor.spec.endpoints[0]!
    expect(endpoint).toMatchObject({ port: "metrics", path: "/metrics", scheme: "https" })
    expect(endpoint.bearerTokenFile).toBe("/var/run/secrets/kubernetes.io/serviceaccount/token")
    expect(endpoint.tlsConfig).toEqual({ insecureSkipVerify: true })
    expect(service.spec.clusterIP).toBe("None")
    for (const [key, value] of Object.entries(service.spec.selector)) {
      expect(daemonSet.spec.template.metadata.labels[key], key).toBe(value)
    }
    expect(service.spec.ports).toEqual([{ name: "metrics", port: 10259, targetPort: "metrics", protocol: "TCP" }])
    expect(container.ports).toContainEqual({ name: "metrics", containerPort: 10259 })
    expect(container.args).toContain("--metrics-bind-address=$(POD_IP):10259")
    expect(of("ClusterRole", "edge-cloud-controller-manager-metrics-reader").rules).toEqual([{ nonResourceURLs: ["/metrics"], verbs: ["get"] }])
  })
})

describe("RBAC, measured", () => {
  it("publishes a Service, reads one whose status write admission refuses, sends Events, deletes both", async () => {
    await kubectl(["create", "-f", "-"], { input: loadBalancerService("rbac-published", { ports: [{ name: "http", port: 8721 }] }) })
    await waitFor(async () => ingressIp(await getService("rbac-published")) === "122.112.219.229", { description: "rbac-published published" })

    // A status write refused by admission (422): the controller reads the Service to tell a
    // re-created one from a refusal. The Service is ours only once the policy is in force.
    await kubectl(["create", "-f", "-"], {
      input: loadBalancerService(REFUSED, { ports: [{ name: "http", port: 8722 }], annotations: {} })
    })
    const policy = {
      apiVersion: "v1",
      kind: "List",
      items: [{
        apiVersion: "admissionregistration.k8s.io/v1",
        kind: "ValidatingAdmissionPolicy",
        metadata: { name: REFUSED },
        spec: {
          failurePolicy: "Fail",
          matchConstraints: {
            resourceRules: [{ apiGroups: [""], apiVersions: ["v1"], operations: ["UPDATE"], resources: ["services/status"] }]
          },
          validations: [{ expression: `object.metadata.name != '${REFUSED}'`, message: "refused by the test", reason: "Invalid" }]
        }
      }, {
        apiVersion: "admissionregistration.k8s.io/v1",
        kind: "ValidatingAdmissionPolicyBinding",
        metadata: { name: REFUSED },
        spec: { policyName: REFUSED, validationActions: ["Deny"] }
      }]
    }
    expect((await kubectl(["create", "-f", "-"], { input: JSON.stringify(policy) })).code).toBe(0)
    const statusWrite = ["patch", "service", REFUSED, "--subresource=status", "--type=merge", "-p", "{}", "--dry-run=server"]
    await waitFor(async () => (await kubectl(statusWrite)).code !== 0, { description: "the admission policy in force" })
    await kubectl(["annotate", "service", REFUSED, "midokura.com/load-balancer-type=upnp-igd"])
    const failed = await waitFor(
      async () => (await eventsFor(REFUSED)).find((event) => event.reason === "SyncLoadBalancerFailed"),
      { description: "SyncLoadBalancerFailed for the refused status write", timeoutMs: 15_000 }
    )
    expect(failed.note).toContain("HTTP 422")

    await kubectl(["delete", "validatingadmissionpolicybinding,validatingadmissionpolicy", REFUSED])
    await waitFor(async () => (await kubectl(statusWrite)).code === 0, { description: "the admission policy gone" })
    await waitFor(async () => ingressIp(await getService(REFUSED)) === "122.112.219.229", {
      description: `${REFUSED} published once its status can be written`,
      timeoutMs: 60_000
    })
    expect((await eventsFor("rbac-published")).map((event) => event.reason)).toContain("EnsuredLoadBalancer")

    for (const name of ["rbac-published", REFUSED]) await kubectl(["delete", "service", name, "--wait=false"])
    await waitFor(async () => (await getService("rbac-published")) === undefined && (await getService(REFUSED)) === undefined, {
      description: "both Services gone"
    })
    expect((await upnpcList()).filter((m) => m.externalPort === 8721 || m.externalPort === 8722)).toEqual([])
  })

  /**
   * What every ServiceAccount in the namespace is granted without any binding of ours, measured
   * on one that has none. It must be exactly this, and it is left out of the comparison:
   * - selfsubjectaccessreviews, selfsubjectrulesreviews, selfsubjectreviews (create):
   *   system:basic-user, bound to every authenticated user, so anyone can ask what they may do;
   * - /api, /apis, /version, /healthz, /livez, /readyz, /openapi (get): system:discovery and
   *   system:public-info-viewer, bound to every authenticated user, for discovery;
   * - /.well-known/openid-configuration, /openid/v1/jwks (get): system:service-account-issuer-discovery,
   *   bound to every ServiceAccount, for verifying ServiceAccount tokens elsewhere.
   */
  const EVERYONE = [
    "create selfsubjectaccessreviews.authorization.k8s.io",
    "create selfsubjectreviews.authentication.k8s.io",
    "create selfsubjectrulesreviews.authorization.k8s.io",
    ...["/.well-known/openid-configuration", "/.well-known/openid-configuration/", "/api", "/api/*", "/apis", "/apis/*",
      "/healthz", "/livez", "/openapi", "/openapi/*", "/openid/v1/jwks", "/openid/v1/jwks/", "/readyz", "/version",
      "/version/"].map((url) => `get ${url}`)
  ].sort()

  const canIList = async (user: string, namespace: string): Promise<ReadonlyArray<Permission>> => {
    const r = await kubectl(["auth", "can-i", "--list", "--no-headers", `--as=${user}`, "-n", namespace])
    expect(r.code, r.stderr).toBe(0)
    return permissionsOf(parseCanIList(r.stdout))
  }

  const keys = (permissions: ReadonlyArray<Permission>) => [...new Set(permissions.map(permissionKey))].sort()

  const measured = async () => {
    const everyone = keys(await canIList(`system:serviceaccount:${NAMESPACE}:bound-to-nothing`, NAMESPACE))
    const inOwn = (await canIList(USER, NAMESPACE)).filter((p) => !everyone.includes(permissionKey(p)))
    const inDefault = (await canIList(USER, "default")).filter((p) => !everyone.includes(permissionKey(p)))
    const defaultKeys = keys(inDefault)
    const ownKeys = keys(inOwn)
    return {
      everyone,
      // Granted in every namespace (the ClusterRole), or only in edge-ccm-system (its Roles).
      clusterWide: inDefault.filter((p) => ownKeys.includes(permissionKey(p))),
      onlyInOwn: inOwn.filter((p) => !defaultKeys.includes(permissionKey(p))),
      onlyInDefault: inDefault.filter((p) => !ownKeys.includes(permissionKey(p))),
      requests: auditedRequests(loadLab().auditLog, USER, auditFrom)
    }
  }

  const covers = (permission: Permission, request: AuditedRequest) =>
    permission.verb === request.verb && permission.resource === request.resource &&
    (permission.resourceNames.length === 0 || permission.resourceNames.includes(request.name))

  it("made no request that RBAC refused, and none outside what it is granted", async () => {
    const { everyone, clusterWide, onlyInOwn, onlyInDefault, requests } = await measured()
    console.log(`requests made by ${USER} (${requests.length} in all):\n  ${[...new Set(requests.map(requestKey))].sort().join("\n  ")}`)
    expect(everyone).toEqual(EVERYONE)
    expect(onlyInDefault).toEqual([])
    expect(requests.length).toBeGreaterThan(0)
    expect(requests.filter((r) => r.code === 403 || r.decision !== "allow").map(requestKey)).toEqual([])
    const outside = requests.filter((request) =>
      !clusterWide.some((p) => covers(p, request)) &&
      !(request.namespace === NAMESPACE && onlyInOwn.some((p) => covers(p, request)))
    )
    expect([...new Set(outside.map(requestKey))]).toEqual([])
  })

  it("in its own namespace, may touch only its own objects: every grant there names them, but create's", async () => {
    // RBAC cannot name an object for create (it does not exist yet when the request is allowed).
    const { onlyInOwn } = await measured()
    expect(onlyInOwn.filter((p) => p.verb !== "create" && p.resourceNames.length === 0).map(permissionKey)).toEqual([])
    expect(onlyInOwn.length).toBeGreaterThan(0)
  })

  it("was granted nothing it did not use", async () => {
    const { clusterWide, onlyInOwn, requests } = await measured()
    const unused = [
      ...clusterWide.filter((p) => !requests.some((r) => covers(p, r))),
      ...onlyInOwn.filter((p) => !requests.some((r) => r.namespace === NAMESPACE && covers(p, r)))
    ]
    console.log(`granted beyond what every ServiceAccount gets:\n  ${[...clusterWide, ...onlyInOwn].map(permissionKey).sort().join("\n  ")}`)
    expect(unused.map(permissionKey).sort()).toEqual([])
  })
})
