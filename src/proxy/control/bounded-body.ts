/**
 * A control plane's answer read up to a byte cap (core/capped-body.ts): one of any size (a
 * broken or hostile control plane, or something in its place) would otherwise be held
 * whole in the sidecar's memory.
 */
import { cappedText } from "../../core/capped-body.ts";

export class AnswerTooLarge extends Error {
  override readonly name = "AnswerTooLarge";
}

/** The body as text; past `maxBytes` (said by Content-Length, or counted as it arrives) the rest is cancelled unread. */
export function boundedText(res: Response, maxBytes: number, what: string): Promise<string> {
  return cappedText(res, maxBytes, (declared) => new AnswerTooLarge(`${what}: the answer is ${declared === undefined ? `past ${mib(maxBytes)}` : `${declared} bytes`}; at most ${mib(maxBytes)} is read`));
}

const mib = (bytes: number) => (bytes >= 1 << 20 ? `${bytes / (1 << 20)} MiB` : `${bytes} bytes`);
