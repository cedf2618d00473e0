import { assert, describe, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { TestClock } from "effect/testing"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { inCluster, loadClusterAccess } from "../../src/kube/clusterAccess.ts"
import { Kube } from "../../src/kube/Kube.ts"

/** A scratch folder with these files, removed with the scope. */
const folder = (files: Readonly<Record<string, string>>) =>
  Effect.acquireRelease(
    Effect.sync(() => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), "cluster-access-"))
      for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), text, { mode: 0o755 })
      return dir
    }),
    (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
  )

const kubeconfig = (user: string, cluster = "    server: https://192.0.2.10:6443/") =>
  [
    "apiVersion: v1",
    "kind: Config",
    "clusters:",
    "- name: lab",
    "  cluster:",
    cluster,
    "users:",
    "- name: admin",
    "  user:",
    user,
    "contexts:",
    "- name: lab",
    "  context:",
    "    cluster: lab",
    "    user: admin",
    "current-context: lab",
    ""
  ].join("\n")

const b64 = (text: string) => Buffer.from(text).toString("base64")

describe("loading a kubeconfig", () => {
  it.effect("reads the server, an inline token, a CA file beside it and inline client certificates", () =>
    Effect.gen(function*() {
      const dir = yield* folder({
        "ca.pem": "THE CA",
        config: kubeconfig(
          [
            "    token: abc",
            `    client-certificate-data: ${b64("THE CERT")}`,
            `    client-key-data: ${b64("THE KEY")}`
          ].join("\n"),
          ["    server: https://192.0.2.10:6443/", "    certificate-authority: ca.pem", "    tls-server-name: kubernetes"].join("\n")
        )
      })
      const access = yield* loadClusterAccess(path.join(dir, "config"), {})
      assert.strictEqual(access.server, "https://192.0.2.10:6443")
      assert.include(access.source, path.join(dir, "config"))
      const credentials = yield* access.credentials
      assert.deepStrictEqual(credentials, {
        tls: { ca: "THE CA", cert: "THE CERT", key: "THE KEY", insecure: false, serverName: "kubernetes" },
        authorization: "Bearer abc"
      })
    }).pipe(Effect.scoped))

  it.effect("basic auth, and insecure-skip-tls-verify only when asked", () =>
    Effect.gen(function*() {
      const dir = yield* folder({
        config: kubeconfig("    username: admin\n    password: s3cret", "    server: https://h:1\n    insecure-skip-tls-verify: true")
      })
      const credentials = yield* Effect.flatMap(loadClusterAccess(path.join(dir, "config"), {}), (access) => access.credentials)
      assert.strictEqual(credentials.authorization, `Basic ${b64("admin:s3cret")}`)
      assert.isTrue(credentials.tls.insecure)
    }).pipe(Effect.scoped))

  it.effect("errors name the file and what is wrong with it", () =>
    Effect.gen(function*() {
      const missing = yield* Effect.flip(loadClusterAccess("/nonexistent/kubeconfig", {}))
      assert.strictEqual(missing._tag, "KubeError")
      assert.strictEqual(missing.resource, "kubeconfig")
      assert.include(missing.message, "/nonexistent/kubeconfig")
      const dir = yield* folder({
        empty: "apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\nusers: []\n",
        provider: kubeconfig("    auth-provider:\n      name: oidc"),
        garbage: "clusters: [unclosed\n"
      })
      const empty = yield* Effect.flip(loadClusterAccess(path.join(dir, "empty"), {}))
      assert.include(empty.message, "names no current-context")
      const provider = yield* Effect.flip(loadClusterAccess(path.join(dir, "provider"), {}))
      assert.include(provider.message, "auth-provider \"oidc\", which is not supported")
      assert.include(provider.message, "exec plugin")
      const garbage = yield* Effect.flip(loadClusterAccess(path.join(dir, "garbage"), {}))
      assert.include(garbage.message, "is not YAML")
    }).pipe(Effect.scoped))

  it.effect("re-reads a token file once a minute, and at once after the server refused it", () =>
    Effect.gen(function*() {
      const dir = yield* folder({ token: "one\n" })
      fs.writeFileSync(path.join(dir, "config"), kubeconfig(`    tokenFile: ${path.join(dir, "token")}`))
      const access = yield* loadClusterAccess(path.join(dir, "config"), {})
      const bearer = Effect.map(access.credentials, (c) => c.authorization)
      assert.strictEqual(yield* bearer, "Bearer one")
      fs.writeFileSync(path.join(dir, "token"), "two\n")
      yield* TestClock.adjust("30 seconds")
      assert.strictEqual(yield* bearer, "Bearer one")
      yield* TestClock.adjust("31 seconds")
      assert.strictEqual(yield* bearer, "Bearer two")
      fs.writeFileSync(path.join(dir, "token"), "three\n")
      yield* access.invalidate
      assert.strictEqual(yield* bearer, "Bearer three")
    }).pipe(Effect.scoped))

  it.effect("runs an exec plugin, keeps its credential until it expires, and says why a plugin failed", () =>
    Effect.gen(function*() {
      const dir = yield* folder({
        // Counts its runs, and prints what client-go's exec credential protocol expects.
        plugin: [
          "#!/bin/sh",
          "echo run >> \"$(dirname \"$0\")/runs\"",
          "test -n \"$KUBERNETES_EXEC_INFO\" || exit 3",
          `echo '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"from-plugin","expirationTimestamp":"2999-01-01T00:00:00Z"}}'`
        ].join("\n"),
        broken: "#!/bin/sh\necho 'token expired, run login' >&2\nexit 1\n"
      })
      const exec = (command: string) => `    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: ${command}`
      fs.writeFileSync(path.join(dir, "config"), kubeconfig(exec("./plugin")))
      fs.writeFileSync(path.join(dir, "broken-config"), kubeconfig(exec("./broken")))
      const access = yield* loadClusterAccess(path.join(dir, "config"), {})
      const runs = () => fs.readFileSync(path.join(dir, "runs"), "utf8").trim().split("\n").length
      assert.strictEqual((yield* access.credentials).authorization, "Bearer from-plugin")
      yield* access.credentials
      assert.strictEqual(runs(), 1)
      yield* access.invalidate
      yield* access.credentials
      assert.strictEqual(runs(), 2)
      const broken = yield* loadClusterAccess(path.join(dir, "broken-config"), {})
      const error = yield* Effect.flip(broken.credentials)
      assert.include(error.message, "exec plugin ./broken failed")
      assert.include(error.message, "token expired, run login")
    }).pipe(Effect.scoped))
})

describe("in-cluster", () => {
  it.effect("reads the ServiceAccount's token and CA, brackets an IPv6 host, and follows a rotated token", () =>
    Effect.gen(function*() {
      const dir = yield* folder({ token: "first", "ca.crt": "CLUSTER CA" })
      const access = yield* inCluster("fd00::1", "443", dir)
      assert.strictEqual(access.server, "https://[fd00::1]:443")
      assert.deepStrictEqual(yield* access.credentials, { tls: { ca: "CLUSTER CA", insecure: false }, authorization: "Bearer first" })
      fs.writeFileSync(path.join(dir, "token"), "rotated")
      yield* TestClock.adjust("61 seconds")
      assert.strictEqual((yield* access.credentials).authorization, "Bearer rotated")
    }).pipe(Effect.scoped))

  it.effect("the loading rules: a given file first, then in-cluster, then $KUBECONFIG", () =>
    Effect.gen(function*() {
      const dir = yield* folder({ a: kubeconfig("    token: a", "    server: https://a:1"), b: kubeconfig("    token: b", "    server: https://b:1") })
      const given = yield* loadClusterAccess(path.join(dir, "a"), { KUBERNETES_SERVICE_HOST: "10.96.0.1", KUBECONFIG: path.join(dir, "b") })
      assert.strictEqual(given.server, "https://a:1")
      const fromEnv = yield* loadClusterAccess(undefined, { KUBECONFIG: `${path.join(dir, "b")}${path.delimiter}${path.join(dir, "a")}` })
      assert.strictEqual(fromEnv.server, "https://b:1")
      const pod = yield* loadClusterAccess(undefined, { KUBERNETES_SERVICE_HOST: "10.96.0.1", KUBERNETES_SERVICE_PORT: "443" })
      assert.strictEqual(pod.server, "https://10.96.0.1:443")
      assert.strictEqual(pod.source, "the in-cluster ServiceAccount")
    }).pipe(Effect.scoped))

  it.effect("Kube.layer fails to build with the loading error", () =>
    Effect.gen(function*() {
      const error = yield* Layer.build(Kube.layer({ kubeconfig: "/nonexistent/kubeconfig", instance: "x" })).pipe(
        Effect.scoped,
        Effect.flip
      )
      assert.strictEqual(error._tag, "KubeError")
      assert.strictEqual(error.resource, "kubeconfig")
    }))
})
