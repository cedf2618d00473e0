/**
 * An in-process Internet gateway on 127.0.0.1 for fast protocol tests (or, as the hostile LAN
 * host of the e2e tests, on a lab namespace's address): real HTTP, real SOAP,
 * and an SSDP responder, over an in-memory mapping table that behaves like miniupnpd 2.3.1
 * (silent overwrite for the same client, 718 for another host's port, 714, 713, remaining
 * lease, 501 with a private WAN address, descriptions garbled past 64 bytes). Faults can be
 * injected per action. It checks every request against the field guide's format and records
 * any deviation, so tests can assert the client sends exactly what picky routers accept.
 *
 * It parses requests with plain regular expressions, not with the code under test.
 */
import * as Dgram from "node:dgram"
import * as Http from "node:http"
import type { AddressInfo } from "node:net"
import { Effect, type Scope } from "effect"

export type Protocol = "TCP" | "UDP"

export interface FakeMapping {
  readonly externalPort: number
  readonly protocol: Protocol
  readonly internalPort: number
  readonly internalClient: string
  readonly enabled: boolean
  readonly description: string
  /** Seconds granted; 0 = permanent. */
  readonly leaseSeconds: number
  readonly createdAt: number
}

export type Fault =
  /** Accepts the request and never answers. */
  | { readonly kind: "stall" }
  /** Destroys the connection without a response. */
  | { readonly kind: "reset" }
  /** HTTP 500 with a body that is no SOAP fault. */
  | { readonly kind: "bare500" }
  /** A UPnP fault with this code. */
  | { readonly kind: "upnp"; readonly code: number; readonly description?: string }
  /** A 200 reply of this many bytes. */
  | { readonly kind: "huge"; readonly bytes: number }
  /** A reply that declares entities which would expand exponentially. */
  | { readonly kind: "entityBomb" }
  /** These exact bytes as a 200 reply. */
  | { readonly kind: "raw"; readonly status?: number; readonly body: Uint8Array | string }
  /** The usual reply, sent this many milliseconds late. */
  | { readonly kind: "slow"; readonly ms: number }

export interface RecordedRequest {
  readonly method: string
  readonly path: string
  /** Header names as sent, in order. */
  readonly rawHeaders: ReadonlyArray<readonly [string, string]>
  readonly body: string
  readonly action: string | undefined
  readonly args: ReadonlyArray<readonly [string, string]>
  /** The address the request came from. */
  readonly from: string
}

export interface FakeIgdOptions {
  readonly igdVersion: 1 | 2
  readonly externalIp: string
  readonly connectionStatus: string
  /** miniupnpd's secure_mode: only the requesting host may be the internal client. */
  readonly secureMode: boolean
  /** Answer 725 to any non-zero lease. */
  readonly permanentLeasesOnly: boolean
  /** Answer 402 to any non-zero lease (routers that take a finite lease as invalid args). */
  readonly invalidArgsOnLease: boolean
  /** GetGenericPortMappingEntry counts from 1, and index 0 is a 402. */
  readonly listFromOne: boolean
  /** How GetListOfPortMappings wraps its document. */
  readonly listingEncoding: "cdata" | "escaped"
  /** Replaces the generated root description; `{{BASE}}` becomes `http://127.0.0.1:<port>`. */
  readonly rootDescription: string | undefined
  /** Host written into the generated controlURL (a bad one must be refused by the client). */
  readonly controlUrlHost: string | undefined
  /** Write the controlURL relative ("/ctl/IPConn") instead of absolute. */
  readonly relativeControlUrl: boolean
  /** Reply to M-SEARCH on a UDP port of 127.0.0.1. */
  readonly ssdp: boolean
  /** Answer requests in several chunks (Transfer-Encoding: chunked). */
  readonly chunked: boolean
  /** miniupnpd reports an empty external address when its WAN address is private; others show it. */
  readonly revealPrivateExternalIp: boolean
  /**
   * miniupnpd 2.3.1's listing overflow: a GetListOfPortMappings range holding more mappings of
   * its protocol than this is recorded as a violation and answered by a dropped connection.
   */
  readonly rangeCapacity: number | undefined
  /** GetListOfPortMappings pages in port order, or in the table's order as miniupnpd does. */
  readonly listingOrder: "ports" | "table"
  /** The address HTTP (and the SSDP responder) listens on: loopback unless a lab namespace's. */
  readonly host: string
  /** The HTTP port; 0: an ephemeral one. */
  readonly port: number
  /**
   * Answer M-SEARCH on this multicast group (joined on `host`'s interface) instead of on a
   * loopback port: only inside a lab namespace.
   */
  readonly ssdpMulticast: { readonly group: string; readonly port: number } | undefined
  /** Called with every SOAP request as it arrives. */
  readonly onRequest: ((request: RecordedRequest) => void) | undefined
}

export const defaultFakeIgdOptions: FakeIgdOptions = {
  igdVersion: 2,
  externalIp: "122.112.219.229",
  connectionStatus: "Connected",
  secureMode: false,
  permanentLeasesOnly: false,
  invalidArgsOnLease: false,
  listFromOne: false,
  listingEncoding: "cdata",
  rootDescription: undefined,
  controlUrlHost: undefined,
  relativeControlUrl: false,
  ssdp: false,
  chunked: false,
  revealPrivateExternalIp: false,
  rangeCapacity: undefined,
  listingOrder: "ports",
  host: "127.0.0.1",
  port: 0,
  ssdpMulticast: undefined,
  onRequest: undefined
}

export interface FakeIgd {
  /** `http://127.0.0.1:<port>` */
  readonly base: string
  /** The root description URL. */
  readonly location: string
  readonly controlUrl: string
  readonly serviceType: string
  /** The SSDP responder's port on 127.0.0.1, when `ssdp` is on. */
  readonly ssdpPort: number | undefined
  readonly requests: ReadonlyArray<RecordedRequest>
  /** Deviations from the field guide's request format, one line each. */
  readonly violations: ReadonlyArray<string>
  /** M-SEARCH datagrams received. */
  readonly searches: ReadonlyArray<string>
  readonly mappings: ReadonlyArray<FakeMapping>
  /**
   * Queues a fault for `times` calls of `action` (any action when omitted), after letting
   * `after` matching calls through.
   */
  readonly inject: (
    fault: Fault,
    options?: { readonly action?: string; readonly times?: number; readonly after?: number }
  ) => void
  /** Changes the router's state (WAN address, status, modes) from now on. */
  readonly configure: (patch: Partial<FakeIgdOptions>) => void
  /** Adds a mapping directly, as another host or an earlier run would have. */
  readonly seed: (mapping: Omit<FakeMapping, "createdAt">) => void
  /** SOAP actions received, in order. */
  readonly actions: () => ReadonlyArray<string>
  /** How many times the root description was fetched. */
  readonly descriptionFetches: () => number
}

const SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"

const escapeXml = (value: string) => value.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;")
const unescapeXml = (value: string) =>
  value.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&quot;/g, "\"").replace(/&apos;/g, "'").replace(/&amp;/g, "&")

export const rootDescriptionFor = (
  base: string,
  options: Pick<FakeIgdOptions, "igdVersion" | "controlUrlHost" | "relativeControlUrl">
): string => {
  const v = options.igdVersion
  const controlHost = options.controlUrlHost === undefined ? base : `http://${options.controlUrlHost}:5000`
  const controlUrl = options.relativeControlUrl ? "/ctl/IPConn" : `${controlHost}/ctl/IPConn`
  return `<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0"${v === 2 ? ` configId="1337"` : ""}>
<specVersion><major>1</major><minor>${v === 2 ? 1 : 0}</minor></specVersion>
<device>
<deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:${v}</deviceType>
<friendlyName>Fake IGD</friendlyName>
<manufacturer>edge-ccm tests</manufacturer>
<modelName>Fake IGD</modelName>
<UDN>uuid:fa4e1600-0000-4000-8000-000000000001</UDN>
<serviceList><service>
<serviceType>urn:schemas-upnp-org:service:Layer3Forwarding:1</serviceType>
<serviceId>urn:upnp-org:serviceId:L3Forwarding1</serviceId>
<SCPDURL>/L3F.xml</SCPDURL><controlURL>/ctl/L3F</controlURL><eventSubURL>/evt/L3F</eventSubURL>
</service></serviceList>
<deviceList><device>
<deviceType>urn:schemas-upnp-org:device:WANDevice:${v}</deviceType>
<friendlyName>WANDevice</friendlyName>
<UDN>uuid:fa4e1600-0000-4000-8000-000000000002</UDN>
<serviceList><service>
<serviceType>urn:schemas-upnp-org:service:WANCommonInterfaceConfig:1</serviceType>
<serviceId>urn:upnp-org:serviceId:WANCommonIFC1</serviceId>
<SCPDURL>/WANCfg.xml</SCPDURL><controlURL>/ctl/CmnIfCfg</controlURL><eventSubURL>/evt/CmnIfCfg</eventSubURL>
</service></serviceList>
<deviceList><device>
<deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:${v}</deviceType>
<friendlyName>WANConnectionDevice</friendlyName>
<UDN>uuid:fa4e1600-0000-4000-8000-000000000003</UDN>
<serviceList><service>
<serviceType>urn:schemas-upnp-org:service:WANIPConnection:${v}</serviceType>
<serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId>
<SCPDURL>/WANIPCn.xml</SCPDURL><controlURL>${controlUrl}</controlURL><eventSubURL>/evt/IPConn</eventSubURL>
</service></serviceList>
</device></deviceList>
</device></deviceList>
<presentationURL>${base}/</presentationURL>
</device>
</root>`
}

const envelope = (inner: string) =>
  `<?xml version="1.0"?>\r\n<s:Envelope xmlns:s="${SOAP_NS}" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body>${inner}</s:Body></s:Envelope>\r\n`

const faultBody = (code: number, description: string) =>
  envelope(
    `<s:Fault><faultcode>s:Client</faultcode><faultstring>UPnPError</faultstring><detail>` +
      `<UPnPError xmlns="urn:schemas-upnp-org:control-1-0"><errorCode>${code}</errorCode>` +
      `<errorDescription>${description}</errorDescription></UPnPError></detail></s:Fault>`
  )

const UPNP_DESCRIPTIONS: Record<number, string> = {
  401: "Invalid Action",
  402: "Invalid Args",
  501: "Action Failed",
  606: "Action not authorized",
  713: "SpecifiedArrayIndexInvalid",
  714: "NoSuchEntryInArray",
  716: "WildCardNotPermittedInExtPort",
  718: "ConflictInMappingEntry",
  724: "SamePortValuesRequired",
  725: "OnlyPermanentLeasesSupported",
  730: "PortMappingNotFound"
}

const ENTITY_BOMB = `<?xml version="1.0"?>
<!DOCTYPE lolz [
<!ENTITY lol "lol">
<!ENTITY lol1 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
<!ENTITY lol2 "&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">
<!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
<!ENTITY lol4 "&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;&lol3;">
<!ENTITY lol5 "&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;&lol4;">
<!ENTITY lol6 "&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;&lol5;">
<!ENTITY lol7 "&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;&lol6;">
<!ENTITY lol8 "&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;&lol7;">
<!ENTITY lol9 "&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;&lol8;">
]>
<s:Envelope xmlns:s="${SOAP_NS}"><s:Body><u:GetExternalIPAddressResponse xmlns:u="urn:schemas-upnp-org:service:WANIPConnection:1"><NewExternalIPAddress>&lol9;</NewExternalIPAddress></u:GetExternalIPAddressResponse></s:Body></s:Envelope>`

/** Argument order per action (field guide, "Arguments, in order"). */
const ARGUMENT_ORDER: Record<string, ReadonlyArray<string>> = {
  AddPortMapping: [
    "NewRemoteHost",
    "NewExternalPort",
    "NewProtocol",
    "NewInternalPort",
    "NewInternalClient",
    "NewEnabled",
    "NewPortMappingDescription",
    "NewLeaseDuration"
  ],
  AddAnyPortMapping: [
    "NewRemoteHost",
    "NewExternalPort",
    "NewProtocol",
    "NewInternalPort",
    "NewInternalClient",
    "NewEnabled",
    "NewPortMappingDescription",
    "NewLeaseDuration"
  ],
  DeletePortMapping: ["NewRemoteHost", "NewExternalPort", "NewProtocol"],
  GetSpecificPortMappingEntry: ["NewRemoteHost", "NewExternalPort", "NewProtocol"],
  GetGenericPortMappingEntry: ["NewPortMappingIndex"],
  GetListOfPortMappings: ["NewStartPort", "NewEndPort", "NewProtocol", "NewManage", "NewNumberOfPorts"],
  GetExternalIPAddress: [],
  GetStatusInfo: []
}

/** Starts the fake; it stops (connections included) when the scope closes. */
export const make = (options?: Partial<FakeIgdOptions>): Effect.Effect<FakeIgd, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.callback<{ fake: FakeIgd; close: () => Promise<void> }>((resume) => {
      let settings: FakeIgdOptions = { ...defaultFakeIgdOptions, ...options }
      const requests: Array<RecordedRequest> = []
      const violations: Array<string> = []
      const searches: Array<string> = []
      const table: Array<FakeMapping> = []
      const faults: Array<{ fault: Fault; action: string | undefined; remaining: number; skip: number }> = []
      const stalled = new Set<Http.ServerResponse>()
      let base = ""
      let fetches = 0
      const serviceType = () => `urn:schemas-upnp-org:service:WANIPConnection:${settings.igdVersion}`

      const takeFault = (action: string | undefined): Fault | undefined => {
        const index = faults.findIndex((entry) => entry.action === undefined || entry.action === action)
        if (index === -1) return undefined
        const entry = faults[index]!
        if (entry.skip > 0) {
          entry.skip--
          return undefined
        }
        entry.remaining--
        if (entry.remaining <= 0) faults.splice(index, 1)
        return entry.fault
      }

      const late = new Map<Http.ServerResponse, number>()
      const send = (response: Http.ServerResponse, status: number, body: Uint8Array | string): void => {
        const delay = late.get(response)
        if (delay !== undefined) {
          late.delete(response)
          return void setTimeout(() => send(response, status, body), delay)
        }
        const bytes = typeof body === "string" ? Buffer.from(body, "utf8") : Buffer.from(body)
        response.statusCode = status
        response.setHeader("Content-Type", "text/xml; charset=\"utf-8\"")
        response.setHeader("Server", "Debian/12 UPnP/1.1 MiniUPnPd/2.3.1")
        response.setHeader("Connection", "close")
        if (settings.chunked) {
          // No Content-Length: Node frames the reply with Transfer-Encoding: chunked.
          const step = Math.max(1, Math.ceil(bytes.length / 5))
          for (let offset = 0; offset < bytes.length; offset += step) {
            response.write(bytes.subarray(offset, offset + step))
          }
          response.end()
          return
        }
        response.setHeader("Content-Length", String(bytes.length))
        response.end(bytes)
      }

      const remaining = (mapping: FakeMapping) =>
        mapping.leaseSeconds === 0
          ? 0
          : Math.max(0, mapping.leaseSeconds - Math.floor((Date.now() - mapping.createdAt) / 1000))

      /** miniupnpd returns a long description as its first 64 bytes followed by garbage. */
      const storedDescription = (description: string): Uint8Array => {
        const bytes = Buffer.from(description, "utf8")
        if (bytes.length <= 64) return bytes
        return Buffer.concat([bytes.subarray(0, 64), Buffer.from([0x01, 0xff, 0xfe, 0xc3, 0x28, 0x07])])
      }

      const responseBody = (action: string, values: ReadonlyArray<readonly [string, string | Uint8Array]>) => {
        const head = Buffer.from(
          `<?xml version="1.0"?>\r\n<s:Envelope xmlns:s="${SOAP_NS}" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><u:${action}Response xmlns:u="${serviceType()}">`,
          "utf8"
        )
        const parts: Array<Uint8Array> = [head]
        for (const [name, value] of values) {
          parts.push(Buffer.from(`<${name}>`, "utf8"))
          parts.push(typeof value === "string" ? Buffer.from(escapeXml(value), "utf8") : value)
          parts.push(Buffer.from(`</${name}>`, "utf8"))
        }
        parts.push(Buffer.from(`</u:${action}Response></s:Body></s:Envelope>\r\n`, "utf8"))
        return Buffer.concat(parts)
      }

      const entryValues = (mapping: FakeMapping, withKey: boolean): Array<readonly [string, string | Uint8Array]> => [
        ...(withKey
          ? [
            ["NewRemoteHost", ""] as const,
            ["NewExternalPort", String(mapping.externalPort)] as const,
            ["NewProtocol", mapping.protocol] as const
          ]
          : []),
        ["NewInternalPort", String(mapping.internalPort)],
        ["NewInternalClient", mapping.internalClient],
        ["NewEnabled", mapping.enabled ? "1" : "0"],
        ["NewPortMappingDescription", storedDescription(mapping.description)],
        ["NewLeaseDuration", String(remaining(mapping))]
      ]

      const isPrivate = (ip: string) =>
        ip === "" || ip === "0.0.0.0" || /^(10\.|192\.168\.|172\.(1[6-9]|2\d|3[01])\.|100\.(6[4-9]|[7-9]\d|1[01]\d|12[0-7])\.)/.test(ip)

      const checkFormat = (request: Http.IncomingMessage, body: string, action: string | undefined) => {
        const header = (name: string) => request.headers[name.toLowerCase()]
        const problem = (text: string) => violations.push(`${action ?? "?"}: ${text}`)
        if (header("content-type") !== "text/xml; charset=\"utf-8\"") {
          problem(`Content-Type is ${JSON.stringify(header("content-type"))}`)
        }
        const soapAction = header("soapaction")
        if (typeof soapAction !== "string" || !/^"[^"]+#[A-Za-z]+"$/.test(soapAction)) {
          problem(`SOAPAction ${JSON.stringify(soapAction)} is not quoted`)
        }
        if (header("transfer-encoding") !== undefined) problem("request body is chunked")
        if (header("content-length") !== String(Buffer.byteLength(body, "utf8"))) {
          problem(`Content-Length ${String(header("content-length"))} is not the byte length ${Buffer.byteLength(body, "utf8")}`)
        }
        if (!/^\d{1,3}(\.\d{1,3}){3}(:\d+)?$/.test(String(header("host")))) problem(`Host ${String(header("host"))} is not numeric`)
        if (String(header("connection")).toLowerCase() !== "close") problem("no Connection: close")
        if (!body.startsWith(`<?xml version="1.0"?><s:Envelope xmlns:s="${SOAP_NS}" s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><u:`)) {
          problem("envelope does not start as the field guide writes it")
        }
        if (/>\s+</.test(body)) problem("whitespace between tags")
        const names = Array.from(body.matchAll(/<(New[A-Za-z]+)>/g), (match) => match[1]!)
        const expected = action === undefined ? undefined : ARGUMENT_ORDER[action]
        if (expected !== undefined && names.join(",") !== expected.join(",")) {
          problem(`arguments ${names.join(",")} instead of ${expected.join(",")}`)
        }
      }

      const handleSoap = (request: Http.IncomingMessage, response: Http.ServerResponse, body: string) => {
        const soapAction = String(request.headers["soapaction"] ?? "")
        const action = /#([A-Za-z]+)"?$/.exec(soapAction)?.[1]
        const args = Array.from(
          body.matchAll(/<(New[A-Za-z]+)>([^<]*)<\/New[A-Za-z]+>|<(New[A-Za-z]+)\/>/g),
          (match) => [match[1] ?? match[3]!, unescapeXml(match[2] ?? "")] as const
        )
        const recorded: RecordedRequest = {
          method: request.method ?? "",
          path: request.url ?? "",
          rawHeaders: pairs(request.rawHeaders),
          body,
          action,
          args,
          from: request.socket.remoteAddress ?? ""
        }
        requests.push(recorded)
        settings.onRequest?.(recorded)
        checkFormat(request, body, action)
        const arg = (name: string) => args.find(([key]) => key === name)?.[1] ?? ""
        const fail = (code: number) => send(response, 500, faultBody(code, UPNP_DESCRIPTIONS[code] ?? "Error"))
        const ok = (values: ReadonlyArray<readonly [string, string | Uint8Array]> = []) =>
          send(response, 200, responseBody(action ?? "Unknown", values))

        const fault = takeFault(action)
        if (fault !== undefined) {
          switch (fault.kind) {
            case "stall":
              stalled.add(response)
              return
            case "reset":
              request.socket.destroy()
              return
            case "bare500":
              return send(response, 500, "<html><body>Internal Server Error</body></html>")
            case "upnp":
              return send(response, 500, faultBody(fault.code, fault.description ?? UPNP_DESCRIPTIONS[fault.code] ?? "Error"))
            case "huge":
              return send(response, 200, Buffer.alloc(fault.bytes, 0x20))
            case "entityBomb":
              return send(response, 200, ENTITY_BOMB)
            case "raw":
              return send(response, fault.status ?? 200, fault.body)
            case "slow":
              late.set(response, fault.ms)
          }
        }
        const requester = (request.socket.remoteAddress ?? "").replace(/^::ffff:/, "")
        const find = (port: number, protocol: string) =>
          table.findIndex((mapping) => mapping.externalPort === port && mapping.protocol === protocol)
        const isV2Action = action === "AddAnyPortMapping" || action === "GetListOfPortMappings"
        if (isV2Action && settings.igdVersion !== 2) return fail(401)

        switch (action) {
          case "GetExternalIPAddress":
            return ok([[
              "NewExternalIPAddress",
              isPrivate(settings.externalIp) && !settings.revealPrivateExternalIp ? "" : settings.externalIp
            ]])
          case "GetStatusInfo":
            return ok([
              ["NewConnectionStatus", settings.connectionStatus],
              ["NewLastConnectionError", "ERROR_NONE"],
              ["NewUptime", "4242"]
            ])
          case "AddPortMapping":
          case "AddAnyPortMapping": {
            const externalPort = Number(arg("NewExternalPort"))
            const protocol = arg("NewProtocol") === "UDP" ? "UDP" : "TCP"
            const internalClient = arg("NewInternalClient")
            const lease = Number(arg("NewLeaseDuration"))
            if (externalPort === 0 && action === "AddPortMapping") return fail(716)
            if (!/^\d+$/.test(arg("NewInternalPort")) || Number(arg("NewInternalPort")) === 0) return fail(402)
            if (lease !== 0 && settings.permanentLeasesOnly) return fail(725)
            if (lease !== 0 && settings.invalidArgsOnLease) return fail(402)
            if (isPrivate(settings.externalIp)) return fail(501)
            if (settings.secureMode && internalClient !== requester) return fail(718)
            let port = externalPort
            let index = find(port, protocol)
            if (index !== -1 && table[index]!.internalClient !== internalClient) {
              if (action === "AddPortMapping") return fail(718)
              while (port < 65535 && find(port, protocol) !== -1) port++
              index = -1
            }
            const mapping: FakeMapping = {
              externalPort: port,
              protocol,
              internalPort: Number(arg("NewInternalPort")),
              internalClient,
              enabled: arg("NewEnabled") !== "0",
              description: arg("NewPortMappingDescription"),
              leaseSeconds: settings.igdVersion === 2 && lease === 0 ? 604800 : Math.min(lease, 604800),
              createdAt: Date.now()
            }
            // miniupnpd: the same internal client silently overwrites, description included.
            if (index === -1) table.push(mapping)
            else table[index] = mapping
            return action === "AddAnyPortMapping" ? ok([["NewReservedPort", String(port)]]) : ok()
          }
          case "DeletePortMapping": {
            const index = find(Number(arg("NewExternalPort")), arg("NewProtocol") || "TCP")
            if (index === -1) return fail(714)
            if (settings.secureMode && table[index]!.internalClient !== requester) return fail(606)
            table.splice(index, 1)
            return ok()
          }
          case "GetSpecificPortMappingEntry": {
            const index = find(Number(arg("NewExternalPort")), arg("NewProtocol"))
            if (index === -1) return fail(714)
            return ok(entryValues(table[index]!, false))
          }
          case "GetGenericPortMappingEntry": {
            const raw = Number(arg("NewPortMappingIndex"))
            if (settings.listFromOne && raw === 0) return fail(402)
            const index = settings.listFromOne ? raw - 1 : raw
            const mapping = table[index]
            if (mapping === undefined) return fail(713)
            return ok(entryValues(mapping, true))
          }
          case "GetListOfPortMappings": {
            const start = Number(arg("NewStartPort"))
            const end = Number(arg("NewEndPort"))
            const protocol = arg("NewProtocol")
            const count = Number(arg("NewNumberOfPorts")) || 1000
            const inRange = table
              .filter((mapping) => mapping.protocol === protocol && mapping.externalPort >= start && mapping.externalPort <= end)
            if (settings.rangeCapacity !== undefined && inRange.length > settings.rangeCapacity) {
              violations.push(`GetListOfPortMappings ${start}-${end} holds ${inRange.length} ${protocol} mappings (router overflows past ${settings.rangeCapacity})`)
              return void request.socket.destroy()
            }
            const ordered = settings.listingOrder === "ports" ? inRange.sort((a, b) => a.externalPort - b.externalPort) : inRange
            const selected = ordered.slice(0, count)
            if (selected.length === 0) return fail(730)
            const inner = `<?xml version="1.0" encoding="UTF-8"?><p:PortMappingList xmlns:p="urn:schemas-upnp-org:gw:WANIPConnection">` +
              selected.map((mapping) =>
                `<p:PortMappingEntry><p:NewRemoteHost></p:NewRemoteHost><p:NewExternalPort>${mapping.externalPort}</p:NewExternalPort>` +
                `<p:NewProtocol>${mapping.protocol}</p:NewProtocol><p:NewInternalPort>${mapping.internalPort}</p:NewInternalPort>` +
                `<p:NewInternalClient>${mapping.internalClient}</p:NewInternalClient><p:NewEnabled>${mapping.enabled ? 1 : 0}</p:NewEnabled>` +
                `<p:NewDescription>${escapeXml(mapping.description)}</p:NewDescription><p:NewLeaseTime>${remaining(mapping)}</p:NewLeaseTime></p:PortMappingEntry>`
              ).join("") +
              `</p:PortMappingList>`
            const wrapped = settings.listingEncoding === "cdata" ? Buffer.from(`<![CDATA[${inner}]]>`) : Buffer.from(escapeXml(inner))
            return ok([["NewPortListing", wrapped]])
          }
          default:
            return fail(401)
        }
      }

      const server = Http.createServer((request, response) => {
        const chunks: Array<Buffer> = []
        request.on("data", (chunk: Buffer) => chunks.push(chunk))
        request.on("end", () => {
          const body = Buffer.concat(chunks).toString("utf8")
          if (request.method === "GET") {
            fetches++
            const fault = takeFault("description")
            if (fault !== undefined) {
              if (fault.kind === "stall") return void stalled.add(response)
              if (fault.kind === "reset") return void request.socket.destroy()
              if (fault.kind === "bare500") return send(response, 500, "oops")
              if (fault.kind === "huge") return send(response, 200, Buffer.alloc(fault.bytes, 0x20))
              if (fault.kind === "entityBomb") return send(response, 200, ENTITY_BOMB)
              if (fault.kind === "raw") return send(response, fault.status ?? 200, fault.body)
              if (fault.kind === "slow") late.set(response, fault.ms)
            }
            if (request.url === "/rootDesc.xml") {
              const text = settings.rootDescription === undefined
                ? rootDescriptionFor(base, settings)
                : settings.rootDescription.replaceAll("{{BASE}}", base)
              return send(response, 200, text)
            }
            return send(response, 404, "not found")
          }
          if (request.method === "POST") return handleSoap(request, response, body)
          return send(response, 405, "method not allowed")
        })
      })

      let ssdpSocket: Dgram.Socket | undefined
      const start = () => {
        const address = server.address() as AddressInfo
        base = `http://${settings.host}:${address.port}`
        const fake: FakeIgd = {
          base,
          location: `${base}/rootDesc.xml`,
          get controlUrl() {
            return `${base}/ctl/IPConn`
          },
          get serviceType() {
            return serviceType()
          },
          ssdpPort: ssdpSocket === undefined ? undefined : ssdpSocket.address().port,
          requests,
          violations,
          searches,
          get mappings() {
            return table
          },
          inject: (fault, injectOptions) =>
            faults.push({
              fault,
              action: injectOptions?.action,
              remaining: injectOptions?.times ?? 1,
              skip: injectOptions?.after ?? 0
            }),
          configure: (patch) => {
            settings = { ...settings, ...patch }
          },
          seed: (mapping) => table.push({ ...mapping, createdAt: Date.now() }),
          actions: () => requests.flatMap((request) => request.action === undefined ? [] : [request.action]),
          descriptionFetches: () => fetches
        }
        resume(Effect.succeed({
          fake,
          close: () =>
            new Promise<void>((done) => {
              for (const response of stalled) response.destroy()
              ssdpSocket?.close()
              server.closeAllConnections()
              server.close(() => done())
            })
        }))
      }

      server.listen(settings.port, settings.host, () => {
        if (!settings.ssdp && settings.ssdpMulticast === undefined) return start()
        ssdpSocket = Dgram.createSocket({ type: "udp4", reuseAddr: true })
        ssdpSocket.on("message", (message, remote) => {
          const text = message.toString("latin1")
          searches.push(text)
          if (!text.startsWith("M-SEARCH") || !/MAN:\s*"ssdp:discover"/i.test(text)) return
          const st = /\r\nST:\s*([^\r\n]+)/i.exec(text)?.[1]?.trim() ?? "ssdp:all"
          const replyTarget = st === "ssdp:all" ? "urn:schemas-upnp-org:device:InternetGatewayDevice:2" : st
          const reply = `HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: ${replyTarget}\r\n` +
            `USN: uuid:fa4e1600-0000-4000-8000-000000000001::${replyTarget}\r\nEXT:\r\n` +
            `SERVER: Debian/12 UPnP/1.1 MiniUPnPd/2.3.1\r\nLOCATION: ${base}/rootDesc.xml\r\n` +
            `OPT: "http://schemas.upnp.org/upnp/1/0/"; ns=01\r\nBOOTID.UPNP.ORG: 1\r\nCONFIGID.UPNP.ORG: 1337\r\n\r\n`
          ssdpSocket?.send(reply, remote.port, remote.address)
        })
        const multicast = settings.ssdpMulticast
        if (multicast === undefined) {
          ssdpSocket.bind(0, settings.host, () => {
            base = `http://${settings.host}:${(server.address() as AddressInfo).port}`
            start()
          })
          return
        }
        ssdpSocket.bind({ port: multicast.port, address: "0.0.0.0", exclusive: false }, () => {
          ssdpSocket?.addMembership(multicast.group, settings.host)
          base = `http://${settings.host}:${(server.address() as AddressInfo).port}`
          start()
        })
      })
    }),
    ({ close }) => Effect.promise(close)
  ).pipe(Effect.map(({ fake }) => fake))

const pairs = (raw: ReadonlyArray<string>): Array<readonly [string, string]> => {
  const result: Array<readonly [string, string]> = []
  for (let index = 0; index + 1 < raw.length; index += 2) result.push([raw[index]!, raw[index + 1]!])
  return result
}
