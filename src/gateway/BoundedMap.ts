/**
 * A map that never holds more than a fixed number of entries: the least recently used one
 * goes when a new key would exceed the bound. Every table keyed by what the network sends
 * (SSDP USNs, LOCATIONs, BOOTIDs) is one, so a flood of made-up keys costs a constant amount
 * of memory instead of growing the heap without end.
 */
export class BoundedMap<K, V> {
  readonly #entries = new Map<K, V>()
  /** The most entries ever held. */
  readonly capacity: number

  /** `capacity` is the most entries ever held (at least 1). */
  constructor(capacity: number) {
    this.capacity = capacity
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError(`capacity ${capacity} is not a positive integer`)
  }

  /** How many entries are held now; never more than `capacity`. */
  get size(): number {
    return this.#entries.size
  }

  /** The value, marking the key as just used. */
  get(key: K): V | undefined {
    if (!this.#entries.has(key)) return undefined
    const value = this.#entries.get(key) as V
    this.#entries.delete(key)
    this.#entries.set(key, value)
    return value
  }

  /** Sets the value (as the most recently used), evicting the least recently used beyond the bound. */
  set(key: K, value: V): this {
    this.#entries.delete(key)
    this.#entries.set(key, value)
    if (this.#entries.size > this.capacity) {
      const oldest = this.#entries.keys().next()
      if (oldest.done !== true) this.#entries.delete(oldest.value)
    }
    return this
  }

  delete(key: K): boolean {
    return this.#entries.delete(key)
  }
}
