/**
 * Two namespaces' Services for the tenancy scenarios: prod/web, and tenant/x, whose user edits
 * their own Service as an attacker would.
 */
import type { Service } from "../../src/kube/objects.ts"
import { seedService } from "./controllerHarness.ts"

/** The key of the Service whose mapping a tenant must not reach. */
export const PROD_KEY = "prod/web"
/** The key of the tenant's own Service. */
export const TENANT_KEY = "tenant/x"

/** prod/web: TCP 443 → nodePort 30443, created first. */
export const prodWeb = (backend: "upnp-igd" | "nat-pmp" = "upnp-igd"): Service =>
  seedService(
    { name: "web", namespace: "prod", uid: "uid-prod-web", annotations: { "midokura.com/load-balancer-type": backend } },
    { ports: [{ name: "p", port: 443, nodePort: 30443, protocol: "TCP" }] }
  )

/** tenant/x: TCP 8080 → nodePort 31080, created a day later. */
export const tenantX = (backend: "upnp-igd" | "nat-pmp" = "upnp-igd"): Service =>
  seedService(
    {
      name: "x",
      namespace: "tenant",
      uid: "uid-tenant-x",
      annotations: { "midokura.com/load-balancer-type": backend },
      creationTimestamp: new Date("2026-01-02T00:00:00Z")
    },
    { ports: [{ name: "http", port: 8080, nodePort: 31080, protocol: "TCP" }] }
  )

/** The tenant's edit: its own annotations replaced by these (everything else kept). */
export const withAnnotations = (annotations: Record<string, string>) => (service: Service): Service => ({
  ...service,
  metadata: { ...service.metadata, annotations: { ...service.metadata?.annotations, ...annotations } }
})
