/**
 * The key that signs each Service's record of its mappings. A namespace user can edit their
 * own Service's annotations, so a record is evidence only when it carries a signature that
 * nobody but the controller can make: an HMAC over the Service's namespace, name and uid and the
 * record's exact text, keyed by a Secret in the controller's own namespace that tenants cannot
 * read. A record copied from another Service, edited, or signed for an earlier Service of the
 * same name fails the check (docs/architecture.md, "Whose mapping is it").
 */
import { createHmac, createSecretKey, randomBytes, timingSafeEqual } from "node:crypto"
import { Context, Effect, Layer, Schedule, Schema } from "effect"
import { Kube, type KubeError } from "../kube/Kube.ts"

/** Whose record: the signature binds the record to exactly this Service object. */
export interface RecordOwner {
  readonly namespace: string
  readonly name: string
  readonly uid: string
}

/** The Secret's name; it lives in the controller's namespace (the leader-election one). */
export const RECORD_KEY_SECRET = "edge-cloud-controller-manager-record-key"
/** The data field of the Secret that holds the key. */
export const RECORD_KEY_FIELD = "key"
/** A key shorter than this is refused: HMAC-SHA256 wants 32 bytes of entropy. */
export const MIN_KEY_BYTES = 32

const SIGNATURE_VERSION = "v1"

/** Signs and checks records; the key itself never leaves this service. */
export class RecordKey extends Context.Service<RecordKey, {
  /** The signature of a record's text for this owner. */
  readonly sign: (owner: RecordOwner, text: string) => string
  /** Whether `signature` is ours for this owner and text (constant-time). */
  readonly verify: (owner: RecordOwner, text: string, signature: string) => boolean
}>()("edge-ccm/controller/RecordKey") {
  /** The service over a key given directly. */
  static makeStatic(key: Uint8Array): RecordKey["Service"] {
    return fromKey(key)
  }

  /** A key given directly: for tests, and for embedders that keep their own secret. */
  static layerStatic(key: Uint8Array): Layer.Layer<RecordKey> {
    return Layer.succeed(RecordKey, fromKey(key))
  }

  /**
   * The key from the Secret `namespace/name`, created with 32 random bytes when it does not
   * exist (a concurrent creator's 409 is followed by a read). Keeps trying, with a log line per
   * failure, while the API refuses: the controller does not start without it, since it could
   * not tell its records from forgeries.
   */
  static layerSecret(options: { readonly namespace: string; readonly name?: string }): Layer.Layer<RecordKey, never, Kube> {
    const name = options.name ?? RECORD_KEY_SECRET
    return Layer.effect(
      RecordKey,
      loadOrCreate(options.namespace, name).pipe(
        Effect.tapError((error) =>
          Effect.logWarning(`cannot load the record key Secret ${options.namespace}/${name}, retrying: ${error.message}`)
        ),
        Effect.retry(Schedule.min([Schedule.exponential("1 second"), Schedule.spaced("30 seconds")])),
        // The schedule never ends: the only way out is a key.
        Effect.orDie,
        Effect.map(fromKey)
      )
    )
  }
}

const message = (owner: RecordOwner, text: string): string =>
  ["edge-ccm/mappings", SIGNATURE_VERSION, owner.namespace, owner.name, owner.uid, text].join("\u0000")

const fromKey = (key: Uint8Array): RecordKey["Service"] => {
  // A KeyObject made once: Node imports raw key bytes afresh for every Hmac (8x the cost of one).
  const secret = createSecretKey(key)
  const mac = (owner: RecordOwner, text: string) => createHmac("sha256", secret).update(message(owner, text)).digest()
  return RecordKey.of({
    sign: (owner, text) => `${SIGNATURE_VERSION}.${mac(owner, text).toString("base64url")}`,
    verify: (owner, text, signature) => {
      if (!signature.startsWith(`${SIGNATURE_VERSION}.`)) return false
      const given = Buffer.from(signature.slice(SIGNATURE_VERSION.length + 1), "base64url")
      const expected = mac(owner, text)
      return given.length === expected.length && timingSafeEqual(given, expected)
    }
  })
}

/** The record key Secret exists but holds no usable key. */
export class RecordKeyError extends Schema.TaggedError<RecordKeyError>()("RecordKeyError", {
  namespace: Schema.String,
  name: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `record key Secret ${this.namespace}/${this.name}: ${this.reason}`
  }
}

const keyOf = (encoded: string | undefined, namespace: string, name: string) => {
  if (encoded === undefined) {
    return Effect.fail(new RecordKeyError({ namespace, name, reason: `no data field "${RECORD_KEY_FIELD}"` }))
  }
  const key = Buffer.from(encoded, "base64")
  return key.length < MIN_KEY_BYTES
    ? Effect.fail(
      new RecordKeyError({
        namespace,
        name,
        reason: `data field "${RECORD_KEY_FIELD}" holds ${key.length} bytes; at least ${MIN_KEY_BYTES} are needed`
      })
    )
    : Effect.succeed(new Uint8Array(key))
}

const loadOrCreate = (
  namespace: string,
  name: string
): Effect.Effect<Uint8Array, KubeError | RecordKeyError, Kube> =>
  Effect.gen(function*() {
    const kube = yield* Kube
    const existing = yield* kube.getSecret(namespace, name)
    if (existing !== undefined) return yield* keyOf(existing.data?.[RECORD_KEY_FIELD], namespace, name)
    const created = yield* kube.createSecret({
      metadata: {
        namespace,
        name,
        labels: { "app.kubernetes.io/name": "edge-cloud-controller-manager" },
        annotations: {
          "midokura.com/purpose": "signs the midokura.com/mappings records on Services; deleting it invalidates them all"
        }
      },
      type: "Opaque",
      data: { [RECORD_KEY_FIELD]: randomBytes(MIN_KEY_BYTES).toString("base64") }
    }).pipe(
      Effect.tap(() => Effect.log(`created the record key Secret ${namespace}/${name}`)),
      // Another replica created it first: use theirs.
      Effect.catchTag("KubeConflict", () =>
        kube.getSecret(namespace, name).pipe(
          Effect.flatMap((secret) =>
            secret === undefined
              ? Effect.fail(new RecordKeyError({ namespace, name, reason: "created by someone else, then gone" }))
              : Effect.succeed(secret)
          )
        ))
    )
    return yield* keyOf(created.data?.[RECORD_KEY_FIELD], namespace, name)
  })
