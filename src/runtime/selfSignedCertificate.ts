/**
 * The serving certificate /metrics uses when no `--metrics-cert-dir` is given: an ECDSA P-256
 * key and a self-signed X.509 v3 certificate, made in memory at start-up (nothing is written to
 * the read-only root filesystem). Scrapers cannot verify it against a CA; it gives them
 * encryption, and the bearer token is what authenticates them.
 */
import { generateKeyPairSync, randomBytes, sign } from "node:crypto"
import {
  bitString,
  boolean,
  explicit,
  implicitPrimitive,
  ipAddressBytes,
  objectIdentifier,
  octetString,
  sequence,
  set,
  smallInteger,
  time,
  unsignedInteger,
  utf8String
} from "./der.ts"

const OID = {
  ecdsaWithSha256: "1.2.840.10045.4.3.2",
  commonName: "2.5.4.3",
  subjectAltName: "2.5.29.17",
  basicConstraints: "2.5.29.19",
  keyUsage: "2.5.29.15",
  extendedKeyUsage: "2.5.29.37",
  serverAuth: "1.3.6.1.5.5.7.3.1"
} as const

/** A PEM certificate and its PKCS #8 PEM key, as `https.createServer` takes them. */
export interface CertificateAndKey {
  readonly cert: string
  readonly key: string
}

/** The certificate's names and lifetime. */
export interface SelfSignedOptions {
  /** Subject and issuer common name. */
  readonly commonName: string
  readonly dnsNames: ReadonlyArray<string>
  readonly ipAddresses: ReadonlyArray<string>
  /** Start of validity; backdated an hour so a node whose clock lags still accepts it. */
  readonly now: Date
  readonly validForDays: number
}

const extension = (oid: string, critical: boolean, value: Uint8Array) =>
  sequence(objectIdentifier(oid), ...(critical ? [boolean(true)] : []), octetString(value))

const name = (commonName: string) => sequence(set(sequence(objectIdentifier(OID.commonName), utf8String(commonName))))

const pem = (label: string, der: Uint8Array) =>
  `-----BEGIN ${label}-----\n${Buffer.from(der).toString("base64").match(/.{1,64}/g)!.join("\n")}\n-----END ${label}-----\n`

/** Generates a key and a certificate for it, valid for these names and addresses only. */
export const selfSignedCertificate = (options: SelfSignedOptions): CertificateAndKey => {
  const { privateKey, publicKey } = generateKeyPairSync("ec", { namedCurve: "P-256" })
  const signatureAlgorithm = sequence(objectIdentifier(OID.ecdsaWithSha256))
  const serial = randomBytes(16)
  serial[0] = (serial[0]! & 0x7f) | 0x01 // positive and 16 bytes long, as RFC 5280 asks
  const notBefore = new Date(options.now.getTime() - 3_600_000)
  const notAfter = new Date(options.now.getTime() + options.validForDays * 86_400_000)
  const alternativeNames = sequence(
    ...options.dnsNames.map((dns) => implicitPrimitive(2, Buffer.from(dns, "ascii"))),
    ...options.ipAddresses.map((ip) => implicitPrimitive(7, ipAddressBytes(ip)))
  )
  const tbsCertificate = sequence(
    explicit(0, smallInteger(2)), // v3
    unsignedInteger(serial),
    signatureAlgorithm,
    name(options.commonName),
    sequence(time(notBefore), time(notAfter)),
    name(options.commonName),
    publicKey.export({ type: "spki", format: "der" }),
    explicit(
      3,
      sequence(
        extension(OID.basicConstraints, true, sequence()),
        // digitalSignature only: an ECDSA key signs the TLS handshake and never enciphers keys.
        extension(OID.keyUsage, true, bitString(Uint8Array.of(0x80), 1)),
        extension(OID.extendedKeyUsage, false, sequence(objectIdentifier(OID.serverAuth))),
        extension(OID.subjectAltName, false, alternativeNames)
      )
    )
  )
  const signature = sign("sha256", tbsCertificate, privateKey)
  const certificate = sequence(tbsCertificate, signatureAlgorithm, bitString(signature))
  return {
    cert: pem("CERTIFICATE", certificate),
    key: privateKey.export({ type: "pkcs8", format: "pem" }).toString()
  }
}
