/**
 * A header value the proxy writes or matches as given: printable ASCII with no space at
 * either end. Anything else could split a line, be trimmed differently by the service, or
 * never equal the bytes a client sends.
 */
const PLAIN = /^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/;

export function isPlainHeaderValue(text: string): boolean {
  return PLAIN.test(text);
}
