import { describe, expect, it } from "@effect/vitest"
import { Context, Effect, Fiber, Layer } from "effect"
import { TestClock } from "effect/testing"
import { RECORD_KEY_FIELD, RECORD_KEY_SECRET, RecordKey } from "../../src/controller/RecordKey.ts"
import { makeInMemoryKube } from "../support/InMemoryKube.ts"

const owner = { namespace: "shop", name: "web", uid: "u1" }
const load = (kube: ReturnType<typeof makeInMemoryKube>) =>
  Layer.build(RecordKey.layerSecret({ namespace: "edge-ccm-system" }).pipe(Layer.provide(kube.layer))).pipe(
    Effect.map((context) => Context.get(context, RecordKey))
  )

describe("RecordKey", () => {
  it.effect("creates the Secret with 32 random bytes when there is none, and reads the same key back", () =>
    Effect.gen(function*() {
      const kube = makeInMemoryKube()
      const first = yield* load(kube)
      const secret = kube.secrets.get(`edge-ccm-system/${RECORD_KEY_SECRET}`)!
      expect(Buffer.from(secret.data![RECORD_KEY_FIELD]!, "base64")).toHaveLength(32)
      const again = yield* load(kube)
      const signature = first.sign(owner, "[]")
      expect(again.verify(owner, "[]", signature)).toBe(true)
      expect(kube.calls.filter((call) => call.startsWith("create secret"))).toHaveLength(1)
    }).pipe(Effect.scoped))

  it.effect("binds a signature to the owner and the text", () =>
    Effect.gen(function*() {
      const key = RecordKey.makeStatic(new Uint8Array(32).fill(1))
      const signature = key.sign(owner, "[]")
      expect(key.verify(owner, "[]", signature)).toBe(true)
      expect(key.verify({ ...owner, uid: "u2" }, "[]", signature)).toBe(false)
      expect(key.verify({ ...owner, name: "web2" }, "[]", signature)).toBe(false)
      expect(key.verify(owner, "[ ]", signature)).toBe(false)
      expect(key.verify(owner, "[]", signature.slice(0, -2))).toBe(false)
      expect(key.verify(owner, "[]", "")).toBe(false)
      // The separator keeps namespace/name pairs apart: ("a", "b/c") is not ("a/b", "c").
      expect(key.sign({ namespace: "a", name: "bc", uid: "" }, "")).not.toBe(key.sign({ namespace: "ab", name: "c", uid: "" }, ""))
    }))

  it.effect("waits, retrying, while the Secret holds no usable key, and starts once it does", () =>
    Effect.gen(function*() {
      const kube = makeInMemoryKube()
      const name = `edge-ccm-system/${RECORD_KEY_SECRET}`
      kube.secrets.set(name, {
        metadata: { namespace: "edge-ccm-system", name: RECORD_KEY_SECRET },
        data: { [RECORD_KEY_FIELD]: Buffer.from("short").toString("base64") }
      })
      const loading = yield* Effect.forkChild(load(kube))
      yield* TestClock.adjust("10 seconds")
      expect(loading.pollUnsafe()).toBeUndefined()
      kube.secrets.set(name, {
        metadata: { namespace: "edge-ccm-system", name: RECORD_KEY_SECRET },
        data: { [RECORD_KEY_FIELD]: Buffer.alloc(32, 3).toString("base64") }
      })
      yield* TestClock.adjust("30 seconds")
      const key = yield* Fiber.join(loading)
      expect(key.verify(owner, "x", RecordKey.makeStatic(Buffer.alloc(32, 3)).sign(owner, "x"))).toBe(true)
    }).pipe(Effect.scoped))
})
