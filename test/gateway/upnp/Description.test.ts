import { assert, describe, it } from "@effect/vitest"
import { Effect } from "effect"
import { parseDescription, resolveControlUrl } from "../../../src/gateway/upnp/Description.ts"
import { fixtureBytes } from "./fixtures.ts"

const parse = (fixture: string, location: string) =>
  parseDescription(fixtureBytes(`descriptions/${fixture}`), location)

describe("parseDescription", () => {
  it.effect("miniupnpd 2.3.1 (IGDv2, as served in the lab): one WANIPConnection:2 with a relative controlURL", () =>
    Effect.gen(function*() {
      const root = yield* parse("miniupnpd-2.3.1-igd2.xml", "http://192.168.77.1:49536/rootDesc.xml")
      assert.strictEqual(root.deviceType, "urn:schemas-upnp-org:device:InternetGatewayDevice:2")
      assert.strictEqual(root.friendlyName, "Debian router")
      assert.deepStrictEqual(root.wanServices.map((service) => [service.kind, service.controlUrl, service.igdV2]), [
        ["WANIPConnection:2", "http://192.168.77.1:49536/ctl/IPConn", true]
      ])
      assert.strictEqual(root.wanServices[0]?.eventSubUrl, "http://192.168.77.1:49536/evt/IPConn")
      assert.include(root.serviceTypes, "urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1")
      assert.include(root.serviceTypes, "urn:schemas-upnp-org:service:WANIPv6FirewallControl:1")
    }))

  it.effect("miniupnpd 2.3.1 forced to IGDv1: WANIPConnection:1, no IGDv2 actions", () =>
    Effect.gen(function*() {
      const root = yield* parse("miniupnpd-2.3.1-igd1.xml", "http://192.168.77.1:49536/rootDesc.xml")
      assert.strictEqual(root.deviceType, "urn:schemas-upnp-org:device:InternetGatewayDevice:1")
      assert.deepStrictEqual(root.wanServices.map((service) => [service.kind, service.igdV2]), [["WANIPConnection:1", false]])
    }))

  it.effect("Huawei: values padded with newlines are trimmed, the legacy dslforum service is accepted, URLBase wins", () =>
    Effect.gen(function*() {
      const root = yield* parse("huawei-hg8245h-dslforum.xml", "http://192.168.100.1:49652/desc.xml")
      assert.strictEqual(root.deviceType, "urn:dslforum-org:device:InternetGatewayDevice:1")
      assert.strictEqual(root.friendlyName, "HG8245H")
      assert.strictEqual(root.urlBase, "http://192.168.100.1:37215")
      assert.deepStrictEqual(root.wanServices.map((service) => [service.serviceType, service.kind, service.controlUrl]), [
        [
          "urn:dslforum-org:service:WANIPConnection:1",
          "WANIPConnection:1",
          "http://192.168.100.1:37215/upnp/control/wanipconnection1"
        ]
      ])
    }))

  it.effect("MikroTik: both WANDevices' services, in document order", () =>
    Effect.gen(function*() {
      const root = yield* parse("mikrotik-two-wandevices.xml", "http://192.168.88.1:2828/gateway.xml")
      assert.deepStrictEqual(root.wanServices.map((service) => service.controlUrl), [
        "http://192.168.88.1:2828/upnp/control/ywhrvfilwu/wanipconn-1",
        "http://192.168.88.1:2828/upnp/control/jjxxgigehq/wanipconn-2"
      ])
    }))

  it.effect("Livebox: the non-standard WANPPPConnection:2, relative to URLBase", () =>
    Effect.gen(function*() {
      const root = yield* parse("livebox-wanpppconnection2.xml", "http://192.168.1.1:49152/gatedesc.xml")
      assert.deepStrictEqual(root.wanServices.map((service) => [service.kind, service.controlUrl]), [
        ["WANPPPConnection:2", "http://192.168.1.1:49152/upnp/control/WANPPPConn1"]
      ])
    }))

  it.effect("prefixed elements (u:root …) are matched by local name; WANIPConnection ranks above WANPPPConnection", () =>
    Effect.gen(function*() {
      const root = yield* parse("prefixed-bipac.xml", "http://192.168.1.254:5431/dyndev/uuid:0000e0b8-60b0-00e0-b060-b0e0b06000000")
      assert.deepStrictEqual(root.wanServices.map((service) => [service.kind, service.controlUrl]), [
        ["WANIPConnection:1", "http://192.168.1.254:5431/ctl/IPConn"],
        ["WANPPPConnection:1", "http://192.168.1.254:5431/ctl/PPPConn"]
      ])
    }))

  it.effect("a relative controlURL is rooted at URLBase's host, its path dropped (miniupnpc)", () =>
    Effect.gen(function*() {
      const root = yield* parse("urlbase-tplink.xml", "http://192.168.0.1:1900/gatedesc.xml")
      assert.deepStrictEqual(root.wanServices.map((service) => service.controlUrl), ["http://192.168.0.1:5000/ipc"])
    }))

  it.effect("a Latin-1 document is decoded as Latin-1", () =>
    Effect.gen(function*() {
      const root = yield* parse("latin1-declared.xml", "http://192.168.77.1:49536/rootDesc.xml")
      assert.strictEqual(root.friendlyName, "Routeur du salé de Benoît")
      assert.strictEqual(root.wanServices.length, 1)
    }))

  it.effect("invalid UTF-8 does not break the document: bad bytes become U+FFFD", () =>
    Effect.gen(function*() {
      const root = yield* parse("invalid-utf8.xml", "http://192.168.77.1:49536/rootDesc.xml")
      assert.match(root.friendlyName ?? "", /^Router \uFFFD+ \uFFFD+ café$/)
      assert.strictEqual(root.wanServices.length, 1)
    }))

  it.effect("characters XML forbids are stripped, not fatal", () =>
    Effect.gen(function*() {
      const root = yield* parse("forbidden-control-characters.xml", "http://192.168.77.1:49536/rootDesc.xml")
      assert.strictEqual(root.friendlyName, "Debian[0m router")
      assert.strictEqual(root.wanServices.length, 1)
    }))

  it.effect("a control URL off the LAN is refused, with the reason", () =>
    Effect.gen(function*() {
      const root = yield* parseDescription(
        fixtureBytes("descriptions/control-url-off-lan.xml"),
        "http://192.168.77.1:49536/rootDesc.xml",
        { isAllowedHost: () => false }
      )
      assert.strictEqual(root.wanServices.length, 0)
      assert.deepStrictEqual(root.refused.map((refused) => refused.controlUrl), ["http://203.0.113.9:5000/ctl/IPConn"])
      assert.match(root.refused[0]!.reason, /203\.0\.113\.9 is neither the description's host nor on a directly connected LAN/)
    }))

  it.effect("the LAN check is the injected one: a LAN host other than the description's is accepted", () =>
    Effect.gen(function*() {
      const root = yield* parseDescription(
        fixtureBytes("descriptions/control-url-off-lan.xml"),
        "http://192.168.77.1:49536/rootDesc.xml",
        { isAllowedHost: (ip) => ip === "203.0.113.9" }
      )
      assert.deepStrictEqual(root.wanServices.map((service) => service.controlUrl), ["http://203.0.113.9:5000/ctl/IPConn"])
    }))

  it.effect("an entity bomb is refused, not expanded", () =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(parse("entity-bomb.xml", "http://192.168.77.1:49536/rootDesc.xml"))
      assert.strictEqual(error._tag, "GatewayProtocolError")
      assert.match(error.reason, /DOCTYPE/)
    }))

  it.effect("a device that is no gateway parses to no WAN services", () =>
    Effect.gen(function*() {
      const root = yield* parse("not-a-gateway-mediaserver.xml", "http://192.168.77.5:8200/rootDesc.xml")
      assert.strictEqual(root.deviceType, "urn:schemas-upnp-org:device:MediaServer:1")
      assert.strictEqual(root.wanServices.length, 0)
      assert.strictEqual(root.refused.length, 0)
    }))

  it.effect.each([
    ["empty", ""],
    ["not XML", "HTTP/1.1 404 Not Found"],
    ["truncated", "<?xml version=\"1.0\"?><root><device><deviceType>urn:x"],
    ["another root", "<html><body>login</body></html>"],
    ["no device", "<root xmlns=\"urn:schemas-upnp-org:device-1-0\"><specVersion/></root>"]
  ])("%s is a GatewayProtocolError", ([, text]) =>
    Effect.gen(function*() {
      const error = yield* Effect.flip(
        parseDescription(new TextEncoder().encode(text), "http://192.168.77.1:49536/rootDesc.xml")
      )
      assert.strictEqual(error._tag, "GatewayProtocolError")
      assert.strictEqual(error.router, "http://192.168.77.1:49536/rootDesc.xml")
    }))
})

describe("resolveControlUrl", () => {
  it.each([
    ["/ctl/IPConn", "http://192.168.77.1:49536/rootDesc.xml", undefined, "http://192.168.77.1:49536/ctl/IPConn"],
    ["ctl/IPConn", "http://192.168.77.1:49536/sub/rootDesc.xml", undefined, "http://192.168.77.1:49536/ctl/IPConn"],
    ["http://192.168.1.1:5431/ctl", "http://192.168.1.1:80/desc.xml", "http://192.168.1.1:9/", "http://192.168.1.1:5431/ctl"],
    ["/ctl", "http://192.168.1.1:80/desc.xml", "http://192.168.1.1:37215", "http://192.168.1.1:37215/ctl"],
    ["ctl", "http://192.168.1.1:80/desc.xml", "http://192.168.1.1:5000/igd/", "http://192.168.1.1:5000/ctl"],
    ["/ctl", "http://192.168.1.1:80/desc.xml", "not a url", "http://192.168.1.1/ctl"]
  ] as const)("%s against %s (URLBase %s) is %s", (control, location, urlBase, expected) => {
    assert.strictEqual(resolveControlUrl(control, location, urlBase), expected)
  })

  it.effect("an event URL on another host than the control URL is dropped: events go to the router only", () =>
    Effect.gen(function*() {
      const xml = new TextEncoder().encode(
        `<root><device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType><serviceList>` +
          `<service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>` +
          `<controlURL>/ctl</controlURL><eventSubURL>http://192.168.77.50:8080/evt</eventSubURL></service>` +
          `<service><serviceType>urn:schemas-upnp-org:service:WANPPPConnection:1</serviceType>` +
          `<controlURL>/ppp</controlURL></service></serviceList></device></root>`
      )
      const root = yield* parseDescription(xml, "http://192.168.77.1:49536/rootDesc.xml", { isAllowedHost: () => true })
      assert.deepStrictEqual(root.wanServices.map((service) => [service.controlUrl, service.eventSubUrl]), [
        ["http://192.168.77.1:49536/ctl", undefined],
        ["http://192.168.77.1:49536/ppp", undefined]
      ])
    }))
})
