/** Polls `check` until it returns true or `ms` passes; returns whether it did. */
export async function eventually(check: () => Promise<boolean> | boolean, ms = 10_000, every = 20): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (await check()) return true;
    await Bun.sleep(every);
  }
  return false;
}
