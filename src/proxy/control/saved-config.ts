/**
 * The last config version a sidecar applied, kept beside its certificates. A sidecar that
 * restarts while its control plane is unreachable enforces these policies and calls these
 * destinations until it hears from it, instead of refusing every request (it knows no
 * policy otherwise) or, worse, letting every caller in. It stays not ready until then.
 */
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { writeFileSet } from "../../core/files.ts";
import type { Logger } from "../../core/log.ts";

export interface SavedConfig {
  version: string;
  documents: unknown[];
}

const FILE = "config.json";

export function saveConfig(certsDir: string, config: SavedConfig): void {
  // Written like the key: it says who may call this service, so it is the operator's alone.
  writeFileSet([{ path: join(certsDir, FILE), content: JSON.stringify(config), secret: true }], { force: true });
}

/** The saved config, or undefined when there is none or it cannot be read (said in the log). */
export function loadSavedConfig(certsDir: string, log: Logger): SavedConfig | undefined {
  const path = join(certsDir, FILE);
  if (!existsSync(path)) return undefined;
  try {
    const parsed = JSON.parse(readFileSync(path, "utf8")) as Partial<SavedConfig>;
    if (typeof parsed.version !== "string" || !Array.isArray(parsed.documents)) throw new Error("not a saved config");
    return { version: parsed.version, documents: parsed.documents };
  } catch (err) {
    log.warn({ path, err: (err as Error).message }, "the saved config cannot be read; waiting for the control plane's");
    return undefined;
  }
}
