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

t.test("batcher - jobs that resubmit as soon as their step returns fill one batch instead of taking turns", async (t) => {
  // Eight jobs, each a loop of steps (like the Euler steps of a CFM window): the next step is submitted
  // from the continuation of the previous one's result. The first job starts alone, the others while its
  // step runs, so a batcher that runs whatever waits at the first resubmission splits them into groups.
  const sizes: number[] = [];
  const b = new MicroBatcher<number, number>(
    async (items) => {
      sizes.push(items.length);
      await new Promise((r) => setTimeout(r, 2));
      return items;
    },
    { maxBatch: 8, concurrency: 1 },
  );
  // As in the CFM loop: the step's result passes through a wrapper (a few promise hops) before the next submit.
  const step = async (id: number) => {
    const r = await b.submit(id);
    await Promise.resolve();
    return r;
  };
  const job = async (id: number) => {
    for (let s = 0; s < 12; s++) t.equal(await step(id), id);
  };
  const jobs = [job(0)];
  for (let i = 1; i < 8; i++) jobs.push(job(i));
  await Promise.all(jobs);
  t.equal(sizes.reduce((a, x) => a + x, 0), 8 * 12, "every step ran once");
  // The first job's first step runs alone (nothing else waits yet); its second step joins the seven
  // that waited meanwhile, and from then on all eight move together; the other seven's last step is left.
  t.same(sizes, [1, ...Array(11).fill(8), 7], "full batches once all eight are under way");
});

t.test("batcher - maxWaitMs holds a batch that is not full until its oldest item has waited that long", async (t) => {
  const calls: { items: number[]; at: number }[] = [];
  const b = new MicroBatcher<number, number>(
    async (items) => {
      calls.push({ items, at: Date.now() });
      return items;
    },
    { maxBatch: 3, concurrency: 1, maxWaitMs: 150 },
  );
  const t0 = Date.now();
  const a = b.submit(1);
  await new Promise((r) => setTimeout(r, 40));
  const c = b.submit(2);
  t.same(calls, [], "nothing ran while the batch could still grow");
  t.same(await Promise.all([a, c]), [1, 2]);
  t.same(calls.map((x) => x.items), [[1, 2]], "the two items ran as one batch");
  t.ok(calls[0].at - t0 >= 145, `it ran when the first item had waited maxWaitMs (${calls[0].at - t0} ms)`);
  // a full batch does not wait
  const t1 = Date.now();
  const full = await Promise.all([3, 4, 5].map((x) => b.submit(x)));
  t.same(full, [3, 4, 5]);
  t.same(calls[1].items, [3, 4, 5]);
  t.ok(calls[1].at - t1 < 100, `a full batch ran at once (${calls[1].at - t1} ms)`);
});
