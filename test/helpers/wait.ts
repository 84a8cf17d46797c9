/** Polls `check` until it returns true or `ms` passes; returns whether it did. */
export async function eventually(check: () => Promise<boolean> | boolean, ms = 10_000, every = 20): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (await check()) return true;
    await Bun.sleep(every);
  }
  return false;
}

/**
 * Polls the synchronous `check` every 5 ms until it returns true or `ms` passes, and once more
 * at the end (a check that comes true at the deadline counts); returns whether it did.
 */
export async function until(check: () => boolean, ms = 5000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (check()) return true;
    await Bun.sleep(5);
  }
  return check();
}
