/**
 * The Kubernetes objects the controller reads, as much of them as it reads. Every object that
 * arrives from the apiserver is decoded by these Schemas, which drop every other field
 * (`managedFields`, `last-applied-configuration`, pod selectors, cluster IPs…): with thousands
 * of Services watched, the cache holds a few hundred bytes per Service, not a few kilobytes.
 *
 * The types are structural subsets of the API's own (`V1Service` & co. in client libraries), so
 * objects built from those fit them.
 */
import { Result, Schema } from "effect"

/** A timestamp as the apiserver sends it (RFC 3339), or a `Date` from code that builds one. */
export type Timestamp = string | Date

const Text = Schema.String
const optional = Schema.optional

/** The metadata every object keeps. */
const ObjectMeta = Schema.Struct({
  name: optional(Text),
  namespace: optional(Text),
  uid: optional(Text),
  resourceVersion: optional(Text),
  creationTimestamp: optional(Text),
  deletionTimestamp: optional(Text),
  labels: optional(Schema.Record(Text, Text)),
  annotations: optional(Schema.Record(Text, Text)),
  finalizers: optional(Schema.Array(Text))
})

export interface ObjectMeta {
  readonly name?: string | undefined
  readonly namespace?: string | undefined
  readonly uid?: string | undefined
  readonly resourceVersion?: string | undefined
  readonly creationTimestamp?: Timestamp | undefined
  readonly deletionTimestamp?: Timestamp | undefined
  readonly labels?: { readonly [key: string]: string } | undefined
  readonly annotations?: { readonly [key: string]: string } | undefined
  readonly finalizers?: ReadonlyArray<string> | undefined
}

// ---------------------------------------------------------------------------------------------
// Services

const ServicePort = Schema.Struct({
  name: optional(Text),
  port: Schema.Number,
  protocol: optional(Text),
  nodePort: optional(Schema.Number)
})

const PortStatus = Schema.Struct({ port: Schema.Number, protocol: Text, error: optional(Text) })

const LoadBalancerIngress = Schema.Struct({
  ip: optional(Text),
  hostname: optional(Text),
  ipMode: optional(Text),
  ports: optional(Schema.Array(PortStatus))
})

const ServiceSchema = Schema.Struct({
  metadata: optional(ObjectMeta),
  spec: optional(Schema.Struct({
    type: optional(Text),
    loadBalancerClass: optional(Text),
    ports: optional(Schema.Array(ServicePort)),
    externalTrafficPolicy: optional(Text),
    ipFamilies: optional(Schema.Array(Text)),
    loadBalancerSourceRanges: optional(Schema.Array(Text)),
    allocateLoadBalancerNodePorts: optional(Schema.Boolean)
  })),
  status: optional(Schema.Struct({
    loadBalancer: optional(Schema.Struct({ ingress: optional(Schema.Array(LoadBalancerIngress)) }))
  }))
})

export interface ServicePort {
  readonly name?: string | undefined
  readonly port: number
  readonly protocol?: string | undefined
  readonly nodePort?: number | undefined
}

export interface LoadBalancerIngress {
  readonly ip?: string | undefined
  readonly hostname?: string | undefined
  readonly ipMode?: string | undefined
  readonly ports?: ReadonlyArray<{ readonly port: number; readonly protocol: string; readonly error?: string | undefined }> | undefined
}

export interface LoadBalancerStatus {
  readonly ingress?: ReadonlyArray<LoadBalancerIngress> | undefined
}

/** A Service, as far as the controller reads it. */
export interface Service {
  readonly metadata?: ObjectMeta | undefined
  readonly spec?: {
    readonly type?: string | undefined
    readonly loadBalancerClass?: string | undefined
    readonly ports?: ReadonlyArray<ServicePort> | undefined
    readonly externalTrafficPolicy?: string | undefined
    readonly ipFamilies?: ReadonlyArray<string> | undefined
    readonly loadBalancerSourceRanges?: ReadonlyArray<string> | undefined
    readonly allocateLoadBalancerNodePorts?: boolean | undefined
  } | undefined
  readonly status?: { readonly loadBalancer?: LoadBalancerStatus | undefined } | undefined
}

// ---------------------------------------------------------------------------------------------
// Nodes and EndpointSlices

const NodeSchema = Schema.Struct({
  metadata: optional(ObjectMeta),
  status: optional(Schema.Struct({
    addresses: optional(Schema.Array(Schema.Struct({ type: Text, address: Text })))
  }))
})

/** A Node: its name, labels (the exclusion label) and addresses. */
export interface Node {
  readonly metadata?: ObjectMeta | undefined
  readonly status?: {
    readonly addresses?: ReadonlyArray<{ readonly type: string; readonly address: string }> | undefined
  } | undefined
}

const EndpointSliceSchema = Schema.Struct({
  metadata: optional(ObjectMeta),
  endpoints: optional(Schema.Array(Schema.Struct({
    nodeName: optional(Text),
    conditions: optional(Schema.Struct({ ready: optional(Schema.Boolean) }))
  })))
})

/** An EndpointSlice: whose Service (label), and which nodes have ready endpoints. */
export interface EndpointSlice {
  readonly metadata?: ObjectMeta | undefined
  readonly endpoints?: ReadonlyArray<{
    readonly nodeName?: string | undefined
    readonly conditions?: { readonly ready?: boolean | undefined } | undefined
  }> | undefined
}

// ---------------------------------------------------------------------------------------------
// Leases and Secrets: read and written whole.

const LeaseSchema = Schema.Struct({
  metadata: optional(ObjectMeta),
  spec: optional(Schema.Struct({
    holderIdentity: optional(Text),
    leaseDurationSeconds: optional(Schema.Number),
    acquireTime: optional(Text),
    renewTime: optional(Text),
    leaseTransitions: optional(Schema.Number)
  }))
})

/** A `coordination.k8s.io/v1` Lease. Times are MicroTimes (RFC 3339, six fractional digits). */
export interface Lease {
  readonly apiVersion?: string | undefined
  readonly kind?: string | undefined
  readonly metadata?: ObjectMeta | undefined
  readonly spec?: {
    readonly holderIdentity?: string | undefined
    readonly leaseDurationSeconds?: number | undefined
    readonly acquireTime?: Timestamp | undefined
    readonly renewTime?: Timestamp | undefined
    readonly leaseTransitions?: number | undefined
  } | undefined
}

const SecretSchema = Schema.Struct({
  metadata: optional(ObjectMeta),
  type: optional(Text),
  data: optional(Schema.Record(Text, Text))
})

/** A Secret; `data` values are base64. */
export interface Secret {
  readonly metadata?: ObjectMeta | undefined
  readonly type?: string | undefined
  readonly data?: { readonly [key: string]: string } | undefined
}

// ---------------------------------------------------------------------------------------------
// Decoding

/** Lists carry their resourceVersion and the token of the next page. */
const ListMeta = Schema.Struct({ resourceVersion: optional(Text), continue: optional(Text) })

/** One kind of object: how one, and a list of them, are decoded (the error says why not). */
export interface Kind<T> {
  readonly decode: (raw: unknown) => Result.Result<T, string>
  readonly decodeList: (raw: unknown) => Result.Result<{
    readonly items: ReadonlyArray<T>
    readonly metadata?: { readonly resourceVersion?: string | undefined; readonly continue?: string | undefined } | undefined
  }, string>
}

const kind = <S extends Schema.Top & { readonly DecodingServices: never }>(schema: S) => {
  const one = Schema.decodeUnknownResult(schema)
  const list = Schema.decodeUnknownResult(Schema.Struct({ metadata: optional(ListMeta), items: Schema.Array(schema) }))
  return {
    decode: (raw: unknown) => Result.mapError(one(raw), (error) => error.message),
    decodeList: (raw: unknown) => Result.mapError(list(raw), (error) => error.message)
  }
}

export const Services: Kind<Service> = kind(ServiceSchema)
export const Nodes: Kind<Node> = kind(NodeSchema)
export const EndpointSlices: Kind<EndpointSlice> = kind(EndpointSliceSchema)
export const Leases: Kind<Lease> = kind(LeaseSchema)
export const Secrets: Kind<Secret> = kind(SecretSchema)

/** Keeps only the annotations under these prefixes (all of them when none are given). */
export const keepAnnotations = (prefixes: ReadonlyArray<string> | undefined) => <T extends { readonly metadata?: ObjectMeta | undefined }>(
  object: T
): T => {
  const annotations = object.metadata?.annotations
  if (prefixes === undefined || annotations === undefined) return object
  const kept = Object.entries(annotations).filter(([key]) => prefixes.some((prefix) => key.startsWith(prefix)))
  return { ...object, metadata: { ...object.metadata, annotations: Object.fromEntries(kept) } }
}

/** A Service as its name, namespace, uid, resourceVersion and type: all a bystander needs to be. */
export const identityOf = (service: Service): Service => {
  const meta = service.metadata
  return {
    metadata: {
      ...(meta?.name !== undefined ? { name: meta.name } : {}),
      ...(meta?.namespace !== undefined ? { namespace: meta.namespace } : {}),
      ...(meta?.uid !== undefined ? { uid: meta.uid } : {}),
      ...(meta?.resourceVersion !== undefined ? { resourceVersion: meta.resourceVersion } : {})
    },
    ...(service.spec?.type !== undefined ? { spec: { type: service.spec.type } } : {})
  }
}
