/** The audit log's refusal lines are budgeted per window; what is left out is counted, and said in one line. */
import { expect, test } from "bun:test";
import { AuditLog } from "../../src/control-plane/audit.ts";
import { RefusalThrottle, type Suppressed } from "../../src/control-plane/refusal-throttle.ts";
import { eventually } from "../helpers/wait.ts";
import type { Logger } from "../../src/core/log.ts";

test("past its budget a window's refusals are counted, and one summary names the busiest clients", async () => {
  const summaries: Suppressed[] = [];
  const throttle = new RefusalThrottle((s) => summaries.push(s), { linesPerWindow: 3, windowMs: 200 });
  const admitted = ["10.0.0.1", "10.0.0.1", "10.0.0.2", "10.0.0.1", "10.0.0.3", "10.0.0.3", "10.0.0.3"].map((c) => throttle.admit(c));
  expect(admitted).toEqual([true, true, true, false, false, false, false]);
  expect(summaries).toEqual([]);
  expect(await eventually(() => summaries.length === 1, 2000)).toBe(true);
  expect(summaries[0]).toMatchObject({ count: 4, clients: { "10.0.0.3": 3, "10.0.0.1": 1 } });
  expect(Object.keys(summaries[0]!.clients)).toEqual(["10.0.0.3", "10.0.0.1"]);
  // A new window has its budget again.
  expect(throttle.admit("10.0.0.4")).toBe(true);
});

test("a window that left nothing out writes no summary; flush() writes a pending one at once", async () => {
  const summaries: Suppressed[] = [];
  const throttle = new RefusalThrottle((s) => summaries.push(s), { linesPerWindow: 1, windowMs: 60_000 });
  expect(throttle.admit("a")).toBe(true);
  throttle.flush();
  expect(summaries).toEqual([]);
  expect(throttle.admit("b")).toBe(false);
  throttle.flush();
  expect(summaries.map((s) => s.count)).toEqual([1]);
});

test("the audit log counts every refusal in its counts, whether its line was written or left out", () => {
  const lines: Record<string, unknown>[] = [];
  const log = { warn: (o: Record<string, unknown>) => void lines.push(o), info: () => {} } as unknown as Logger;
  const audit = new AuditLog(log, { linesPerWindow: 2, windowMs: 60_000 });
  for (let i = 0; i < 5; i++) audit.refused({ via: "bootstrap", reason: "join token refused", peer: `198.51.100.7:${40000 + i}` });
  expect(audit.counts.refused.bootstrap).toBe(5);
  expect(lines.filter((l) => l.audit === "certificate-refused").length).toBe(2);
  audit.flush();
  expect(lines.at(-1)).toMatchObject({ audit: "certificate-refusals-left-out", count: 3, clients: { "198.51.100.7": 3 } });
});
