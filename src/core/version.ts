/**
 * Version and commit are baked in by build.ts (`--define`); running from source
 * falls back to package.json and "dev".
 */
import pkg from "../../package.json" with { type: "json" };

declare const MESH_VERSION: string | undefined;
declare const MESH_COMMIT: string | undefined;

export const version: string = typeof MESH_VERSION === "string" ? MESH_VERSION : pkg.version;
export const commit: string = typeof MESH_COMMIT === "string" ? MESH_COMMIT : "dev";
