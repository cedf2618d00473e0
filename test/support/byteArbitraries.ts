/** Arbitrary bytes for the decoder property tests: fields, random payloads, and captured ones mutated. */
import { Arbitrary, Schema } from "effect"

export const Byte = Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 255 }))
export const U16 = Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 0xffff }))
export const U32 = Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: 0xffff_ffff }))

/** Up to `maxLength` random bytes. */
export const randomBytes = (maxLength: number) =>
  Arbitrary.array(Arbitrary.schema(Byte), { maxLength }).pipe(Arbitrary.map((values) => new Uint8Array(values)))

/**
 * One of `samples` with a few bytes changed, inserted, removed, or the rest cut off, at positions
 * up to `maxPosition` (wrapped to the sample's length).
 */
export const mutatedFrom = (
  samples: ReadonlyArray<Uint8Array>,
  options: { readonly maxPosition: number; readonly maxEdits: number }
) => {
  const Edit = Schema.Struct({
    op: Schema.Literals(["set", "insert", "delete", "truncate"]),
    position: Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: options.maxPosition })),
    byte: Byte
  })
  return Arbitrary.all({
    sample: Arbitrary.schema(Schema.Int.check(Schema.isBetween({ minimum: 0, maximum: samples.length - 1 }))),
    edits: Arbitrary.array(Arbitrary.schema(Edit), { minLength: 1, maxLength: options.maxEdits })
  }).pipe(Arbitrary.map(({ edits, sample }) => {
    const bytes = Array.from(samples[sample]!)
    for (const edit of edits) {
      const at = edit.position % (bytes.length + 1)
      if (edit.op === "set" && at < bytes.length) bytes[at] = edit.byte
      else if (edit.op === "insert") bytes.splice(at, 0, edit.byte)
      else if (edit.op === "delete") bytes.splice(at, 1)
      else if (edit.op === "truncate") bytes.length = at
    }
    return new Uint8Array(bytes)
  }))
}

/** An integer from 0 to `max`. */
export const inRange = (value: number, max: number) => Number.isInteger(value) && value >= 0 && value <= max
