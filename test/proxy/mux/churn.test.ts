/** The rapid-reset rule of mux sessions (src/proxy/transport/mux/churn.ts), on its own. */
import { expect, test } from "bun:test";
import { ChurnGuard } from "../../../src/proxy/transport/mux/churn.ts";

function opened(n: number): ChurnGuard {
  const g = new ChurnGuard();
  for (let i = 0; i < n; i++) g.streamOpened();
  return g;
}

test("under 500 streams opened, no number of early busy ends trips it", () => {
  const g = opened(499);
  for (let i = 0; i < 499; i++) expect(g.endedBusy(0)).toBe(false);
});

test("from 500 streams opened, half of them ended busy within 1 s trips it; one fewer does not", () => {
  const g = opened(500);
  for (let i = 0; i < 249; i++) expect(g.endedBusy(999)).toBe(false);
  expect(g.endedBusy(10)).toBe(true);
});

test("streams ended busy after a second of life do not count (a client's timeouts, cancellations)", () => {
  const g = opened(1000);
  for (let i = 0; i < 1000; i++) expect(g.endedBusy(1000)).toBe(false);
});
