/**
 * The floor's gateway client: raw WANIPConnection:2 SOAP over node:http, no Effect, no
 * parsing beyond what a measurement needs. miniupnpd closes every connection after one
 * answer, so each call is one TCP connection, as it is for the controller.
 */
import * as http from "node:http"

export const SERVICE_TYPE = "urn:schemas-upnp-org:service:WANIPConnection:2"

export interface SoapAnswer {
  readonly status: number
  readonly body: string
}

/** The UPnP error code of a fault, or undefined. */
export const faultCode = (answer: SoapAnswer): number | undefined => {
  const match = /<errorCode>(\d+)<\/errorCode>/.exec(answer.body)
  return match === null ? undefined : Number(match[1])
}

export interface SoapClient {
  readonly call: (action: string, args?: ReadonlyArray<readonly [string, string]>) => Promise<SoapAnswer>
  readonly getExternalIPAddress: () => Promise<string>
  readonly addPortMapping: (m: PortMapping) => Promise<void>
  readonly deletePortMapping: (externalPort: number, protocol: string) => Promise<void>
  /** The entry on a port, or undefined (714). */
  readonly getSpecific: (externalPort: number, protocol: string) => Promise<{ internalClient: string; internalPort: number; description: string } | undefined>
  /** GetListOfPortMappings over one protocol's ports up to `endPort` (one page of up to `max`). */
  readonly listCount: (protocol: string, max?: number, endPort?: number) => Promise<number>
}

export interface PortMapping {
  readonly externalPort: number
  readonly protocol: string
  readonly internalPort: number
  readonly internalClient: string
  readonly description: string
  readonly leaseSeconds: number
}

const tag = (body: string, name: string): string | undefined => {
  const match = new RegExp(`<${name}>([^<]*)</${name}>`).exec(body)
  return match === null ? undefined : match[1]
}

/** A SOAP client for one control URL, e.g. `http://192.168.77.1:49536/ctl/IPConn`. */
export function soapClient(controlUrl: string, options: { timeoutMs?: number } = {}): SoapClient {
  const url = new URL(controlUrl)
  const agent = new http.Agent({ keepAlive: false })
  const timeoutMs = options.timeoutMs ?? 5000

  const call = (action: string, args: ReadonlyArray<readonly [string, string]> = []): Promise<SoapAnswer> => {
    const body = `<?xml version="1.0"?><s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/" ` +
      `s:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/"><s:Body><u:${action} xmlns:u="${SERVICE_TYPE}">` +
      args.map(([k, v]) => `<${k}>${v.replace(/&/g, "&amp;").replace(/</g, "&lt;")}</${k}>`).join("") +
      `</u:${action}></s:Body></s:Envelope>`
    return new Promise((resolve, reject) => {
      const request = http.request({
        host: url.hostname,
        port: url.port === "" ? 80 : Number(url.port),
        path: url.pathname,
        method: "POST",
        agent,
        timeout: timeoutMs,
        headers: {
          "Content-Type": `text/xml; charset="utf-8"`,
          "SOAPAction": `"${SERVICE_TYPE}#${action}"`,
          "Content-Length": Buffer.byteLength(body),
          "Connection": "close"
        }
      }, (response) => {
        const chunks: Array<Buffer> = []
        response.on("data", (chunk: Buffer) => chunks.push(chunk))
        response.on("end", () => resolve({ status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }))
        response.on("error", reject)
      })
      request.on("timeout", () => request.destroy(new Error(`${action}: no answer within ${timeoutMs} ms`)))
      request.on("error", reject)
      request.end(body)
    })
  }

  const ok = async (action: string, args: ReadonlyArray<readonly [string, string]>, accept: ReadonlyArray<number> = []) => {
    const answer = await call(action, args)
    if (answer.status === 200) return answer
    const code = faultCode(answer)
    if (code !== undefined && accept.includes(code)) return answer
    throw new Error(`${action} failed: HTTP ${answer.status}${code === undefined ? "" : `, UPnP ${code}`}`)
  }

  return {
    call,
    getExternalIPAddress: async () => tag((await ok("GetExternalIPAddress", [])).body, "NewExternalIPAddress") ?? "",
    addPortMapping: async (m) => {
      await ok("AddPortMapping", [
        ["NewRemoteHost", ""],
        ["NewExternalPort", String(m.externalPort)],
        ["NewProtocol", m.protocol],
        ["NewInternalPort", String(m.internalPort)],
        ["NewInternalClient", m.internalClient],
        ["NewEnabled", "1"],
        ["NewPortMappingDescription", m.description],
        ["NewLeaseDuration", String(m.leaseSeconds)]
      ])
    },
    deletePortMapping: async (externalPort, protocol) => {
      await ok("DeletePortMapping", [["NewRemoteHost", ""], ["NewExternalPort", String(externalPort)], ["NewProtocol", protocol]], [714])
    },
    getSpecific: async (externalPort, protocol) => {
      const answer = await ok(
        "GetSpecificPortMappingEntry",
        [["NewRemoteHost", ""], ["NewExternalPort", String(externalPort)], ["NewProtocol", protocol]],
        [714]
      )
      if (answer.status !== 200) return undefined
      return {
        internalClient: tag(answer.body, "NewInternalClient") ?? "",
        internalPort: Number(tag(answer.body, "NewInternalPort")),
        description: tag(answer.body, "NewPortMappingDescription") ?? ""
      }
    },
    listCount: async (protocol, max = 65535, endPort = 65535) => {
      const answer = await ok("GetListOfPortMappings", [
        ["NewStartPort", "1"],
        ["NewEndPort", String(endPort)],
        ["NewProtocol", protocol],
        ["NewManage", "1"],
        ["NewNumberOfPorts", String(max)]
      ], [714, 730])
      if (answer.status !== 200) return 0
      // The listing is an escaped XML document inside NewPortListing.
      return (answer.body.match(/<(?:\w+:)?PortMappingEntry>|&lt;(?:\w+:)?PortMappingEntry&gt;/g) ?? []).length
    }
  }
}
