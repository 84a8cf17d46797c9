import { describe, expect, test } from "bun:test";
import { compileFault, injectFault } from "../../src/proxy/fault.ts";
import type { ErrorParts } from "../../src/proxy/errors.ts";
import { manifestIssues } from "../helpers/policies.ts";

/** Rolls `fault` once with the given random draws (delay first, then abort); what happened. */
function roll(spec: Parameters<typeof compileFault>[0], draws: number[]) {
  const out: { sent: boolean; answer?: ErrorParts; waited: boolean } = { sent: false, waited: false };
  const wait = injectFault(compileFault(spec, "shop/r"), () => (out.sent = true), (a) => (out.answer = a), () => draws.shift()!);
  out.waited = wait !== undefined;
  wait?.cancel();
  return out;
}

describe("injectFault", () => {
  test("each part is rolled by its percent: an abort answers its status, never sends", () => {
    const abort = { abort: { status: 503, percent: 25 } };
    expect(roll(abort, [0.24])).toMatchObject({ sent: false, waited: false, answer: { status: 503, headers: { "x-mesh-error": "fault" } } });
    expect(roll(abort, [0.25])).toEqual({ sent: true, waited: false });
    expect(roll({ abort: { status: 418, percent: 0 } }, [0])).toEqual({ sent: true, waited: false });
  });

  test("a delay holds the call; cancelled while it waits, neither sends nor answers", () => {
    expect(roll({ delay: { fixed: 1000, percent: 50 } }, [0.4])).toEqual({ sent: false, waited: true });
    expect(roll({ delay: { fixed: 1000, percent: 50 } }, [0.6])).toEqual({ sent: true, waited: false });
  });

  test("after its delay the abort is rolled, then the call is sent or answered", async () => {
    const events: string[] = [];
    const draws = [0, 0.9];
    const wait = injectFault(compileFault({ delay: { fixed: 30, percent: 100 }, abort: { status: 500, percent: 50 } }, "shop/r"), () => events.push("sent"), () => events.push("aborted"), () => draws.shift()!);
    expect(events).toEqual([]);
    await Bun.sleep(60);
    expect(events).toEqual(["sent"]);
    expect(wait!.cancel()).toBe(false);
  });
});

describe("schema", () => {
  test("a fault needs a delay or an abort; statuses, delays and percents are checked", () => {
    const rule = (fault: Record<string, unknown>) => ({ service: "payments", rules: [{ backends: [{ service: "payments" }], fault }] });
    expect(manifestIssues("HTTPRoute", rule({}))).toEqual(["spec.rules[0].fault: give delay, abort or both"]);
    expect(manifestIssues("HTTPRoute", rule({ abort: { status: 200 }, delay: { fixed: "0s", percent: 101 } }))).toEqual([
      "spec.rules[0].fault.delay.fixed: expected a delay above 0 and at most 5m",
      "spec.rules[0].fault.delay.percent: expected number ≤ 100",
      "spec.rules[0].fault.abort.status: expected integer ≥ 400",
    ]);
  });
});
