#!/usr/bin/env node
/**
 * The `edge-ccm` executable. It asks Node to keep the compiled code of what it loads next
 * (`NODE_COMPILE_CACHE`, else a folder of the system's temporary directory; read-only is fine
 * once filled, and a folder that cannot be written just turns it off): a later run skips
 * compiling most of the bundle, measured at about 50 ms of CPU and 7 MiB of RSS per start.
 */
import * as NodeModule from "node:module"

NodeModule.enableCompileCache?.()
await import("./cli/main.ts")
