/**
 * A memo for keys that are few in practice (caller identities): forgotten wholesale once
 * it holds `limit` of them, so a flood of distinct keys cannot grow it without bound.
 */
export function boundedMemo<V>(limit: number, make: (key: string) => V): (key: string) => V {
  const memo = new Map<string, V>();
  return (key) => {
    let value = memo.get(key);
    if (value === undefined) {
      if (memo.size >= limit) memo.clear();
      memo.set(key, (value = make(key)));
    }
    return value;
  };
}
