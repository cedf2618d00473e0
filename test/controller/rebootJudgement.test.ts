import { describe, expect, it } from "@effect/vitest"
import { reassertedSinceBoot } from "../../src/controller/rebootJudgement.ts"

const at = (seconds: number) => seconds * 1000

describe("reassertedSinceBoot", () => {
  it("does not count a listing asked within the second the uptime cannot tell from the boot", () => {
    // Seen in the lab: uptime "1 s" at 04.946; a resync listed at 04.0, and nothing was repaired by it.
    expect(reassertedSinceBoot({ now: at(4.946), uptimeSeconds: 1, listedAt: at(4.0), announcedAt: undefined, probedAt: at(2.9) }))
      .toBe(false)
  })

  it("counts a listing asked more than a second after the boot the uptime gives", () => {
    expect(reassertedSinceBoot({ now: at(8), uptimeSeconds: 5, listedAt: at(4.1), announcedAt: undefined, probedAt: at(6) }))
      .toBe(true)
  })

  it("counts the listing that followed an announcement heard since the previous probe", () => {
    expect(reassertedSinceBoot({ now: at(6), uptimeSeconds: 1, listedAt: at(4.02), announcedAt: at(4.01), probedAt: at(4) }))
      .toBe(true)
    // An announcement before the previous probe dates nothing new.
    expect(reassertedSinceBoot({ now: at(6), uptimeSeconds: 1, listedAt: at(4.02), announcedAt: at(3.9), probedAt: at(4) }))
      .toBe(false)
  })
})
