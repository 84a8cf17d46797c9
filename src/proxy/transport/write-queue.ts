/** Writing to a socket that may take less than it is given: the rest waits, in order, for its drain event. */

/** What can be written to: a Bun socket, whose write returns the bytes it took (negative once closed). */
export interface Writable {
  write(data: Uint8Array): number;
}

/** Writes `queue` (after it, `chunk`) as far as the socket takes it; the rest stays queued. True when nothing is left. */
export function writeQueued(sock: Writable, queue: Uint8Array[], chunk?: Uint8Array): boolean {
  if (chunk !== undefined) queue.push(chunk);
  while (queue.length > 0) {
    const head = queue[0]!;
    const n = sock.write(head);
    if (n < head.byteLength) {
      queue[0] = head.subarray(Math.max(n, 0));
      return false;
    }
    queue.shift();
  }
  return true;
}
