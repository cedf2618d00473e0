/** Reads captured router documents from test/fixtures/upnp. */
import * as Fs from "node:fs"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"

const root = Path.resolve(Path.dirname(fileURLToPath(import.meta.url)), "../../fixtures/upnp")

export const fixtureBytes = (relative: string): Uint8Array => new Uint8Array(Fs.readFileSync(Path.join(root, relative)))

export const fixtureText = (relative: string): string => Fs.readFileSync(Path.join(root, relative), "utf8")

export const fixtureNames = (directory: string): ReadonlyArray<string> =>
  Fs.readdirSync(Path.join(root, directory)).filter((name) => name.endsWith(".xml")).map((name) => `${directory}/${name}`)
