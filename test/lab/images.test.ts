import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { baseRecipe, nodeMajorOf, normalizeReference, planDockerfile, withoutDigest } from "../../scripts/lab/images.ts"

const root = path.resolve(import.meta.dirname, "../..")

describe("normalizeReference", () => {
  it("resolves names as container runtimes do", () => {
    expect(normalizeReference("nginx")).toBe("docker.io/library/nginx:latest")
    expect(normalizeReference("edge-cloud-controller-manager:0.1.0")).toBe("docker.io/library/edge-cloud-controller-manager:0.1.0")
    expect(normalizeReference("bitnami/nginx")).toBe("docker.io/bitnami/nginx:latest")
    expect(normalizeReference("gcr.io/distroless/nodejs24-debian12:nonroot")).toBe("gcr.io/distroless/nodejs24-debian12:nonroot")
    expect(normalizeReference("localhost/x")).toBe("localhost/x:latest")
    expect(normalizeReference("registry.local:5000/x")).toBe("registry.local:5000/x:latest")
    expect(normalizeReference("node@sha256:ab")).toBe("docker.io/library/node@sha256:ab")
  })

  it("drops a digest for the local stand-in's name", () => {
    expect(withoutDigest("node:24-bookworm-slim@sha256:a9f5")).toBe("node:24-bookworm-slim")
    expect(withoutDigest("node:24")).toBe("node:24")
  })
})

describe("planDockerfile", () => {
  it("finds the project Dockerfile's base through its build argument, and what it copies", () => {
    const plan = planDockerfile(fs.readFileSync(path.join(root, "Dockerfile"), "utf8"))
    // Only the build stages have a base: the runtime stage starts from scratch.
    expect(plan.bases.map((base) => base.arg)).toEqual(["NODE_IMAGE"])
    for (const base of plan.bases) {
      expect(base.pinned).toMatch(/@sha256:[0-9a-f]{64}$/)
      expect(baseRecipe(base.local), base.local).toBeDefined()
    }
    // Every file the image is made of is in the controller's cache key.
    expect(plan.copySources).toEqual(expect.arrayContaining(["package.json", "package-lock.json", "scripts/bundle.ts", "src"]))
  })

  it("reads ARG defaults, skips stage names and scratch, and takes COPY sources without --from", () => {
    const plan = planDockerfile([
      "# syntax=docker/dockerfile:1",
      "ARG BUILD=node:24-bookworm-slim@sha256:aaaa \\",
      "    OTHER=x",
      "ARG RUNTIME=\"gcr.io/distroless/nodejs24-debian12:nonroot@sha256:bbbb\"",
      "FROM ${BUILD} AS build",
      "COPY --chown=1:1 package.json package-lock.json ./",
      "COPY [\"src\", \"scripts/bundle.mjs\", \"/src/\"]",
      "RUN npm ci",
      "FROM build AS test",
      "FROM scratch AS empty",
      "FROM $RUNTIME",
      "COPY --from=build /src/dist/edge-ccm.js /app/",
      "ADD LICENSE /app/"
    ].join("\n"))
    expect(plan.bases).toEqual([
      { arg: "BUILD", pinned: "node:24-bookworm-slim@sha256:aaaa", local: "docker.io/library/node:24-bookworm-slim" },
      { arg: "RUNTIME", pinned: "gcr.io/distroless/nodejs24-debian12:nonroot@sha256:bbbb", local: "gcr.io/distroless/nodejs24-debian12:nonroot" }
    ])
    expect(plan.copySources).toEqual(["package.json", "package-lock.json", "src", "scripts/bundle.mjs", "LICENSE"])
  })

  it("names a literal base as it is, and refuses a FROM whose argument has no default", () => {
    expect(planDockerfile("FROM gcr.io/distroless/nodejs24-debian12:nonroot\n").bases).toEqual([
      { arg: null, pinned: "gcr.io/distroless/nodejs24-debian12:nonroot", local: "gcr.io/distroless/nodejs24-debian12:nonroot" }
    ])
    expect(() => planDockerfile("ARG BASE\nFROM ${BASE}\n")).toThrow(/without a default/)
  })
})

describe("baseRecipe", () => {
  it("knows Node's bookworm-slim, and nothing else", () => {
    expect(baseRecipe("docker.io/library/node:24-bookworm-slim")?.recipe).toBe("node-slim")
    expect(baseRecipe("docker.io/library/node:24.21.0-bookworm-slim")?.recipe).toBe("node-slim")
    expect(baseRecipe("docker.io/library/node:24-alpine")).toBeUndefined()
    expect(baseRecipe("gcr.io/distroless/nodejs24-debian12:nonroot")).toBeUndefined()
  })

  it("reads the Node major version a base asks for", () => {
    expect(nodeMajorOf("docker.io/library/node:24-bookworm-slim")).toBe(24)
    expect(nodeMajorOf("docker.io/library/node:22-bookworm-slim")).toBe(22)
    expect(nodeMajorOf("gcr.io/distroless/nodejs24-debian12:nonroot")).toBeUndefined()
    expect(nodeMajorOf("docker.io/library/debian:12")).toBeUndefined()
  })
})
