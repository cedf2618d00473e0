import { assert, describe, it } from "@effect/vitest"
import { classifyExternalIp, externalAddressOf } from "../../src/gateway/classifyExternalIp.ts"

describe("classifyExternalIp", () => {
  it.each([
    ["122.112.219.229", "public"],
    ["8.8.8.8", "public"],
    ["100.63.255.255", "public"],
    ["100.128.0.1", "public"],
    ["172.32.0.1", "public"],
    ["198.20.0.1", "public"],
    ["10.0.0.2", "private"],
    ["172.16.5.4", "private"],
    ["172.31.255.254", "private"],
    ["192.168.1.1", "private"],
    ["100.64.0.1", "private"],
    ["100.127.255.254", "private"],
    ["192.0.2.10", "private"],
    ["198.51.100.7", "private"],
    ["203.0.113.99", "private"],
    ["198.18.0.1", "private"],
    ["198.19.255.254", "private"],
    ["169.254.1.1", "private"],
    ["127.0.0.1", "private"],
    ["224.0.0.1", "private"],
    ["240.0.0.1", "private"],
    ["0.1.2.3", "private"],
    ["", "missing"],
    ["   ", "missing"],
    ["0.0.0.0", "missing"],
    ["(null)", "missing"]
  ] as const)("%s is %s", (ip, expected) => {
    assert.strictEqual(classifyExternalIp(ip), expected)
  })

  it("treats undefined as missing and reports an empty address as undefined", () => {
    assert.strictEqual(classifyExternalIp(undefined), "missing")
    assert.deepStrictEqual(externalAddressOf(""), { ip: undefined, class: "missing" })
    assert.deepStrictEqual(externalAddressOf(" 122.112.219.229 "), { ip: "122.112.219.229", class: "public" })
  })
})
