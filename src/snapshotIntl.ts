/**
 * Intl objects made while the startup snapshot is built (src/snapshot.ts), made for real at
 * their first use instead. V8 cannot put an Intl object in a snapshot (the ICU object behind it
 * aborts the builder), and effect's CLI makes one when its module loads (a `Intl.Segmenter` to
 * measure text). While the snapshot is built, each Intl constructor returns a stand-in that makes
 * the real object, with the same arguments, when a property is first read: after the start,
 * in the locale of the process that runs. Imported first, so it runs before any other module.
 */
import { startupSnapshot } from "node:v8"

type Constructor = new(...args: Array<unknown>) => object

const intl = Intl as unknown as Record<string, Constructor | undefined>
const replaced = new Map<string, Constructor>()

const deferredConstructor = (Real: Constructor) =>
  function(...args: Array<unknown>): object {
    let made: object | undefined
    return new Proxy({}, {
      get: (_target, key) => {
        made ??= new Real(...args)
        const value: unknown = Reflect.get(made, key)
        return typeof value === "function" ? value.bind(made) : value
      }
    })
  }

if (startupSnapshot.isBuildingSnapshot()) {
  // The constructors (Collator, Segmenter…), not the functions (getCanonicalLocales…).
  for (const name of Object.getOwnPropertyNames(intl).filter((n) => /^[A-Z]/.test(n))) {
    const Real = intl[name]
    if (typeof Real !== "function") continue
    replaced.set(name, Real)
    intl[name] = deferredConstructor(Real) as unknown as Constructor
  }
}

/** Puts Intl's own constructors back once every module is loaded. */
export const restoreIntl = (): void => {
  for (const [name, Real] of replaced) intl[name] = Real
}
