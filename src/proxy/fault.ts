/**
 * An HTTPRoute rule's fault injection (Istio's HTTPFaultInjection), rolled per call by the
 * caller's sidecar: a delay before the call is sent, then an abort answered instead of
 * sending it. Both come before the destination's breaker, as Envoy's fault filter comes
 * before its router: a faulted call takes no slot, and a delayed one none while it waits.
 */
import type { z } from "zod";
import type { FaultInjection } from "../config/kinds/http-route.ts";
import { errorParts, type ErrorParts } from "./errors.ts";

export interface CompiledFault {
  delayMs: number;
  /** Share of calls delayed, 0-1. */
  delayShare: number;
  /** The status answered, 0 without an abort. */
  abortStatus: number;
  abortShare: number;
  /** namespace/name of the route, for the answer's detail. */
  route: string;
}

export function compileFault(f: z.output<typeof FaultInjection>, route: string): CompiledFault {
  return {
    delayMs: f.delay?.fixed ?? 0,
    delayShare: (f.delay?.percent ?? 0) / 100,
    abortStatus: f.abort?.status ?? 0,
    abortShare: (f.abort?.percent ?? 0) / 100,
    route,
  };
}

/** A delayed call's wait. */
export interface FaultWait {
  /** Stops the wait if it is still on (the client left): true then, and neither `send` nor `abort` is called. */
  cancel(): boolean;
}

/**
 * Rolls `f` for one call: after its delay if one is rolled, `abort` with the answer if an
 * abort is rolled, else `send`. Returns the wait, or undefined when the call was not held.
 */
export function injectFault(f: CompiledFault, send: () => void, abort: (answer: ErrorParts) => void, random: () => number = Math.random): FaultWait | undefined {
  const abortOrSend = () => {
    if (f.abortStatus !== 0 && random() < f.abortShare) abort({ ...errorParts("fault", `aborted by HTTPRoute ${f.route}'s fault injection`), status: f.abortStatus });
    else send();
  };
  if (f.delayMs === 0 || random() >= f.delayShare) return void abortOrSend();
  let waiting = true;
  const timer = setTimeout(() => {
    waiting = false;
    abortOrSend();
  }, f.delayMs);
  return {
    cancel() {
      if (!waiting) return false;
      waiting = false;
      clearTimeout(timer);
      return true;
    },
  };
}
