import t from "tap";
import { MicroBatcher } from "../shared/batcher.js";

t.test("batcher - a lone item runs at once; items arriving while busy run together, by key, in order", async (t) => {
  const calls: number[][] = [];
  let release: (() => void) | undefined;
  const b = new MicroBatcher<number, number>(
    async (items) => {
      calls.push(items);
      if (calls.length === 1) await new Promise<void>((r) => (release = r));
      return items.map((x) => x * 10);
    },
    { maxBatch: 3, concurrency: 1, key: (x) => x % 2 },
  );
  const first = b.submit(1);
  const rest = [2, 4, 3, 6, 8, 5].map((x) => b.submit(x));
  t.same(calls, [[1]], "the first item did not wait for company");
  release!();
  t.same(await Promise.all([first, ...rest]), [10, 20, 40, 30, 60, 80, 50], "each caller gets its own result");
  t.same(calls, [[1], [2, 4, 6], [3, 5], [8]], "batches by key, capped at maxBatch, oldest key first");
  t.same(Object.fromEntries(b.histogram), { 1: 2, 2: 1, 3: 1 });
});

t.test("batcher - a failing batch rejects its callers only", async (t) => {
  const b = new MicroBatcher<number, number>(async (items) => {
    if (items.includes(13)) throw new Error("bad");
    return items;
  }, { maxBatch: 1, concurrency: 2 });
  await t.rejects(b.submit(13), /bad/);
  t.equal(await b.submit(7), 7);
});
