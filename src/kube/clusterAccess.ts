/**
 * Where the apiserver is and how to prove who we are, read the way client-go reads it: a given
 * kubeconfig file, else the in-cluster ServiceAccount (`KUBERNETES_SERVICE_HOST`), else
 * `$KUBECONFIG` (the first file of the list), else `~/.kube/config`.
 *
 * Supported credentials: bearer tokens (inline or `tokenFile`, re-read every minute, as
 * projected ServiceAccount tokens rotate), client certificates (inline or files), basic auth,
 * and exec plugins (`client.authentication.k8s.io/v1` and `v1beta1`, cached until the
 * credential's expiry, run again after a 401). Legacy `auth-provider` entries are refused with
 * a message that names the exec plugin replacing them.
 *
 * This is what `@kubernetes/client-node`'s `KubeConfig` did for us; loading it also loaded the
 * whole generated API, undici, an OIDC client and more (about 80 MiB of RSS), for a dozen
 * requests of five kinds.
 */
import { execFile } from "node:child_process"
import { readFileSync } from "node:fs"
import { homedir } from "node:os"
import * as Path from "node:path"
import { Clock, Effect, Option, Ref, Result, Schema } from "effect"
import { KubeError } from "./KubeError.ts"

/** The TLS side of a connection to the apiserver. */
export interface TlsMaterial {
  readonly ca?: string | undefined
  readonly cert?: string | undefined
  readonly key?: string | undefined
  /** `insecure-skip-tls-verify`: never in-cluster, only when a kubeconfig asks for it. */
  readonly insecure: boolean
  readonly serverName?: string | undefined
}

/** What each request carries. */
export interface Credentials {
  readonly tls: TlsMaterial
  /** The `Authorization` header, when the user authenticates by token or password. */
  readonly authorization?: string | undefined
}

export interface ClusterAccess {
  /** `https://host:port` (no trailing slash). */
  readonly server: string
  /** Where the settings came from, for errors and the startup log. */
  readonly source: string
  /** The current credentials: files re-read and plugins re-run as they expire. */
  readonly credentials: Effect.Effect<Credentials, KubeError>
  /** The server refused our credentials (401): read or run them afresh on the next request. */
  readonly invalidate: Effect.Effect<void>
}

/** Where a ServiceAccount's token, CA and namespace are mounted in a pod. */
export const SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

/** client-go re-reads a token file once a minute: a rotated projected token is picked up in time. */
const FILE_REFRESH_MS = 60_000

const configError = (message: string) =>
  new KubeError({ verb: "load", resource: "kubeconfig", reason: "InvalidKubeconfig", message })

const readText = (path: string, what: string): Effect.Effect<string, KubeError> =>
  Effect.try({
    try: () => readFileSync(path, "utf8"),
    catch: (cause) => configError(`cannot read ${what} ${path}: ${cause instanceof Error ? cause.message : String(cause)}`)
  })

// ---------------------------------------------------------------------------------------------
// The kubeconfig file

const ExecConfig = Schema.Struct({
  command: Schema.String,
  args: Schema.optional(Schema.NullOr(Schema.Array(Schema.String))),
  env: Schema.optional(Schema.NullOr(Schema.Array(Schema.Struct({ name: Schema.String, value: Schema.String })))),
  apiVersion: Schema.optional(Schema.String)
})

const KubeconfigFile = Schema.Struct({
  "current-context": Schema.optional(Schema.String),
  clusters: Schema.optional(Schema.NullOr(Schema.Array(Schema.Struct({ name: Schema.String, cluster: Schema.Struct({
    server: Schema.String,
    "certificate-authority": Schema.optional(Schema.String),
    "certificate-authority-data": Schema.optional(Schema.String),
    "insecure-skip-tls-verify": Schema.optional(Schema.Boolean),
    "tls-server-name": Schema.optional(Schema.String)
  }) })))),
  users: Schema.optional(Schema.NullOr(Schema.Array(Schema.Struct({ name: Schema.String, user: Schema.Struct({
    token: Schema.optional(Schema.String),
    tokenFile: Schema.optional(Schema.String),
    "client-certificate": Schema.optional(Schema.String),
    "client-certificate-data": Schema.optional(Schema.String),
    "client-key": Schema.optional(Schema.String),
    "client-key-data": Schema.optional(Schema.String),
    username: Schema.optional(Schema.String),
    password: Schema.optional(Schema.String),
    exec: Schema.optional(ExecConfig),
    "auth-provider": Schema.optional(Schema.Struct({ name: Schema.String }))
  }) })))),
  contexts: Schema.optional(Schema.NullOr(Schema.Array(Schema.Struct({ name: Schema.String, context: Schema.Struct({
    cluster: Schema.String,
    user: Schema.optional(Schema.String),
    namespace: Schema.optional(Schema.String)
  }) }))))
})
type KubeconfigFile = typeof KubeconfigFile.Type
type ExecConfig = typeof ExecConfig.Type

const decodeKubeconfig = Schema.decodeUnknownResult(KubeconfigFile)

/** Parses YAML (a JSON kubeconfig is YAML too); js-yaml is loaded only for a kubeconfig file. */
const parseYaml = (text: string, path: string): Effect.Effect<unknown, KubeError> =>
  Effect.tryPromise({
    try: async () => (await import("js-yaml")).load(text),
    catch: (cause) => configError(`${path} is not YAML: ${cause instanceof Error ? cause.message.split("\n")[0] : String(cause)}`)
  })

const fromFile = Effect.fnUntraced(function*(path: string) {
  const raw = yield* parseYaml(yield* readText(path, "kubeconfig"), path)
  const decoded = decodeKubeconfig(raw)
  if (Result.isFailure(decoded)) return yield* configError(`${path}: ${decoded.failure.message}`)
  return yield* fromKubeconfig(decoded.success, path)
})

const fromKubeconfig = Effect.fnUntraced(function*(config: KubeconfigFile, path: string) {
  const dir = Path.dirname(path)
  const resolve = (file: string) => Path.isAbsolute(file) ? file : Path.join(dir, file)
  const contextName = config["current-context"]
  if (contextName === undefined || contextName === "") return yield* configError(`${path} names no current-context`)
  const context = (config.contexts ?? []).find((entry) => entry.name === contextName)?.context
  if (context === undefined) return yield* configError(`${path}: context "${contextName}" is not defined`)
  const cluster = (config.clusters ?? []).find((entry) => entry.name === context.cluster)?.cluster
  if (cluster === undefined) return yield* configError(`${path}: cluster "${context.cluster}" is not defined`)
  const userName = context.user
  const user = userName === undefined ? {} : (config.users ?? []).find((entry) => entry.name === userName)?.user
  if (user === undefined) return yield* configError(`${path}: user "${userName}" is not defined`)
  if (user["auth-provider"] !== undefined) {
    return yield* configError(
      `${path}: user "${userName}" uses the auth-provider "${user["auth-provider"].name}", which is not supported: ` +
        "use its exec plugin instead (e.g. kubelogin, gke-gcloud-auth-plugin)"
    )
  }
  const server = cluster.server.replace(/\/+$/, "")
  const ca = cluster["certificate-authority-data"] !== undefined
    ? fromBase64(cluster["certificate-authority-data"])
    : cluster["certificate-authority"] !== undefined
    ? yield* readText(resolve(cluster["certificate-authority"]), "certificate-authority")
    : undefined
  const cert = user["client-certificate-data"] !== undefined
    ? fromBase64(user["client-certificate-data"])
    : user["client-certificate"] !== undefined
    ? yield* readText(resolve(user["client-certificate"]), "client-certificate")
    : undefined
  const key = user["client-key-data"] !== undefined
    ? fromBase64(user["client-key-data"])
    : user["client-key"] !== undefined
    ? yield* readText(resolve(user["client-key"]), "client-key")
    : undefined
  const tls: TlsMaterial = {
    ca,
    cert,
    key,
    insecure: cluster["insecure-skip-tls-verify"] === true,
    serverName: cluster["tls-server-name"]
  }
  const source = `kubeconfig ${path} (context ${contextName})`
  if (user.exec !== undefined) return yield* withExec(server, source, tls, user.exec, dir)
  if (user.tokenFile !== undefined) return yield* withTokenFile(server, source, tls, resolve(user.tokenFile))
  const authorization = user.token !== undefined
    ? `Bearer ${user.token}`
    : user.username !== undefined
    ? `Basic ${Buffer.from(`${user.username}:${user.password ?? ""}`).toString("base64")}`
    : undefined
  return fixed(server, source, { tls, authorization })
})

const fromBase64 = (data: string): string => Buffer.from(data, "base64").toString("utf8")

const fixed = (server: string, source: string, credentials: Credentials): ClusterAccess => ({
  server,
  source,
  credentials: Effect.succeed(credentials),
  invalidate: Effect.void
})

// ---------------------------------------------------------------------------------------------
// Credentials that change: token files, the in-cluster ServiceAccount, exec plugins

/** A value read again once it is older than `maxAgeMs` (or at once after `invalidate`). */
const refreshing = <A>(read: Effect.Effect<{ readonly value: A; readonly expiresAt?: number | undefined }, KubeError>, maxAgeMs: number) =>
  Effect.map(Ref.make<Option.Option<{ readonly value: A; readonly until: number }>>(Option.none()), (cache) => ({
    get: Effect.gen(function*() {
      const now = yield* Clock.currentTimeMillis
      const cached = yield* Ref.get(cache)
      if (Option.isSome(cached) && now < cached.value.until) return cached.value.value
      const fresh = yield* read
      yield* Ref.set(cache, Option.some({ value: fresh.value, until: Math.min(now + maxAgeMs, fresh.expiresAt ?? Infinity) }))
      return fresh.value
    }),
    invalidate: Ref.set(cache, Option.none())
  }))

const withTokenFile = Effect.fnUntraced(function*(server: string, source: string, tls: TlsMaterial, tokenFile: string) {
  const token = yield* refreshing(
    Effect.map(readText(tokenFile, "token file"), (text) => ({ value: text.trim() })),
    FILE_REFRESH_MS
  )
  return {
    server,
    source,
    credentials: Effect.map(token.get, (value): Credentials => ({ tls, authorization: `Bearer ${value}` })),
    invalidate: token.invalidate
  } satisfies ClusterAccess
})

/** A pod's ServiceAccount: the token is projected and rotated, the CA may be too. */
export const inCluster = Effect.fnUntraced(function*(
  host: string,
  port: string,
  dir: string = SERVICE_ACCOUNT_DIR
) {
  const server = `https://${host.includes(":") ? `[${host}]` : host}:${port}`
  const material = yield* refreshing(
    Effect.all({
      token: readText(Path.join(dir, "token"), "ServiceAccount token"),
      ca: readText(Path.join(dir, "ca.crt"), "ServiceAccount CA")
    }).pipe(Effect.map(({ ca, token }) => ({ value: { ca, token: token.trim() } }))),
    FILE_REFRESH_MS
  )
  return {
    server,
    source: "the in-cluster ServiceAccount",
    credentials: Effect.map(material.get, ({ ca, token }): Credentials => ({
      tls: { ca, insecure: false },
      authorization: `Bearer ${token}`
    })),
    invalidate: material.invalidate
  } satisfies ClusterAccess
})

const ExecCredential = Schema.Struct({
  status: Schema.Struct({
    token: Schema.optional(Schema.String),
    clientCertificateData: Schema.optional(Schema.String),
    clientKeyData: Schema.optional(Schema.String),
    expirationTimestamp: Schema.optional(Schema.String)
  })
})
const decodeExecCredential = Schema.decodeUnknownResult(Schema.fromJsonString(ExecCredential))

/** Output of a credential plugin larger than this is not a credential. */
const MAX_EXEC_OUTPUT = 1024 * 1024
const EXEC_TIMEOUT_MS = 30_000

const runExec = (exec: ExecConfig, dir: string, server: string) =>
  Effect.callback<string, KubeError>((resume) => {
    const apiVersion = exec.apiVersion ?? "client.authentication.k8s.io/v1"
    const command = exec.command.includes("/") && !Path.isAbsolute(exec.command) ? Path.join(dir, exec.command) : exec.command
    const child = execFile(command, [...(exec.args ?? [])], {
      env: {
        ...process.env,
        ...Object.fromEntries((exec.env ?? []).map((entry) => [entry.name, entry.value])),
        KUBERNETES_EXEC_INFO: JSON.stringify({
          apiVersion,
          kind: "ExecCredential",
          spec: { interactive: false, cluster: { server } }
        })
      },
      timeout: EXEC_TIMEOUT_MS,
      maxBuffer: MAX_EXEC_OUTPUT
    }, (error, stdout, stderr) => {
      if (error !== null) {
        const detail = String(stderr).trim().split("\n").slice(-1)[0] ?? ""
        resume(Effect.fail(configError(`exec plugin ${exec.command} failed: ${error.message.split("\n")[0]}${detail ? ` (${detail})` : ""}`)))
      } else resume(Effect.succeed(String(stdout)))
    })
    return Effect.sync(() => void child.kill())
  })

const withExec = Effect.fnUntraced(function*(
  server: string,
  source: string,
  tls: TlsMaterial,
  exec: ExecConfig,
  dir: string
) {
  const credential = yield* refreshing(
    Effect.gen(function*() {
      const decoded = decodeExecCredential(yield* runExec(exec, dir, server))
      if (Result.isFailure(decoded)) {
        return yield* configError(`exec plugin ${exec.command} printed no ExecCredential: ${decoded.failure.message}`)
      }
      const status = decoded.success.status
      const expiresAt = status.expirationTimestamp === undefined ? undefined : Date.parse(status.expirationTimestamp)
      return {
        value: {
          tls: {
            ...tls,
            cert: status.clientCertificateData ?? tls.cert,
            key: status.clientKeyData ?? tls.key
          },
          authorization: status.token === undefined ? undefined : `Bearer ${status.token}`
        } satisfies Credentials,
        // A credential without an expiry is kept until the server refuses it.
        expiresAt: expiresAt === undefined || Number.isNaN(expiresAt) ? undefined : expiresAt - 10_000
      }
    }),
    Infinity
  )
  return { server, source: `${source}, exec plugin ${exec.command}`, credentials: credential.get, invalidate: credential.invalidate } satisfies ClusterAccess
})

// ---------------------------------------------------------------------------------------------
// The loading rules

/**
 * The given kubeconfig file; else in-cluster when `KUBERNETES_SERVICE_HOST` is set; else the
 * first file of `$KUBECONFIG`; else `~/.kube/config`.
 */
export const loadClusterAccess = Effect.fn("Kube.loadClusterAccess")(function*(
  kubeconfig: string | undefined,
  env: Readonly<Record<string, string | undefined>> = process.env
) {
  if (kubeconfig !== undefined) return yield* fromFile(kubeconfig)
  const host = env["KUBERNETES_SERVICE_HOST"]
  if (host !== undefined && host !== "") return yield* inCluster(host, env["KUBERNETES_SERVICE_PORT"] ?? "443")
  const fromEnv = (env["KUBECONFIG"] ?? "").split(Path.delimiter).find((file) => file !== "")
  return yield* fromFile(fromEnv ?? Path.join(env["HOME"] ?? homedir(), ".kube", "config"))
})
