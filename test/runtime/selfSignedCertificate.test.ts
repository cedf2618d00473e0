import { describe, expect, it } from "@effect/vitest"
import { execFile } from "node:child_process"
import { createPrivateKey, X509Certificate } from "node:crypto"
import * as fs from "node:fs"
import { createServer } from "node:https"
import type { AddressInfo } from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { promisify } from "node:util"
import { selfSignedCertificate } from "../../src/runtime/selfSignedCertificate.ts"

const run = promisify(execFile)
const options = {
  commonName: "edge-cloud-controller-manager",
  dnsNames: ["node-1", "localhost"],
  ipAddresses: ["192.168.77.10", "127.0.0.1", "fd00::10"],
  validForDays: 365
}
// Valid now, so OpenSSL and curl accept it whenever the tests run.
const made = selfSignedCertificate({ ...options, now: new Date() })

const inTempDir = async <A>(f: (dir: string) => Promise<A>): Promise<A> => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "edge-ccm-cert-"))
  try {
    return await f(dir)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

describe("selfSignedCertificate", () => {
  it("is a v3 certificate signed by its own ECDSA P-256 key, for a server, not a CA", () => {
    const certificate = new X509Certificate(made.cert)
    expect(certificate.verify(certificate.publicKey)).toBe(true)
    // The PEM key given to the TLS server is the one the certificate names.
    expect(certificate.checkPrivateKey(createPrivateKey(made.key))).toBe(true)
    expect(certificate.publicKey.asymmetricKeyType).toBe("ec")
    expect(certificate.publicKey.asymmetricKeyDetails?.namedCurve).toBe("prime256v1")
    expect(certificate.subject).toBe("CN=edge-cloud-controller-manager")
    expect(certificate.issuer).toBe("CN=edge-cloud-controller-manager")
    expect(certificate.ca).toBe(false)
    expect(certificate.keyUsage).toEqual(["1.3.6.1.5.5.7.3.1"])
    expect(certificate.serialNumber).toMatch(/^[0-9A-F]{32}$/)
  })

  it("is valid from an hour before `now` for the days asked", () => {
    const certificate = new X509Certificate(selfSignedCertificate({ ...options, now: new Date("2026-05-01T12:00:00Z") }).cert)
    expect(new Date(certificate.validFrom).toISOString()).toBe("2026-05-01T11:00:00.000Z")
    expect(new Date(certificate.validTo).toISOString()).toBe("2027-05-01T12:00:00.000Z")
  })

  it("names exactly the DNS names and addresses given", () => {
    const certificate = new X509Certificate(made.cert)
    expect(certificate.subjectAltName).toBe(
      "DNS:node-1, DNS:localhost, IP Address:192.168.77.10, IP Address:127.0.0.1, IP Address:FD00:0:0:0:0:0:0:10"
    )
    expect(certificate.checkIP("192.168.77.10")).toBe("192.168.77.10")
    expect(certificate.checkIP("192.168.77.11")).toBeUndefined()
    expect(certificate.checkHost("node-1")).toBe("node-1")
    expect(certificate.checkHost("node-2")).toBeUndefined()
  })

  it("draws a new key and serial each time", () => {
    const again = selfSignedCertificate({ ...options, now: new Date() })
    expect(again.key).not.toBe(made.key)
    expect(new X509Certificate(again.cert).serialNumber).not.toBe(new X509Certificate(made.cert).serialNumber)
  })

  it("reads as OpenSSL expects it (openssl x509 -text)", async () => {
    await inTempDir(async (dir) => {
      fs.writeFileSync(path.join(dir, "tls.crt"), made.cert)
      const { stdout } = await run("openssl", ["x509", "-in", path.join(dir, "tls.crt"), "-noout", "-text"])
      expect(stdout).toContain("Version: 3 (0x2)")
      expect(stdout).toContain("Signature Algorithm: ecdsa-with-SHA256")
      expect(stdout).toContain("NIST CURVE: P-256")
      expect(stdout).toMatch(/X509v3 Basic Constraints: critical\s+CA:FALSE/)
      expect(stdout).toMatch(/X509v3 Key Usage: critical\s+Digital Signature\n/)
      expect(stdout).toMatch(/X509v3 Extended Key Usage:\s+TLS Web Server Authentication/)
      expect(stdout).toContain("DNS:node-1, DNS:localhost, IP Address:192.168.77.10, IP Address:127.0.0.1")
      // OpenSSL checks the self-signature when the certificate is its own trust anchor.
      const verified = await run("openssl", ["verify", "-CAfile", path.join(dir, "tls.crt"), path.join(dir, "tls.crt")])
      expect(verified.stdout.trim()).toBe(`${path.join(dir, "tls.crt")}: OK`)
    })
  })

  it("serves TLS that curl accepts with -k, and verifies against the certificate itself for 127.0.0.1", async () => {
    const server = createServer({ cert: made.cert, key: made.key }, (_, response) => response.end("over TLS\n"))
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve))
    const { port } = server.address() as AddressInfo
    try {
      await inTempDir(async (dir) => {
        fs.writeFileSync(path.join(dir, "ca.crt"), made.cert)
        const insecure = await run("curl", ["-sS", "-k", `https://127.0.0.1:${port}/`])
        expect(insecure.stdout).toBe("over TLS\n")
        const verified = await run("curl", ["-sS", "--cacert", path.join(dir, "ca.crt"), `https://127.0.0.1:${port}/`])
        expect(verified.stdout).toBe("over TLS\n")
        // A name the certificate does not carry is refused (curl exit 60, or 51 on older builds).
        const wrongName = await run("curl", [
          "-sS",
          "--cacert",
          path.join(dir, "ca.crt"),
          "--resolve",
          `node-2:${port}:127.0.0.1`,
          `https://node-2:${port}/`
        ]).then(() => 0, (error: { code: number }) => error.code)
        expect([51, 60]).toContain(wrongName)
      })
    } finally {
      await new Promise((resolve) => server.close(resolve))
    }
  })
})
