/**
 * The order of one pass over the topologies: rotated, and reversed every other pass, so
 * across rounds no topology always runs first, last, or right after the same neighbour
 * (as the HTTP/1.1 bench orders its passes).
 */
export function passOrder<T>(items: readonly T[], pass: number): T[] {
  const shift = pass % Math.max(1, items.length);
  const rotated = [...items.slice(shift), ...items.slice(0, shift)];
  return pass % 2 ? rotated.reverse() : rotated;
}
