/** `npm run docs`: rewrites the reference region of README.md from the CLI specs and schemas. */
import { join } from "node:path";
import { renderReference, writeRegion } from "./reference.ts";

const path = join(import.meta.dir, "../../README.md");
const before = await Bun.file(path).text();
const after = writeRegion(before, await renderReference());
if (after === before) console.log("README.md reference is up to date");
else {
  await Bun.write(path, after);
  console.log("README.md reference regenerated");
}
