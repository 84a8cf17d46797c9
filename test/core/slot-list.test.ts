import { describe, expect, test } from "bun:test";
import { SlotList } from "../../src/core/slot-list.ts";
import { seeded } from "../helpers/prng.ts";

const item = (id: number) => ({ id, slot: -1 });

describe("SlotList", () => {
  test("holds each member once, and knows who is not a member", () => {
    const list = new SlotList<ReturnType<typeof item>>();
    const a = item(1);
    const b = item(2);
    list.add(a);
    list.add(a);
    list.add(b);
    expect(list.size).toBe(2);
    expect(list.delete(item(3))).toBe(false);
    expect(list.delete(a)).toBe(true);
    expect(list.delete(a)).toBe(false);
    expect(list.toArray()).toEqual([b]);
    expect(a.slot).toBe(-1);
  });

  test("a member of another list is neither taken nor removed", () => {
    const one = new SlotList<ReturnType<typeof item>>();
    const two = new SlotList<ReturnType<typeof item>>();
    const a = item(1);
    const b = item(2);
    one.add(a);
    two.add(b);
    expect(two.delete(a)).toBe(false);
    expect(one.toArray()).toEqual([a]);
  });

  test("matches a Set through random adds and deletes", () => {
    const random = seeded(7);
    const items = Array.from({ length: 40 }, (_, i) => item(i));
    const list = new SlotList<ReturnType<typeof item>>();
    const model = new Set<ReturnType<typeof item>>();
    for (let step = 0; step < 5000; step++) {
      const it = items[Math.floor(random() * items.length)]!;
      if (random() < 0.5) {
        list.add(it);
        model.add(it);
      } else expect(list.delete(it)).toBe(model.delete(it));
      expect(list.size).toBe(model.size);
    }
    expect(new Set(list.toArray())).toEqual(model);
    list.toArray().forEach((it, i) => expect(it.slot).toBe(i));
  });

  test("toArray is a copy: members may leave while it is walked", () => {
    const list = new SlotList<ReturnType<typeof item>>();
    const all = [item(1), item(2), item(3)];
    for (const it of all) list.add(it);
    for (const it of list.toArray()) list.delete(it);
    expect(list.size).toBe(0);
  });
});
