import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { BoundedMap } from "../../src/gateway/BoundedMap.ts"

describe("BoundedMap", () => {
  it.effect("holds at most its capacity, forgetting the least recently used", () =>
    Effect.sync(() => {
      const map = new BoundedMap<string, number>(3)
      for (const [key, value] of [["a", 1], ["b", 2], ["c", 3]] as const) map.set(key, value)
      assert.strictEqual(map.get("a"), 1) // a is now the most recently used
      map.set("d", 4)
      assert.isUndefined(map.get("b"))
      assert.deepStrictEqual([map.get("a"), map.get("c"), map.get("d")], [1, 3, 4])
      assert.strictEqual(map.size, 3)
      for (let i = 0; i < 10_000; i++) map.set(`flood-${i}`, i)
      assert.strictEqual(map.size, 3)
      assert.strictEqual(map.get("flood-9999"), 9999)
      assert.isTrue(map.delete("flood-9999"))
      assert.strictEqual(map.size, 2)
    }))

  it.effect("refuses a capacity below 1", () =>
    Effect.sync(() => {
      assert.throws(() => new BoundedMap(0), RangeError)
    }))
})
