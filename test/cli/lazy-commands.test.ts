import { describe, expect, test } from "bun:test";
import { rootCommand } from "../../src/main.ts";

describe("commands loaded when chosen", () => {
  const lazy = (rootCommand.subcommands ?? []).filter((s) => s.load);

  test("the CA, control plane and admin commands are among them", () => {
    expect(lazy.map((s) => s.name)).toEqual(expect.arrayContaining(["ca", "control-plane", "apply", "check", "join-token"]));
  });

  test.each(lazy.map((s) => [s.name, s] as const))("%s: the stub's name and summary are the loaded command's", async (_, stub) => {
    const full = await stub.load!();
    expect({ name: full.name, summary: full.summary }).toEqual({ name: stub.name, summary: stub.summary });
    expect(full.load).toBeUndefined();
  });
});
