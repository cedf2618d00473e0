/**
 * The Helm chart's defaults for what the benchmarks size (memory request and limit, NODE_OPTIONS,
 * MALLOC_ARENA_MAX) are manifests/daemonset.yaml's: a re-sizing of the manifests that forgets the chart fails here,
 * without the lab (test/e2e/real-node/helm.test.ts compares every rendered object on the lab).
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { load } from "js-yaml"
import { describe, expect, it } from "vitest"

const root = path.resolve(import.meta.dirname, "../..")

interface Container {
  readonly name: string
  readonly env?: ReadonlyArray<{ readonly name: string; readonly value?: string }>
  readonly resources?: unknown
}

const yaml = (file: string) => load(fs.readFileSync(path.join(root, file), "utf8")) as Record<string, unknown>

function manifestsController(): Container {
  const daemonSet = yaml("manifests/daemonset.yaml") as { spec: { template: { spec: { containers: ReadonlyArray<Container> } } } }
  const container = daemonSet.spec.template.spec.containers.find((c) => c.name === "controller")
  if (container === undefined) throw new Error("manifests/daemonset.yaml has no container named controller")
  return container
}

describe("the chart's defaults", () => {
  it("request, limit, NODE_OPTIONS and MALLOC_ARENA_MAX as manifests/daemonset.yaml sets them", () => {
    const values = yaml("charts/edge-cloud-controller-manager/values.yaml")
    const controller = manifestsController()
    const env = (name: string) => controller.env?.find((e) => e.name === name)?.value
    expect(controller.resources).toBeDefined()
    expect(values["resources"]).toEqual(controller.resources)
    expect(env("NODE_OPTIONS")).toMatch(/--max-old-space-size=\d+/)
    expect(values["nodeOptions"]).toBe(env("NODE_OPTIONS"))
    // The chart renders it quoted, as the manifests write it; empty in both means glibc's default.
    expect(String(values["mallocArenaMax"] ?? "")).toBe(env("MALLOC_ARENA_MAX") ?? "")
  })
})
