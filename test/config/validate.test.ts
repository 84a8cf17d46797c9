import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { runValidate } from "../../src/config";
import { scratch, type Scratch } from "./helpers";

const svc = (name: string) => `apiVersion: mesh.dev/v1alpha1\nkind: Service\nmetadata: {name: ${name}}\nspec: {ports: [{name: http, port: 80}]}\n`;
const proxy = `apiVersion: mesh.dev/v1alpha1\nkind: ProxyConfig\nmetadata: {name: web}\nspec: {upstream: "http://127.0.0.1:8080"}\n`;

let s: Scratch;
beforeEach(async () => {
  s = await scratch();
});
afterEach(async () => {
  await s.cleanup();
});

async function run(paths: string[]) {
  const out: string[] = [];
  const err: string[] = [];
  const code = await runValidate(paths, { out: (l) => out.push(l), err: (l) => err.push(l) });
  return { code, out, err };
}

describe("runValidate", () => {
  test("valid manifests: a one-line summary, most common kind first, exit 0", async () => {
    await s.write("services.yaml", `${svc("a")}---\n${svc("b")}`);
    await s.write("proxy.yaml", proxy);
    expect(await run([s.dir])).toEqual({ code: 0, out: ["3 manifests valid (2 Service, 1 ProxyConfig) in 2 files"], err: [] });
  });

  test("singular wording for one", async () => {
    const file = await s.write("one.yaml", svc("a"));
    expect(await run([file])).toEqual({ code: 0, out: ["1 manifest valid (1 Service) in 1 file"], err: [] });
  });

  test("every error one per line, then a count, exit 1", async () => {
    const a = await s.write("a.yaml", `${svc("a")}---\n${svc("Bad")}`);
    const b = await s.write("b.yaml", svc("a"));
    const result = await run([a, b]);
    expect(result).toEqual({
      code: 1,
      out: [],
      err: [
        `${a}#1 metadata.name: name "Bad" must be a DNS label: 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit`,
        `${b}#0 metadata.name: duplicate Service "default/a", first defined at ${a}#0`,
        "2 errors in 2 files",
      ],
    });
  });

  test("no paths is an error, not an empty success", async () => {
    expect(await run([])).toEqual({ code: 1, out: [], err: ["nothing to validate: name a file or directory"] });
  });
});
