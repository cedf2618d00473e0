import { assert, describe, it } from "@effect/vitest"
import type { Service } from "../../src/kube/objects.ts"
import { perServiceObject } from "../../src/controller/perServiceObject.ts"

describe("perServiceObject", () => {
  it("computes once per Service object and arguments", () => {
    let computed = 0
    const nameOf = perServiceObject((service: Service, suffix: string) => {
      computed++
      return `${service.metadata?.name}${suffix}`
    })
    const web: Service = { metadata: { name: "web" } }
    assert.strictEqual(nameOf(web, "!"), "web!")
    assert.strictEqual(nameOf(web, "!"), "web!")
    assert.strictEqual(computed, 1)
    // Other arguments, or a new version of the Service (a new object), compute again.
    assert.strictEqual(nameOf(web, "?"), "web?")
    assert.strictEqual(nameOf({ metadata: { name: "web2" } }, "?"), "web2?")
    assert.strictEqual(computed, 3)
  })
})
