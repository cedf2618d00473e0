/**
 * The seed's walkthrough as users deploy it (`npm run demo`, run by scripts/demo.sh inside the
 * node namespace of a lab with a real node): `kubectl apply -k manifests`, the controller pod,
 * the example with real nginx pods, the EXTERNAL-IP, `upnpc -l`, curl from the Internet, the
 * controller's log, and the mapping gone with the Service.
 */
import * as path from "node:path"
import { kubectl, loadLab, upnpc, waitFor } from "../test/e2e/support/lab.ts"
import {
  CONTROLLER,
  deleteExample,
  exampleExternalIp,
  MANIFESTS,
  NAMESPACE,
  nginxAnswer,
  realNode,
  rollout
} from "../test/e2e/support/real-node.ts"

const root = path.resolve(import.meta.dirname, "..")
const example = path.relative(root, path.join(root, "examples/loadbalancers/upnp-igd-http-nginx.yaml"))
const show = (command: string, output: string) => console.log(`\n$ ${command}\n${output.trimEnd()}`)
const seconds = (since: number) => `${((performance.now() - since) / 1000).toFixed(1)} s`

async function step(command: string, args: ReadonlyArray<string>): Promise<string> {
  const r = await kubectl(args, { timeoutMs: 200_000 })
  show(command, r.stdout + r.stderr)
  if (r.code !== 0) throw new Error(`${command} failed`)
  return r.stdout
}

const lab = loadLab()
const node = realNode()
const versions = await kubectl(["get", "nodes", "-o", "jsonpath={range .items[*]}{.metadata.name} {.status.nodeInfo.kubeletVersion} {.status.nodeInfo.containerRuntimeVersion}{\"\\n\"}{end}"])
console.log(`Router: miniupnpd at ${lab.gatewayLanIp} (WAN ${lab.gatewayWanIp})`)
for (const line of versions.stdout.trim().split("\n")) {
  const [name, kubelet, runtime] = line.split(" ")
  console.log(`Node ${name} at ${lab.nodes.find((n) => n.name === name)?.ip}: kubelet ${kubelet}, ${runtime}, kube-proxy (nftables)`)
}
console.log(`Images built here and imported into the node: ${node.images.map((i) => i.reference).join(", ")}`)

const applied = performance.now()
await step("kubectl apply -k manifests", ["apply", "-k", MANIFESTS])
await rollout(`daemonset/${CONTROLLER}`, NAMESPACE)
await step(`kubectl -n ${NAMESPACE} get pods -o wide`, ["-n", NAMESPACE, "get", "pods", "-o", "wide"])
console.log(`(the controller pod Ready ${seconds(applied)} after kubectl apply)`)

await step(`kubectl create -f ${example}`, ["create", "-f", path.join(root, example)])
const created = performance.now()
await exampleExternalIp()
const published = seconds(created)
await step("kubectl get service http-nginx-service", ["get", "service", "http-nginx-service"])
console.log(`(EXTERNAL-IP appeared ${published} after kubectl create)`)
await rollout("deployment/http-nginx-deployment")
await step("kubectl get pods -o wide", ["get", "pods", "-o", "wide"])

show("upnpc -l", (await upnpc(["-l"])).stdout)

const answers: Array<string> = []
for (let i = 0; i < 3; i++) {
  const answer = await waitFor(() => nginxAnswer(), { description: "an nginx pod to answer from the WAN", timeoutMs: 30_000 })
  answers.push(answer.body)
}
show(`curl http://${lab.gatewayWanIp}:8080    # from the Internet side (${lab.wanClientIp}), three times`, answers.join("\n"))

const logs = await kubectl(["-n", NAMESPACE, "logs", `daemonset/${CONTROLLER}`])
const interesting = logs.stdout.split("\n").filter((l) => /"message":"(ready|edge-ccm started|UPnP gateway)/.test(l) || l.includes("http-nginx-service"))
show(`kubectl -n ${NAMESPACE} logs daemonset/${CONTROLLER}    # a few of its JSON lines`, interesting.slice(0, 5).join("\n"))

await deleteExample()
show(`kubectl delete -f ${example}; upnpc -l`, (await upnpc(["-l"])).stdout)
