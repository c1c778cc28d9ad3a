/** Sorted distinct values of both maps (the labels present in either). */
export function labelsPresent(a: ArrayLike<number>, b: ArrayLike<number>): number[] {
  const set = new Set<number>();
  for (let i = 0; i < a.length; i++) set.add(a[i]!);
  for (let i = 0; i < b.length; i++) set.add(b[i]!);
  return [...set].sort((x, y) => x - y);
}
