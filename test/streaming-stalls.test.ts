/** The playback-continuity figure of tools/bench-stream.ts: what a player starting at the first chunk waits for. */
import t from "tap";
import { playbackStalls } from "../tools/bench-stream.js";

t.test("streaming stalls - a player in order at real time from the first chunk", async (t) => {
  t.same(playbackStalls([]), { stallMs: 0, stalls: 0 }, "no audio, no wait");
  t.same(playbackStalls([{ atMs: 500, durMs: 1000 }, { atMs: 900, durMs: 1000 }, { atMs: 2400, durMs: 500 }]), { stallMs: 0, stalls: 0 }, "each chunk there before the one before ends");
  // plays 1000–1600, waits for 2000 (400), plays to 2100, the next (at 1500) is there, plays to 2300, waits for 5300 (3000)
  const chunks = [
    { atMs: 1000, durMs: 600 },
    { atMs: 2000, durMs: 100 },
    { atMs: 1500, durMs: 200 },
    { atMs: 5300, durMs: 50 },
  ];
  t.same(playbackStalls(chunks), { stallMs: 3400, stalls: 2 });
  t.same(playbackStalls([{ atMs: 0, durMs: 100 }, { atMs: 100.5, durMs: 100 }]), { stallMs: 0, stalls: 0 }, "under 1 ms is not a wait");
});
