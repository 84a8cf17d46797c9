import { expect, test } from "bun:test";
import { join } from "node:path";
import { formatManifestError, loadManifests } from "../../src/config";

// The examples users copy from must stay valid as the schemas change.
test("every manifest in policies/ is valid", async () => {
  const { manifests, errors } = await loadManifests([join(import.meta.dir, "../../policies")]);
  expect(errors.map(formatManifestError)).toEqual([]);
  expect(manifests.map((m) => m.manifest.kind)).toEqual(expect.arrayContaining(["Service", "AuthorizationPolicy", "ProxyConfig", "ControlPlaneConfig"]));
});
