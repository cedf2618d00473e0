/**
 * What RBAC grants a user (`kubectl auth can-i --list`) and what the user was seen to do (the
 * lab apiserver's audit log), in one shape so the two can be compared.
 */
import * as fs from "node:fs"

/** One row of `kubectl auth can-i --list`: a resource (or non-resource URLs) and its verbs. */
export interface GrantedRule {
  /** As kubectl prints it: `services`, `services/status`, `leases.coordination.k8s.io`; empty for URLs. */
  readonly resource: string
  readonly nonResourceUrls: ReadonlyArray<string>
  /** Empty: any name. */
  readonly resourceNames: ReadonlyArray<string>
  readonly verbs: ReadonlyArray<string>
}

const list = (cell: string): ReadonlyArray<string> => {
  const inner = cell.slice(1, -1).trim()
  return inner === "" ? [] : inner.split(/\s+/)
}

/** Parses `kubectl auth can-i --list --no-headers`. */
export function parseCanIList(text: string): ReadonlyArray<GrantedRule> {
  const rows: Array<GrantedRule> = []
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue
    const match = /^(\S*)\s+(\[[^\]]*\])\s+(\[[^\]]*\])\s+(\[[^\]]*\])\s*$/.exec(line)
    if (match === null) throw new Error(`unexpected line in kubectl auth can-i --list: ${JSON.stringify(line)}`)
    rows.push({ resource: match[1]!, nonResourceUrls: list(match[2]!), resourceNames: list(match[3]!), verbs: list(match[4]!) })
  }
  return rows
}

/** A single permission: one verb on one resource (or URL), maybe for some names only. */
export interface Permission {
  readonly verb: string
  /** `services/status`, `leases.coordination.k8s.io`, or a URL such as `/version`. */
  readonly resource: string
  readonly resourceNames: ReadonlyArray<string>
}

/** Splits each rule into one permission per verb (and per URL). */
export function permissionsOf(rules: ReadonlyArray<GrantedRule>): ReadonlyArray<Permission> {
  return rules.flatMap((rule) =>
    rule.verbs.flatMap((verb) =>
      rule.nonResourceUrls.length > 0
        ? rule.nonResourceUrls.map((url) => ({ verb, resource: url, resourceNames: [] }))
        : [{ verb, resource: rule.resource, resourceNames: [...rule.resourceNames].sort() }]
    )
  )
}

export const permissionKey = (p: Permission): string =>
  `${p.verb} ${p.resource}${p.resourceNames.length > 0 ? ` [${p.resourceNames.join(" ")}]` : ""}`

/** One request as the audit log records it (level Metadata). */
export interface AuditedRequest {
  readonly verb: string
  /** In kubectl's spelling: `resource[/subresource][.group]`, or the path of a non-resource URL. */
  readonly resource: string
  /** Empty for cluster-scoped and all-namespace requests. */
  readonly namespace: string
  readonly name: string
  readonly code: number
  /** The authorizer's `allow` or `forbid`. */
  readonly decision: string
}

export const requestKey = (r: AuditedRequest): string =>
  `${r.verb} ${r.resource}${r.namespace !== "" ? ` -n ${r.namespace}` : ""}${r.name !== "" ? ` ${r.name}` : ""}`

interface AuditEvent {
  readonly stage: string
  readonly verb: string
  readonly requestURI: string
  readonly user: { readonly username: string }
  readonly objectRef?: {
    readonly resource?: string
    readonly subresource?: string
    readonly apiGroup?: string
    readonly namespace?: string
    readonly name?: string
  }
  readonly responseStatus?: { readonly code?: number }
  readonly annotations?: Readonly<Record<string, string>>
}

/** Byte size of the audit log now: read from there to see only what happens next. */
export const auditLogSize = (file: string): number => (fs.existsSync(file) ? fs.statSync(file).size : 0)

/** The requests `username` made, from byte `offset` of the audit log on. */
export function auditedRequests(file: string, username: string, offset: number): ReadonlyArray<AuditedRequest> {
  const text = fs.readFileSync(file).subarray(offset).toString("utf8")
  const requests: Array<AuditedRequest> = []
  for (const line of text.split("\n")) {
    if (line.trim() === "") continue
    const event = JSON.parse(line) as AuditEvent
    if (event.user.username !== username) continue
    // A watch is recorded when its response starts and again when it ends: one request.
    if (event.stage !== "ResponseComplete" && event.stage !== "ResponseStarted") continue
    const ref = event.objectRef
    const resource = ref?.resource === undefined
      ? event.requestURI.split("?")[0]!
      : `${ref.resource}${ref.subresource !== undefined ? `/${ref.subresource}` : ""}${ref.apiGroup ? `.${ref.apiGroup}` : ""}`
    requests.push({
      verb: event.verb,
      resource,
      namespace: ref?.namespace ?? "",
      name: ref?.name ?? "",
      code: event.responseStatus?.code ?? 0,
      decision: event.annotations?.["authorization.k8s.io/decision"] ?? ""
    })
  }
  return requests
}
