import { assert, describe, it } from "@effect/vitest"
import { readFileSync } from "node:fs"
import { Effect, Result } from "effect"
import {
  clampMx,
  decodeMessage,
  encodeMSearch,
  GATEWAY_SEARCH_TARGETS,
  isGatewaySearchTarget,
  searchTargetRank,
  type SsdpDecodeError,
  type SsdpMessage
} from "../../../src/gateway/upnp/Ssdp.ts"
import { notify, searchReply } from "../../support/FakeSsdp.ts"

/** A datagram captured from a real router, byte for byte (CRLF line ends). */
const fixture = (name: string): Uint8Array => readFileSync(new URL(`../../fixtures/ssdp/${name}`, import.meta.url))

const bytes = (text: string) => new TextEncoder().encode(text)
const ROUTER = "192.168.1.1"

const decodeOk = (text: string | Uint8Array): SsdpMessage => {
  const result = decodeMessage(typeof text === "string" ? bytes(text) : text, ROUTER)
  if (Result.isFailure(result)) throw new Error(`expected a message, got ${result.failure.message}`)
  return result.success
}
const decodeErr = (text: string | Uint8Array): SsdpDecodeError => {
  const result = decodeMessage(typeof text === "string" ? bytes(text) : text, ROUTER)
  if (Result.isSuccess(result)) throw new Error(`expected an error, got ${JSON.stringify(result.success)}`)
  return result.failure
}

describe("M-SEARCH", () => {
  it.effect("is byte for byte the field guide's request", () =>
    Effect.sync(() => {
      const request = encodeMSearch({
        host: "239.255.255.250",
        port: 1900,
        searchTarget: "urn:schemas-upnp-org:device:InternetGatewayDevice:1",
        mx: 2
      })
      assert.deepStrictEqual(
        bytes(request),
        bytes(
          "M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n" +
            "ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n" +
            "MAN: \"ssdp:discover\"\r\nMX: 2\r\n\r\n"
        )
      )
    }))

  it.effect("never sends an MX below 1 or above 5", () =>
    Effect.sync(() => {
      assert.deepStrictEqual([0, 0.3, 1, 2.9, 5, 9, Number.NaN].map(clampMx), [1, 1, 1, 2, 5, 5, 1])
      assert.include(encodeMSearch({ host: "127.0.0.1", port: 1900, searchTarget: "ssdp:all", mx: 0 }), "\r\nMX: 1\r\n")
    }))

  it.effect("searches the field guide's targets in its order", () =>
    Effect.sync(() => {
      assert.deepStrictEqual(GATEWAY_SEARCH_TARGETS, [
        "urn:schemas-upnp-org:device:InternetGatewayDevice:1",
        "urn:schemas-upnp-org:device:InternetGatewayDevice:2",
        "urn:schemas-upnp-org:service:WANIPConnection:1",
        "urn:schemas-upnp-org:service:WANIPConnection:2",
        "urn:schemas-upnp-org:service:WANPPPConnection:1",
        "ssdp:all"
      ])
    }))

  it.effect("is itself decoded as a search request, never as an answer", () =>
    Effect.sync(() => {
      const message = decodeOk(encodeMSearch({ host: "239.255.255.250", port: 1900, searchTarget: "ssdp:all", mx: 2 }))
      assert.deepStrictEqual(message, { _tag: "SearchRequest", searchTarget: "ssdp:all" })
    }))
})

describe("search replies", () => {
  it.effect("miniupnpd: every field, with BOOTID and CONFIGID", () =>
    Effect.sync(() => {
      assert.deepStrictEqual(decodeOk(fixture("miniupnpd-igd2.txt")), {
        _tag: "SearchReply",
        location: "http://192.168.77.1:35463/rootDesc.xml",
        searchTarget: "urn:schemas-upnp-org:device:InternetGatewayDevice:2",
        usn: "uuid:3d6a2c5e-2f5d-4c7e-9f0b-0c2a3f4b5e6f::urn:schemas-upnp-org:device:InternetGatewayDevice:2",
        server: "Debian/12 UPnP/1.1 MiniUPnPd/2.3.1",
        bootId: 1714000001,
        configId: 1337
      })
    }))

  it.effect("Linksys: `Location:http://…` with no space after the colon", () =>
    Effect.sync(() => {
      const message = decodeOk(fixture("linksys-nospace.txt"))
      assert.strictEqual(message._tag, "SearchReply")
      if (message._tag !== "SearchReply") return
      assert.strictEqual(message.location, "http://192.168.1.1:49152/IGDdevicedesc_brlan0.xml")
      assert.strictEqual(message.searchTarget, "urn:schemas-upnp-org:device:InternetGatewayDevice:1")
      assert.strictEqual(message.server, "Linux/3.14.77, UPnP/1.0, Portable SDK for UPnP devices/1.6.19")
    }))

  it.effect("lower-case header names and LF-only line ends", () =>
    Effect.sync(() => {
      const message = decodeOk(
        searchReply({
          location: "http://192.168.1.1:5000/rootDesc.xml",
          st: "urn:schemas-upnp-org:service:WANIPConnection:1",
          bootId: 7,
          configId: 8,
          style: "lowercase"
        })
      )
      assert.deepStrictEqual(
        message._tag === "SearchReply" ? [message.location, message.searchTarget, message.bootId, message.configId] : [],
        ["http://192.168.1.1:5000/rootDesc.xml", "urn:schemas-upnp-org:service:WANIPConnection:1", 7, 8]
      )
    }))

  it.effect("TP-Link ER605: the [::1] LOCATION is decoded as sent (LanGuard repairs it)", () =>
    Effect.sync(() => {
      const message = decodeOk(fixture("tplink-er605.txt"))
      assert.strictEqual(message._tag === "SearchReply" ? message.location : undefined, "http://[::1]:1900/igd.xml")
    }))

  it.effect("the first of duplicated headers wins", () =>
    Effect.sync(() => {
      const message = decodeOk(
        "HTTP/1.1 200 OK\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n" +
          "LOCATION: http://192.168.1.1/a.xml\r\nlocation: http://192.168.1.1/b.xml\r\n\r\n"
      )
      assert.strictEqual(message._tag === "SearchReply" ? message.location : undefined, "http://192.168.1.1/a.xml")
    }))

  it.effect("a malformed BOOTID costs reboot detection, not the reply", () =>
    Effect.sync(() => {
      for (const bootId of ["-1", "12abc", "99999999999", "0x10", "1e3", ""]) {
        const message = decodeOk(searchReply({ location: "http://192.168.1.1/d.xml", st: "ssdp:all", bootId }))
        assert.strictEqual(message._tag === "SearchReply" ? message.bootId : "not a reply", undefined, bootId)
      }
    }))

  it.effect("a reply without LOCATION is a typed error naming LOCATION", () =>
    Effect.sync(() => {
      const error = decodeErr("HTTP/1.1 200 OK\r\nST: upnp:rootdevice\r\nUSN: uuid:x\r\n\r\n")
      assert.strictEqual(error._tag, "SsdpDecodeError")
      assert.strictEqual(error.field, "LOCATION")
      assert.strictEqual(error.responder, ROUTER)
      assert.include(error.message, "LOCATION")
    }))

  it.effect("an empty LOCATION or ST is a typed error naming it", () =>
    Effect.sync(() => {
      assert.strictEqual(decodeErr("HTTP/1.1 200 OK\r\nST: ssdp:all\r\nLOCATION:   \r\n\r\n").field, "LOCATION")
      assert.strictEqual(decodeErr("HTTP/1.1 200 OK\r\nST:\r\nLOCATION: http://192.168.1.1/\r\n\r\n").field, "ST")
    }))

  it.effect("a non-200 status is refused", () =>
    Effect.sync(() => {
      const error = decodeErr("HTTP/1.1 404 Not Found\r\nLOCATION: http://192.168.1.1/\r\nST: ssdp:all\r\n\r\n")
      assert.include(error.reason, "404")
    }))

  it.effect("garbage and empty datagrams are typed errors", () =>
    Effect.sync(() => {
      for (const garbage of [new Uint8Array(0), bytes("hello"), new Uint8Array([0xff, 0xfe, 0, 13, 10]), new Uint8Array(9000)]) {
        const error = decodeErr(garbage)
        assert.strictEqual(error._tag, "SsdpDecodeError")
        assert.strictEqual(error.field, undefined)
      }
    }))
})

describe("NOTIFY", () => {
  const usn = "uuid:igd::urn:schemas-upnp-org:device:InternetGatewayDevice:1"
  const nt = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"

  it.effect("ssdp:alive carries LOCATION, BOOTID and CONFIGID", () =>
    Effect.sync(() => {
      assert.deepStrictEqual(
        decodeOk(notify({ nts: "ssdp:alive", nt, usn, location: "http://192.168.1.1:5000/r.xml", bootId: 3, configId: 9 })),
        {
          _tag: "Notify",
          kind: "alive",
          notificationType: nt,
          location: "http://192.168.1.1:5000/r.xml",
          usn,
          server: "Linux/5.10 UPnP/1.1 MiniUPnPd/2.3.1",
          bootId: 3,
          configId: 9,
          nextBootId: undefined
        }
      )
    }))

  it.effect("ssdp:byebye has no LOCATION; ssdp:update has NEXTBOOTID", () =>
    Effect.sync(() => {
      const bye = decodeOk(notify({ nts: "ssdp:byebye", nt, usn, bootId: 3 }))
      assert.deepStrictEqual(bye._tag === "Notify" ? [bye.kind, bye.location, bye.bootId] : [], ["byebye", undefined, 3])
      const update = decodeOk(notify({ nts: "ssdp:update", nt, usn, location: "http://192.168.1.1/r.xml", bootId: 3, nextBootId: 4 }))
      assert.deepStrictEqual(update._tag === "Notify" ? [update.kind, update.nextBootId] : [], ["update", 4])
    }))

  it.effect("NTS is matched case-insensitively, and anything else is refused naming NTS", () =>
    Effect.sync(() => {
      const upper = decodeOk(`NOTIFY * HTTP/1.1\r\nNT: ${nt}\r\nNTS: SSDP:ALIVE\r\nUSN: ${usn}\r\n\r\n`)
      assert.strictEqual(upper._tag === "Notify" ? upper.kind : undefined, "alive")
      const error = decodeErr(`NOTIFY * HTTP/1.1\r\nNT: ${nt}\r\nNTS: ssdp:propchange\r\n\r\n`)
      assert.strictEqual(error.field, "NTS")
      assert.strictEqual(decodeErr(`NOTIFY * HTTP/1.1\r\nNTS: ssdp:alive\r\n\r\n`).field, "NT")
    }))
})

describe("search targets", () => {
  it.effect("every version of the gateway types counts, legacy dslforum too; other devices do not", () =>
    Effect.sync(() => {
      for (
        const st of [
          "urn:schemas-upnp-org:device:InternetGatewayDevice:1",
          "urn:schemas-upnp-org:device:InternetGatewayDevice:2",
          "urn:schemas-upnp-org:service:WANIPConnection:2",
          "urn:schemas-upnp-org:service:WANPPPConnection:1",
          "urn:schemas-upnp-org:service:WANPPPConnection:2",
          "urn:schemas-upnp-org:device:WANDevice:1",
          "urn:dslforum-org:service:WANIPConnection:1"
        ]
      ) assert.isTrue(isGatewaySearchTarget(st), st)
      for (
        const st of [
          "ssdp:all",
          "upnp:rootdevice",
          "uuid:3d6a2c5e",
          "urn:schemas-upnp-org:device:MediaRenderer:1",
          "urn:schemas-upnp-org:device:InternetGatewayDevice:x"
        ]
      ) assert.isFalse(isGatewaySearchTarget(st), st)
    }))

  it.effect("rank: IGD over its services, IP over PPP, standard over legacy, higher version first", () =>
    Effect.sync(() => {
      const ordered = [
        "urn:schemas-upnp-org:device:InternetGatewayDevice:2",
        "urn:schemas-upnp-org:device:InternetGatewayDevice:1",
        "urn:schemas-upnp-org:service:WANIPConnection:2",
        "urn:schemas-upnp-org:service:WANIPConnection:1",
        "urn:dslforum-org:service:WANIPConnection:1",
        "urn:schemas-upnp-org:service:WANPPPConnection:1",
        "urn:schemas-upnp-org:device:WANConnectionDevice:1",
        "urn:schemas-upnp-org:device:WANDevice:1",
        "urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1",
        "upnp:rootdevice"
      ]
      const ranks = ordered.map(searchTargetRank)
      assert.deepStrictEqual([...ranks].sort((a, b) => b - a), ranks)
      assert.strictEqual(new Set(ranks).size, ranks.length)
    }))
})
