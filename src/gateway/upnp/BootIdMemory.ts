/**
 * A router announces each boot with a new BOOTID.UPNP.ORG (UPnP Device Architecture 1.1): what
 * was last heard from each root device tells a reboot from a repeated announcement.
 */
import { BoundedMap } from "../BoundedMap.ts"
import type { SsdpResponse } from "./Discovery.ts"

/** Root devices whose BOOTID is remembered (by LOCATION), least recently heard forgotten first. */
export const MAX_BOOT_IDS = 64

/** The last BOOTID.UPNP.ORG heard from each root device, by LOCATION (at most MAX_BOOT_IDS). */
export interface BootIdMemory {
  /** Records a root device's BOOTID; true when it differs from the one heard before (it rebooted). */
  readonly observe: (response: SsdpResponse) => boolean
  /** Root devices remembered now. */
  readonly size: () => number
}

/**
 * By LOCATION, not USN: a root device's embedded devices announce the same boot under UUIDs
 * of their own, and one boot must count once.
 */
export const makeBootIdMemory = (): BootIdMemory => {
  const bootIds = new BoundedMap<string, number>(MAX_BOOT_IDS)
  return {
    observe: (response) => {
      if (response.bootId === undefined) return false
      const previous = bootIds.get(response.location)
      bootIds.set(response.location, response.bootId)
      return previous !== undefined && previous !== response.bootId
    },
    size: () => bootIds.size
  }
}
