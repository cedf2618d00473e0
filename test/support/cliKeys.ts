/** The keys of `edge-ccm gateway status --via nat-pmp|pcp --json`, in order: part of the CLI's interface. */
export const PORT_CONTROL_STATUS_KEYS: ReadonlyArray<string> = [
  "router",
  "protocol",
  "connected",
  "uptimeSeconds",
  "externalIp",
  "externalIpClass",
  "localAddress",
  "selection"
]
