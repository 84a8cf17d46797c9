/** The control plane's answers are checked for shape first: a wrong one is refused with what is wrong in it. */
import { expect, test } from "bun:test";
import { MAX_LEASE_TTL_MS, MIN_LEASE_TTL_MS, readConfigAnswer, readLease, readSignedCertificate } from "../../../src/proxy/control/answer-shapes.ts";

test("a snapshot is read; fields a newer control plane adds are ignored", () => {
  expect(readConfigAnswer({ version: "abc", documents: [{ kind: "Service" }], bundle: "pem", later: 1 })).toEqual({ kind: "snapshot", version: "abc", documents: [{ kind: "Service" }], bundle: "pem" });
});

test("an answer naming no version is refused with a plain reason and nothing to acknowledge", () => {
  expect(readConfigAnswer({})).toEqual({ kind: "unnamed", reason: "the control plane's answer is not a config snapshot: version: required; documents: required" });
  expect(readConfigAnswer("abc")).toEqual({ kind: "unnamed", reason: "the control plane's answer is not a config snapshot: answer: expected object, got string" });
});

test("an answer naming a version with documents that are not a list is refused as that version", () => {
  expect(readConfigAnswer({ version: "x", documents: "abc" })).toEqual({ kind: "refused", version: "x", reason: "the control plane's answer is not a config snapshot: documents: expected array, got string" });
});

test("a lease's TTL is clamped: none shorter than the control plane's minimum, none so long that heartbeats stop reporting health", () => {
  expect(readLease({ leaseId: "l", ttlMs: 0 })).toEqual({ leaseId: "l", ttlMs: MIN_LEASE_TTL_MS });
  expect(readLease({ leaseId: "l", ttlMs: -5 }).ttlMs).toBe(MIN_LEASE_TTL_MS);
  expect(readLease({ leaseId: "l", ttlMs: 3_000 }).ttlMs).toBe(3_000);
  expect(readLease({ leaseId: "l", ttlMs: 86_400_000 }).ttlMs).toBe(MAX_LEASE_TTL_MS);
  expect(() => readLease({ ttlMs: 3_000 })).toThrow("/v1/register: the control plane's answer is not a lease: leaseId: required");
});

test("a signing answer without a chain is refused, naming the call", () => {
  expect(() => readSignedCertificate({ spiffeId: "spiffe://mesh.local/ns/default/sa/orders", bundle: "pem" }, "/v1/certificates/renew")).toThrow(
    "/v1/certificates/renew: the control plane's answer is not a signed certificate: chain: required",
  );
});
