/**
 * Text from elsewhere (a proxy's refusal reason, a peer's certificate field) made safe to
 * print on an operator's terminal: control characters (C0, DEL, C1: newlines, escape
 * sequences that move the cursor or retitle the window) and the bidirectional overrides
 * that reorder what is shown are written as escapes, so a line cannot forge, hide or
 * rearrange others.
 */
const UNPRINTABLE = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

export function printable(text: string): string {
  return text.replace(UNPRINTABLE, (c) => {
    const code = c.charCodeAt(0);
    return code < 0x100 ? `\\x${code.toString(16).toUpperCase().padStart(2, "0")}` : `\\u${code.toString(16).toUpperCase().padStart(4, "0")}`;
  });
}
