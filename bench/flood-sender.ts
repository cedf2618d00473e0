/**
 * The SSDP flood of bench/scenarios/flood.ts, sent from the lab's peer host (192.168.77.50):
 *
 *   ip netns exec <peer> node bench/flood-sender.ts <total> <duration-ms> <spoofed-source-port> <router-location>
 *
 * Spread evenly over the duration, to the SSDP multicast group (TTL 2, out of the peer's own
 * interface): ssdp:alive NOTIFYs with a random LOCATION under http://192.168.77.50:<port>/<path>,
 * a random USN and a random BOOTID.UPNP.ORG, and search replies (HTTP/1.1 200 OK) with random
 * LOCATIONs. Four in ten leave from `spoofed-source-port`, which the scenario's nftables rule in
 * the peer namespace rewrites to the router's address (192.168.77.1); one in four of those
 * names the router's own LOCATION with a BOOTID alternating between two values: a forged
 * reboot announcement. Prints one JSON line with what was sent.
 */
import { randomBytes, randomInt } from "node:crypto"
import * as Dgram from "node:dgram"

const [totalText = "100000", durationText = "60000", spoofPortText = "41900", routerLocation = "http://192.168.77.1:49536/rootDesc.xml"] =
  process.argv.slice(2)
const total = Number(totalText)
const durationMs = Number(durationText)
const spoofPort = Number(spoofPortText)
const PEER = "192.168.77.50"
const GROUP = "239.255.255.250"
const IGD1 = "urn:schemas-upnp-org:device:InternetGatewayDevice:1"

const open = (port: number) =>
  new Promise<Dgram.Socket>((resolve) => {
    const socket = Dgram.createSocket("udp4")
    socket.bind(port, PEER, () => {
      socket.setMulticastInterface(PEER)
      socket.setMulticastTTL(2)
      resolve(socket)
    })
  })

const hex = (bytes: number) => randomBytes(bytes).toString("hex")
const randomLocation = () => `http://${PEER}:${randomInt(1024, 65536)}/${hex(8)}/${hex(4)}.xml`

const notify = (location: string, usn: string, bootId: number) =>
  `NOTIFY * HTTP/1.1\r\nHOST: ${GROUP}:1900\r\nCACHE-CONTROL: max-age=120\r\nLOCATION: ${location}\r\nNT: ${IGD1}\r\n` +
  `NTS: ssdp:alive\r\nUSN: ${usn}\r\nSERVER: Linux/5.10 UPnP/1.1 MiniUPnPd/2.3.1\r\nBOOTID.UPNP.ORG: ${bootId}\r\n` +
  `CONFIGID.UPNP.ORG: 1\r\n\r\n`

const searchReply = (location: string) =>
  `HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: ${IGD1}\r\nUSN: uuid:${hex(16)}::${IGD1}\r\nEXT:\r\n` +
  `SERVER: Linux/5.10 UPnP/1.1 MiniUPnPd/2.3.1\r\nLOCATION: ${location}\r\nBOOTID.UPNP.ORG: ${randomInt(0, 2 ** 31 - 1)}\r\n\r\n`

const plain = await open(0)
const spoofed = await open(spoofPort)
const sent = { notifyFromPeer: 0, searchReplyFromPeer: 0, notifySpoofed: 0, rebootSpoofed: 0, errors: 0 }

/** The i-th datagram: which socket, and what. */
const datagram = (i: number): readonly [Dgram.Socket, string, keyof typeof sent] => {
  switch (i % 10) {
    case 5:
      return [plain, searchReply(randomLocation()), "searchReplyFromPeer"]
    case 6:
    case 7:
    case 8:
      return [spoofed, notify(randomLocation(), `uuid:${hex(16)}::${IGD1}`, randomInt(0, 2 ** 31 - 1)), "notifySpoofed"]
    case 9:
      return [spoofed, notify(routerLocation, `uuid:${hex(16)}::${IGD1}`, 1_000_000 + (Math.floor(i / 10) % 2)), "rebootSpoofed"]
    default:
      return [plain, notify(randomLocation(), `uuid:${hex(16)}::${IGD1}`, randomInt(0, 2 ** 31 - 1)), "notifyFromPeer"]
  }
}

const started = performance.now()
const tickMs = 10
let next = 0
while (next < total) {
  const due = Math.min(total, Math.ceil(((performance.now() - started) / durationMs) * total))
  const sends: Array<Promise<void>> = []
  for (; next < due; next++) {
    const [socket, text, kind] = datagram(next)
    sends.push(new Promise((resolve) => {
      socket.send(text, 1900, GROUP, (error) => {
        if (error) sent.errors += 1
        else sent[kind] += 1
        resolve()
      })
    }))
  }
  await Promise.all(sends)
  await new Promise((resolve) => setTimeout(resolve, tickMs))
}
plain.close()
spoofed.close()
console.log(JSON.stringify({ sent, elapsedMs: Math.round(performance.now() - started) }))
