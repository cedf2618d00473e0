/**
 * Memoizes a pure function of a Service object (and of arguments compared by identity). The
 * watch replaces a Service's object on every change, so the passes that look at every Service
 * (claims, contenders, orphans) compute each one once per version, not once per look.
 */
import type { Service } from "../kube/objects.ts"

/** Memoizes a pure function of a Service object by identity: a watch delivers a new object per version. */
export const perServiceObject = <Args extends ReadonlyArray<unknown>, A>(
  compute: (service: Service, ...args: Args) => A
): (service: Service, ...args: Args) => A => {
  const memo = new WeakMap<Service, { readonly args: Args; readonly value: A }>()
  return (service, ...args) => {
    const hit = memo.get(service)
    if (hit !== undefined && hit.args.length === args.length && hit.args.every((arg, index) => arg === args[index])) {
      return hit.value
    }
    const value = compute(service, ...args)
    memo.set(service, { args, value })
    return value
  }
}
