/**
 * The e2e tests and the benchmarks run the controller as the image does: their command line is
 * the Dockerfile's ENTRYPOINT, Node's flags included, with this process's Node and the snapshot's
 * folder in place of the image's.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { describe, expect, it } from "vitest"
import { imageEntry } from "../e2e/support/controller.ts"

const root = path.resolve(import.meta.dirname, "../..")

describe("imageEntry", () => {
  it("is the Dockerfile's ENTRYPOINT, flags given to it after the image's own", () => {
    const line = fs.readFileSync(path.join(root, "Dockerfile"), "utf8").split("\n").find((candidate) => candidate.startsWith("ENTRYPOINT "))
    const entry = JSON.parse(line!.slice("ENTRYPOINT ".length)) as Array<string>
    const asImage = entry.map((part, i) => i === 0 ? process.execPath : part.replace("/app/snapshot/", "/x/"))
    expect(imageEntry("/x")).toEqual(asImage)
    expect(imageEntry("/x", ["--max-old-space-size=160"])).toEqual([
      ...asImage.slice(0, asImage.indexOf("--snapshot-blob")),
      "--max-old-space-size=160",
      ...asImage.slice(asImage.indexOf("--snapshot-blob"))
    ])
  })
})
