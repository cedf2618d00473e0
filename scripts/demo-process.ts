/**
 * The seed's walkthrough in process mode (`npm run demo -- --process`, run by scripts/demo.sh
 * inside the node namespace): the controller as a process on the node, a stand-in on the
 * nodePort; kubectl create -f the example, the EXTERNAL-IP, upnpc -l, curl from the Internet.
 */
import * as path from "node:path"
import { getService, ingressIp, startController } from "../test/e2e/support/controller.ts"
import { curlFromWan, kubectl, loadLab, serveNodePort, upnpc, waitFor } from "../test/e2e/support/lab.ts"

const example = path.resolve(import.meta.dirname, "../examples/loadbalancers/upnp-igd-http-nginx.yaml")
const show = (command: string, output: string) => console.log(`\n$ ${command}\n${output.trimEnd()}`)

const lab = loadLab()
console.log(`Router: miniupnpd at ${lab.gatewayLanIp} (WAN ${lab.gatewayWanIp}); node ${lab.nodes[0]!.name} at ${lab.nodeIp}`)
const controller = await startController()
console.log("Controller: edge-ccm run (ready)")
try {
  const created = await kubectl(["create", "-f", example])
  show("kubectl create -f examples/loadbalancers/upnp-igd-http-nginx.yaml", created.stdout + created.stderr)
  const start = Date.now()
  const service = await waitFor(async () => {
    const s = await getService("http-nginx-service")
    return ingressIp(s) !== undefined ? s : undefined
  }, { description: "an EXTERNAL-IP for http-nginx-service", timeoutMs: 10_000, intervalMs: 50 })
  const elapsed = Date.now() - start
  show("kubectl get service http-nginx-service", (await kubectl(["get", "service", "http-nginx-service"])).stdout)
  console.log(`(EXTERNAL-IP appeared ${elapsed} ms after kubectl create)`)

  show("upnpc -l", (await upnpc(["-l"])).stdout)

  // No kubelet or kube-proxy runs in the lab: a small server on the node's nodePort stands in for nginx.
  const nodePort = service.spec.ports[0]!.nodePort!
  const server = await serveNodePort(nodePort, { body: "Welcome to nginx! (served on the node's nodePort)\n" })
  try {
    const ip = ingressIp(service)!
    const answer = await curlFromWan(`http://${ip}:8080`)
    show(`curl http://${ip}:8080    # from the Internet side (${lab.wanClientIp})`, answer.ok ? answer.body : answer.error)
    if (!answer.ok) process.exitCode = 1
  } finally {
    await server.close()
  }

  await kubectl(["delete", "-f", example, "--wait=false"])
  await waitFor(async () => (await getService("http-nginx-service")) === undefined, {
    description: "the Service to be deleted",
    timeoutMs: 10_000
  })
  show("kubectl delete -f examples/loadbalancers/upnp-igd-http-nginx.yaml; upnpc -l", (await upnpc(["-l"])).stdout)
} finally {
  await controller.stop()
}
