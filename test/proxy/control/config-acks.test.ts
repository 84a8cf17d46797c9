/** Acknowledgements wait for a registration, and each registration is told the latest applied and refused versions. */
import { expect, test } from "bun:test";
import { ConfigAcks, type ConfigAck } from "../../../src/proxy/control/config-acks.ts";
import type { Logger } from "../../../src/core/log.ts";

function acks(fail: () => boolean = () => false) {
  const sent: ConfigAck[] = [];
  const warnings: string[] = [];
  const log = { warn: (o: { err: string }) => void warnings.push(o.err) } as unknown as Logger;
  const a = new ConfigAcks(async (ack) => {
    if (fail()) throw new Error("/v1/config/ack: 410 not registered");
    sent.push(ack);
  }, log);
  return { a, sent, warnings };
}

test("recorded while unregistered, only the latest of each kind is kept, and sent in order", async () => {
  const { a, sent } = acks();
  a.record("v1");
  a.record("v2", "bad");
  a.record("v3");
  expect(a.pending).toBe(true);
  await a.flush();
  expect(sent).toEqual([{ version: "v2", error: "bad" }, { version: "v3" }]);
  expect(a.pending).toBe(false);
});

test("a new registration is told the latest applied and refused versions again", async () => {
  const { a, sent } = acks();
  a.record("v1");
  a.record("v2", "bad");
  await a.flush();
  a.registered();
  await a.flush();
  expect(sent.slice(2)).toEqual([{ version: "v1" }, { version: "v2", error: "bad" }]);
});

test("a failed delivery is logged and kept for the next flush; flushes never overlap", async () => {
  let failing = true;
  const { a, sent, warnings } = acks(() => failing);
  a.record("v1");
  await a.flush();
  expect(sent).toEqual([]);
  expect(warnings).toEqual(["/v1/config/ack: 410 not registered"]);
  failing = false;
  await Promise.all([a.flush(), a.flush()]);
  expect(sent).toEqual([{ version: "v1" }]);
});
