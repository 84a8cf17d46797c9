/** What a SlotList holds: its index there, -1 when in none. In one list at a time. */
export interface Slotted {
  slot: number;
}

/**
 * A set of objects that carry their own index in it: add and delete are O(1) and
 * allocate nothing, and a delete swaps the last member into the gap (order is not kept).
 *
 * Why not a Set: JSC keeps a Set's deleted entries until it rehashes, so a Set with an
 * add and a delete per request (or per connection) grew its storage between
 * collections, and every young collection carried ~0.5 MB of it into the old
 * generation, which then needed full collections.
 */
export class SlotList<T extends Slotted> {
  private readonly items: T[] = [];

  get size(): number {
    return this.items.length;
  }

  add(item: T): void {
    if (item.slot >= 0) return;
    item.slot = this.items.length;
    this.items.push(item);
  }

  /** False when it was not in the list. */
  delete(item: T): boolean {
    const i = item.slot;
    if (i < 0 || this.items[i] !== item) return false;
    const last = this.items.pop()!;
    if (last !== item) {
      this.items[i] = last;
      last.slot = i;
    }
    item.slot = -1;
    return true;
  }

  /** A copy of the members: iterate over it when they may leave meanwhile. */
  toArray(): T[] {
    return this.items.slice();
  }
}
