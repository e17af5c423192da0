/**
 * Continuous (iteration-level) batching of T2S decoding across requests.
 *
 * One engine owns the GPT sessions and the KV cache of every running sequence. Each call of `step()`
 * is one iteration: admit waiting requests (encoder + prefill, one request each; with
 * `EngineOptions.prefill` they run in another thread and the row joins the step after they are done,
 * so the running rows never wait for a newcomer's prefill), sample the next token
 * of every running row from its last logits (per-row parameters and random state, upstream's order),
 * retire rows that stopped, then run ONE batched t2s_step over all rows that continue. Requests join and
 * leave at any step.
 *
 * The cache is batch-major and compact: per layer one buffer [maxRows, heads, capacity, headDim]; the
 * running rows occupy slots 0..n−1, so the step graph reads a prefix view of the buffer, never a copy.
 * A retiring row's slot is refilled by moving the last row into it (one row copy). All rows share one
 * capacity, the positions per (row, head) the step graph reads and masks: it follows the longest
 * running row in steps of CAPACITY_GRAIN (the rows are re-laid in place, inside the buffer, when it
 * changes), because every step reads the whole capacity of every row and the attention's share of a
 * step grows with it. The buffer itself grows by doubling when the capacity would not fit; a per-slot
 * mask marks live positions.
 * Rows are independent in the graph (see docs/models.md), so a request's tokens are the same whether it
 * runs alone or in any batch.
 */
import * as ort from "onnxruntime-node";
import type { Manifest } from "../../shared/manifest.js";
import { Rng, sampleToken, type SamplingParams } from "../../shared/sampling.js";

export const MAX_TOKENS = 1500;
/** The KV capacity the step graph reads moves in steps of this many positions (see the header). */
export const CAPACITY_GRAIN = 32;

export interface GptRequest {
  id: string;
  promptIds: Int32Array;
  textIds: Int32Array;
  prompts: Int32Array;
  sampling: SamplingParams;
  seed: number;
  /** zh BERT rows, phone-major [promptIds.length, bertDim] / [textIds.length, bertDim]; absent: zeros. */
  promptBert?: Float32Array;
  textBert?: Float32Array;
  /** Streaming: token counts (ascending) at which the tokens so far are reported (takePartials). */
  emitAt?: number[];
  /**
   * Streaming: the request this segment belongs to (shared by its segments) and the segment's index.
   * The first audio comes first: while segment 0 has not reached its first `emitAt` count, the other
   * segments of its request wait for admission (see #nextAdmissible).
   */
  group?: string;
  order?: number;
  /** Streaming: the request's speed_factor; a token plays 1/speed as long as at speed 1 (pacing). */
  speed?: number;
}

export interface GptPartial {
  id: string;
  tokens: Int32Array;
}

export interface GptResult {
  id: string;
  tokens: Int32Array;
  stoppedBy: "eos" | "length-policy" | "max-tokens" | "aborted";
  /** ms from add() to admission, and from admission to the end. */
  queueMs: number;
  computeMs: number;
  /** Largest and mean batch size of the decode steps this request took part in. */
  maxBatch: number;
  meanBatch: number;
  error?: string;
}

/** A request whose prefill runs elsewhere (EngineOptions.prefill); `settled` resolves when out or error is set. */
interface Pending {
  req: GptRequest;
  started: number;
  settled: Promise<void>;
  out?: PrefillOut;
  error?: string;
}

interface Row {
  req: GptRequest;
  slot: number;
  /** Cache positions in use (prefix + generated tokens fed back). */
  len: number;
  t25: number;
  history: number[];
  generated: number[];
  rng: Rng;
  limit: number;
  byPolicy: boolean;
  logits: Float32Array;
  addedAt: number;
  admittedAt: number;
  batchSum: number;
  batchSteps: number;
  maxBatch: number;
  emitIdx: number;
}

/** Running average that follows load changes within a few samples. */
function average(prev: number | undefined, x: number): number {
  return prev === undefined ? x : 0.7 * prev + 0.3 * x;
}

export type GptSessions = Record<"t2s_encoder" | "t2s_prefill" | "t2s_step", ort.InferenceSession>;
export type PrefillSessions = Pick<GptSessions, "t2s_encoder" | "t2s_prefill">;

/** What a prefill gives a new row: the logits of its first token and its K/V per layer, [heads, positions, headDim] each. */
export interface PrefillOut {
  logits: Float32Array;
  k: Float32Array[];
  v: Float32Array[];
}

/** The encoder and the prefill of one request: everything a row needs before its first decode step. */
export async function runPrefill(s: PrefillSessions, manifest: Manifest, req: GptRequest): Promise<PrefillOut> {
  const d = manifest.dims.t2s;
  const nr = req.promptIds.length;
  const nt = req.textIds.length;
  const i64 = (a: Int32Array) => BigInt64Array.from(a, (x) => BigInt(x));
  const enc = await s.t2s_encoder.run({
    ref_seq: new ort.Tensor("int64", i64(req.promptIds), [1, nr]),
    text_seq: new ort.Tensor("int64", i64(req.textIds), [1, nt]),
    ref_bert: new ort.Tensor("float32", bertOrZeros(req.promptBert, nr, d.bertDim, "promptBert"), [nr, d.bertDim]),
    text_bert: new ort.Tensor("float32", bertOrZeros(req.textBert, nt, d.bertDim, "textBert"), [nt, d.bertDim]),
  });
  const pre = await s.t2s_prefill.run({
    x: enc.x,
    prompts: new ort.Tensor("int64", i64(req.prompts), [1, req.prompts.length]),
  });
  const out: PrefillOut = { logits: pre.logits.data as Float32Array, k: [], v: [] };
  for (let l = 0; l < d.layers; l++) {
    out.k.push(pre[`k_${l}`].data as Float32Array);
    out.v.push(pre[`v_${l}`].data as Float32Array);
  }
  return out;
}

export function tokenLimit(manifest: Manifest, textPhones: number): { limit: number; byPolicy: boolean } {
  const p = manifest.lengthPolicy;
  if (!p) return { limit: MAX_TOKENS, byPolicy: false };
  return { limit: Math.min(MAX_TOKENS, Math.max(p.minTokens, Math.ceil(p.tokensPerPhone * textPhones))), byPolicy: true };
}

function bertOrZeros(rows: Float32Array | undefined, n: number, dim: number, name: string): Float32Array {
  if (!rows) return new Float32Array(n * dim);
  if (rows.length !== n * dim) throw new Error(`${name} has ${rows.length} values, expected ${n} × ${dim}`);
  return rows;
}

export interface EngineOptions {
  /** Rows decoded together at most. */
  maxRows: number;
  /** New requests prefilled per iteration at most (prefill is one request at a time; this bounds the stall it causes). */
  admitPerStep?: number;
  /** KV cache bytes the engine may hold; admission waits beyond it. */
  kvBudgetBytes?: number;
  initialCapacity?: number;
  now?: () => number;
  /**
   * Runs a request's encoder and prefill somewhere else (another thread: prefill-worker.ts). The engine
   * then keeps decoding its running rows while a newcomer is prefilled, and the row joins at the first
   * step after its prefill is done. Absent: the engine prefills with its own sessions, between steps.
   */
  prefill?: (req: GptRequest) => Promise<PrefillOut>;
  /** Told of every prefill that gave a row, with its times on the `now` clock: admitted (handed to the prefill) and joined. */
  onPrefill?: (p: { id: string; startMs: number; endMs: number }) => void;
  /** Streaming: admit a streamed request's later segments by its playback deadline (see #paced). Off when absent. */
  pacing?: PacingOptions;
}

/**
 * Playback-paced admission of a streamed request's later segments (docs/streaming.md, "Scheduling").
 * The request's audio is taken to start playing when segment 0 reaches its first emit count and to
 * consume `tokensPerSecond` tokens a second from then on.
 */
export interface PacingOptions {
  /** Tokens per second of audio at speed 1 (25 for these models); a request's `speed` scales it. */
  tokensPerSecond?: number;
  /**
   * A sibling is admitted only while the playing row's lead covers a prefill plus what the decode steps
   * of the larger batch would lose against real time, counted over the playing row's remaining tokens
   * (at most its length limit) but over no more than `horizonMs` of steps.
   */
  horizonMs?: number;
  /** A held sibling is admitted anyway this long after it could first have been (bounds the loss in total time). */
  maxHoldMs?: number;
}

export class GptEngine {
  readonly #s: Pick<GptSessions, "t2s_step">;
  readonly #m: Manifest;
  readonly #o: Required<Omit<EngineOptions, "pacing" | "prefill" | "onPrefill">>;
  readonly #onPrefill: EngineOptions["onPrefill"];
  readonly #prefill: (req: GptRequest) => Promise<PrefillOut>;
  readonly #deferred: boolean;
  /** Deferred prefills: started, not yet joined (in start order). */
  #pending: Pending[] = [];
  readonly #waiting: GptRequest[] = [];
  readonly #addedAt = new Map<string, number>();
  readonly #aborted = new Set<string>();
  readonly #pacing: Required<PacingOptions> | undefined;
  /** Measured decode-step ms per batch size and prefill ms (encoder + prefill), running averages. */
  readonly #stepMs = new Map<number, number>();
  #prefillMs: number | undefined;
  /** Streamed requests: when segment 0 reached its first count (playback starts), and the tokens of finished segments by index. */
  readonly #groups = new Map<string, { playStart?: number; done: Map<number, number> }>();
  #partials: GptPartial[] = [];
  #rows: Row[] = [];
  /** Positions per (row, head) in use: the stride of the cache and the step graph's Kc. */
  #capacity: number;
  /** Positions per (row, head) the buffers have room for (≥ #capacity). */
  #room: number;
  #k: Float32Array[] = [];
  #v: Float32Array[] = [];
  #mask: Float32Array;
  /** Counters for metrics. */
  readonly stats = { steps: 0, tokens: 0, prefills: 0, batchHistogram: new Map<number, number>(), lastStepMs: 0 };

  constructor(sessions: Pick<GptSessions, "t2s_step"> & Partial<PrefillSessions>, manifest: Manifest, opts: EngineOptions) {
    this.#s = sessions;
    this.#m = manifest;
    const { pacing, prefill, onPrefill, ...rest } = opts;
    this.#onPrefill = onPrefill;
    this.#o = {
      admitPerStep: 2,
      kvBudgetBytes: Number.POSITIVE_INFINITY,
      initialCapacity: 512,
      now: () => performance.now(),
      ...rest,
    };
    this.#deferred = prefill !== undefined;
    if (prefill) this.#prefill = prefill;
    else {
      const { t2s_encoder, t2s_prefill } = sessions;
      if (!t2s_encoder || !t2s_prefill) throw new Error("GptEngine needs t2s_encoder and t2s_prefill sessions, or a prefill function");
      this.#prefill = (req) => runPrefill({ t2s_encoder, t2s_prefill }, manifest, req);
    }
    this.#pacing = pacing ? { tokensPerSecond: 25, horizonMs: 2000, maxHoldMs: 10_000, ...pacing } : undefined;
    this.#room = this.#o.initialCapacity;
    this.#capacity = Math.min(CAPACITY_GRAIN, this.#room);
    this.#mask = new Float32Array(0);
    this.#alloc(this.#room);
  }

  get running(): number {
    return this.#rows.length;
  }

  /** Requests whose prefill runs elsewhere and that join the batch when it is done. */
  get prefilling(): number {
    return this.#pending.length;
  }

  get waiting(): number {
    return this.#waiting.length;
  }

  /** Request ids of the rows in the running batch, in slot order (metrics, trace links). */
  get rowIds(): string[] {
    return this.#rows.map((r) => r.req.id);
  }

  get idle(): boolean {
    return this.#rows.length === 0 && this.#waiting.length === 0 && this.#pending.length === 0;
  }

  get kvBytes(): number {
    const d = this.#m.dims.t2s;
    return 2 * d.layers * this.#o.maxRows * d.heads * this.#room * d.headDim * 4;
  }

  /** The KV positions per row the decode step reads now (metrics, tests). */
  get capacity(): number {
    return this.#capacity;
  }

  add(req: GptRequest): void {
    this.#addedAt.set(req.id, this.#o.now());
    this.#waiting.push(req);
  }

  abort(id: string): void {
    this.#aborted.add(id);
  }

  /** Streaming: the tokens so far of rows that reached one of their `emitAt` counts since the last call. */
  takePartials(): GptPartial[] {
    const p = this.#partials;
    this.#partials = [];
    return p;
  }

  /** New buffers with room for `room` positions per (row, head); the rows in use are copied over (same stride). */
  #alloc(room: number): void {
    const d = this.#m.dims.t2s;
    const size = this.#o.maxRows * d.heads * room * d.headDim;
    const used = this.#rows.length * d.heads * this.#capacity * d.headDim;
    const old = { k: this.#k, v: this.#v, mask: this.#mask };
    this.#k = Array.from({ length: d.layers }, (_, l) => {
      const a = new Float32Array(size);
      if (old.k.length) a.set(old.k[l].subarray(0, used));
      return a;
    });
    this.#v = Array.from({ length: d.layers }, (_, l) => {
      const a = new Float32Array(size);
      if (old.v.length) a.set(old.v[l].subarray(0, used));
      return a;
    });
    this.#mask = new Float32Array(this.#o.maxRows * room);
    this.#mask.set(old.mask.subarray(0, this.#rows.length * this.#capacity));
    this.#room = room;
  }

  /**
   * Change the capacity (the stride) to `cap` ≤ #room, in place: each running row's live positions move
   * to their new place (from the last block down when growing, from the first up when shrinking, so no
   * block is overwritten before it moved), and the positions past a row's length are masked.
   */
  #restride(cap: number): void {
    const old = this.#capacity;
    if (cap === old) return;
    const d = this.#m.dims.t2s;
    const Dh = d.headDim;
    const n = this.#rows.length;
    const order = Array.from({ length: n * d.heads }, (_, i) => i);
    if (cap > old) order.reverse();
    const bufs = [...this.#k, ...this.#v];
    for (const i of order) {
      const len = this.#rows[Math.floor(i / d.heads)].len;
      for (const buf of bufs) buf.copyWithin(i * cap * Dh, i * old * Dh, (i * old + len) * Dh);
    }
    for (const s of order.filter((i) => i < n)) {
      const len = this.#rows[s].len;
      this.#mask.copyWithin(s * cap, s * old, s * old + len);
      this.#mask.fill(0, s * cap + len, (s + 1) * cap);
    }
    this.#capacity = cap;
  }

  /** Write `n` positions, given per layer as [heads, n, headDim], into a slot at position `at`. */
  #write(slot: number, at: number, ks: Float32Array[], vs: Float32Array[], n: number): void {
    const d = this.#m.dims.t2s;
    const cap = this.#capacity;
    for (let l = 0; l < d.layers; l++)
      for (let h = 0; h < d.heads; h++) {
        const src = h * n * d.headDim;
        const dst = ((slot * d.heads + h) * cap + at) * d.headDim;
        this.#k[l].set(ks[l].subarray(src, src + n * d.headDim), dst);
        this.#v[l].set(vs[l].subarray(src, src + n * d.headDim), dst);
      }
    this.#mask.fill(1, slot * cap + at, slot * cap + at + n);
  }

  /** Move the row in slot `from` into slot `to` (compaction after a row leaves). */
  #move(from: number, to: number): void {
    const d = this.#m.dims.t2s;
    const per = d.heads * this.#capacity * d.headDim;
    for (let l = 0; l < d.layers; l++) {
      this.#k[l].copyWithin(to * per, from * per, (from + 1) * per);
      this.#v[l].copyWithin(to * per, from * per, (from + 1) * per);
    }
    this.#mask.copyWithin(to * this.#capacity, from * this.#capacity, (from + 1) * this.#capacity);
  }

  /**
   * Fit the capacity to `positions` (the longest row's, after the next write): up to the next multiple
   * of CAPACITY_GRAIN plus one grain of headroom when it must grow (the buffer doubles if that does not fit
   * its room), down when it is two grains or more above that multiple (`shrink`).
   */
  #fit(positions: number, shrink: boolean): void {
    const target = Math.ceil(positions / CAPACITY_GRAIN) * CAPACITY_GRAIN;
    if (target > this.#capacity) {
      if (target > this.#room) {
        let room = this.#room;
        while (room < target) room *= 2;
        this.#alloc(room);
      }
      this.#restride(Math.min(target + CAPACITY_GRAIN, this.#room));
    } else if (shrink && this.#capacity >= target + 2 * CAPACITY_GRAIN) this.#restride(target + CAPACITY_GRAIN);
  }

  /** KV bytes the buffers would take with room for `positions` (the budget check of admission). */
  #bytesFor(positions: number): number {
    const d = this.#m.dims.t2s;
    let room = this.#room;
    while (room < positions) room *= 2;
    return 2 * d.layers * this.#o.maxRows * d.heads * room * d.headDim * 4;
  }

  /** Prefill `req` with the engine's own sessions, now (the batch waits), and return its row. */
  async #admit(req: GptRequest): Promise<Row> {
    const started = this.#o.now();
    return this.#join(req, await this.#prefill(req), started);
  }

  /** A prefilled request becomes a row in the next free slot. */
  #join(req: GptRequest, pre: PrefillOut, started: number): Row {
    const d = this.#m.dims.t2s;
    const n = req.promptIds.length + req.textIds.length;
    const t25 = req.prompts.length;
    for (const [name, parts] of [["k", pre.k], ["v", pre.v]] as const)
      if (parts.length !== d.layers || parts.some((x) => x.length !== d.heads * (n + t25) * d.headDim))
        throw new Error(`prefill gave ${name} of the wrong shape (${parts.length} layers, expected ${d.layers} × ${d.heads} × ${n + t25} × ${d.headDim})`);
    if (pre.logits.length !== d.vocab) throw new Error(`prefill gave ${pre.logits.length} logits, expected ${d.vocab}`);
    this.stats.prefills++;
    const joined = this.#o.now();
    this.#prefillMs = average(this.#prefillMs, joined - started);
    this.#onPrefill?.({ id: req.id, startMs: started, endMs: joined });
    const { limit, byPolicy } = tokenLimit(this.#m, req.textIds.length);
    this.#fit(n + t25 + 1, false);
    const slot = this.#rows.length;
    this.#mask.fill(0, slot * this.#capacity, (slot + 1) * this.#capacity);
    this.#write(slot, 0, pre.k, pre.v, n + t25);
    const now = this.#o.now();
    return {
      req,
      slot,
      len: n + t25,
      t25,
      history: Array.from(req.prompts),
      generated: [],
      rng: new Rng(req.seed),
      limit,
      byPolicy,
      logits: Float32Array.from(pre.logits),
      addedAt: this.#addedAt.get(req.id) ?? now,
      admittedAt: now,
      batchSum: 0,
      batchSteps: 0,
      maxBatch: 0,
      emitIdx: 0,
    };
  }

  /** Deferred prefill: start it; the row joins in a later step (#joinPrefilled). */
  #startPrefill(req: GptRequest): void {
    const p: Pending = { req, started: this.#o.now(), settled: Promise.resolve() };
    p.settled = this.#prefill(req).then(
      (out) => void (p.out = out),
      (err: unknown) => void (p.error = err instanceof Error ? err.message : String(err)),
    );
    this.#pending.push(p);
  }

  /** Deferred prefills that finished join the batch (in start order); failed or aborted ones end here. */
  #joinPrefilled(done: GptResult[]): void {
    const ready = this.#pending.filter((p) => p.out || p.error !== undefined);
    if (!ready.length) return;
    this.#pending = this.#pending.filter((p) => !ready.includes(p));
    for (const p of ready) {
      const { req } = p;
      let error = p.error;
      if (error === undefined && !this.#aborted.has(req.id)) {
        try {
          this.#rows.push(this.#join(req, p.out!, p.started));
          continue;
        } catch (err) {
          error = (err as Error).message;
        }
      }
      this.#addedAt.delete(req.id);
      this.#aborted.delete(req.id);
      if (req.group !== undefined) this.#forget(req.group);
      done.push({ id: req.id, tokens: new Int32Array(), stoppedBy: "aborted", queueMs: 0, computeMs: 0, maxBatch: 0, meanBatch: 0, ...(error !== undefined ? { error } : {}) });
    }
  }

  /**
   * The waiting request to admit next: the first in arrival order, except that the later segments of a
   * streamed request wait while its segment 0 (whose first window is the request's first audio) is
   * waiting or still short of its first emit count. Segment 0 then decodes without the prefills and rows
   * of its own request's other segments, so the first audio comes sooner; they join as soon as it has
   * its first window's tokens. Only segment 0 holds the others back (a chain, each segment holding the
   * next, would serialise the request). Requests that do not stream are never held. −1: none may start.
   */
  #nextAdmissible(): number {
    let held: Set<string> | undefined; // streamed requests whose segment 0 is waiting or short of its first count
    for (const row of this.#rows) {
      const r = row.req;
      if (r.group !== undefined && r.order === 0 && r.emitAt?.length && row.generated.length < r.emitAt[0]) (held ??= new Set()).add(r.group);
    }
    for (const r of [...this.#waiting, ...this.#pending.map((p) => p.req)]) if (r.group !== undefined && r.order === 0 && r.emitAt) (held ??= new Set()).add(r.group);
    for (let i = 0; i < this.#waiting.length; i++) {
      const r = this.#waiting[i];
      if (!held || r.group === undefined || !r.emitAt || r.order === 0 || !held.has(r.group)) {
        if (this.#pacing && r.group !== undefined && r.emitAt && r.order !== undefined && r.order > 0 && !this.#paced(r, r.group, r.order)) continue;
        return i;
      }
    }
    return -1;
  }

  /**
   * Playback pacing: may this later segment of a streamed request start now? Its request plays the
   * tokens of its segments in order, from the time segment 0 had its first window's tokens. The row
   * that plays next is the running segment of the request with the lowest index; its lead is the audio
   * it and the finished segments before it have decoded, less the audio played so far. Admitting
   * another row costs the playing row a prefill (the batch waits for it) and, where a step of the
   * larger batch takes longer than its token lasts, falling behind real time: the segment is admitted
   * only if the lead covers both (over the playing row's remaining tokens, at most its length limit,
   * or `horizonMs`, whichever is less), or if it is the one that plays next (of the waiting ones, the
   * lowest index first), or after `maxHoldMs`. Unknown playback start (segment 0 decoded elsewhere):
   * admitted; no measured cost yet: counted as none.
   */
  #paced(r: GptRequest, group: string, order: number): boolean {
    const p = this.#pacing!;
    const g = this.#groups.get(group);
    if (g?.playStart === undefined) return true;
    const now = this.#o.now();
    if (now - Math.max(g.playStart, this.#addedAt.get(r.id) ?? now) >= p.maxHoldMs) return true;
    let playing: Row | undefined;
    for (const row of this.#rows) if (row.req.group === group && row.req.order !== undefined && (!playing || row.req.order < playing.req.order!)) playing = row;
    let first = order; // the lowest index waiting here: it plays before any later one
    for (const w of [...this.#waiting, ...this.#pending.map((p) => p.req)]) if (w.group === group && w.emitAt && w.order !== undefined && w.order < first) first = w.order;
    if (!playing || first < playing.req.order!) return order === first;
    let ready = playing.generated.length;
    for (const [o, n] of g.done) if (o < playing.req.order!) ready += n;
    const speed = playing.req.speed && playing.req.speed > 0 ? playing.req.speed : 1;
    const tokenMs = 1000 / p.tokensPerSecond / speed;
    const leadMs = ready * tokenMs - (now - g.playStart);
    // While the batch is one row larger, each step of the playing row loses step − tokenMs against its
    // audio, for its remaining tokens (at most its limit) or over horizonMs, whichever is less.
    const step = this.#estimateStepMs(this.#rows.length + 1);
    const steps = Math.min(playing.limit - playing.generated.length, step > 0 ? p.horizonMs / step : 0);
    const loss = Math.max(0, step - tokenMs) * steps;
    return leadMs >= (this.#prefillMs ?? 0) + loss;
  }

  /** Step ms at batch size b: measured, else scaled linearly from the nearest smaller size measured (pessimistic on a CPU), else the nearest larger; 0 if none. */
  #estimateStepMs(b: number): number {
    const known = this.#stepMs.get(b);
    if (known !== undefined) return known;
    let below: number | undefined;
    let above: number | undefined;
    for (const k of this.#stepMs.keys()) {
      if (k < b && (below === undefined || k > below)) below = k;
      if (k > b && (above === undefined || k < above)) above = k;
    }
    if (below !== undefined) return (this.#stepMs.get(below)! * b) / below;
    return above !== undefined ? this.#stepMs.get(above)! : 0;
  }

  /** Pacing: forget a streamed request once none of its segments is here any more (besides `leaving`). */
  #forget(group: string, leaving?: Row): void {
    if (!this.#rows.some((r) => r !== leaving && r.req.group === group) && !this.#waiting.some((r) => r.group === group) && !this.#pending.some((p) => p.req.group === group))
      this.#groups.delete(group);
  }

  #finish(row: Row, stoppedBy: GptResult["stoppedBy"], error?: string): GptResult {
    this.#addedAt.delete(row.req.id);
    this.#aborted.delete(row.req.id);
    const group = row.req.group;
    if (group !== undefined && this.#groups.has(group)) {
      this.#groups.get(group)!.done.set(row.req.order ?? 0, row.generated.length);
      this.#forget(group, row);
    }
    return {
      id: row.req.id,
      tokens: Int32Array.from(row.generated),
      stoppedBy,
      queueMs: row.admittedAt - row.addedAt,
      computeMs: this.#o.now() - row.admittedAt,
      maxBatch: row.maxBatch,
      meanBatch: row.batchSteps ? row.batchSum / row.batchSteps : 1,
      ...(error ? { error } : {}),
    };
  }

  /** One iteration. Returns the requests that finished in it. */
  async step(): Promise<GptResult[]> {
    const done: GptResult[] = [];
    const d = this.#m.dims.t2s;

    // Aborted requests still waiting never start.
    for (let i = this.#waiting.length - 1; i >= 0; i--) {
      const { id, group } = this.#waiting[i];
      if (this.#aborted.has(id)) {
        this.#waiting.splice(i, 1);
        if (group !== undefined) this.#forget(group);
        this.#aborted.delete(id);
        this.#addedAt.delete(id);
        done.push({ id, tokens: new Int32Array(), stoppedBy: "aborted", queueMs: 0, computeMs: 0, maxBatch: 0, meanBatch: 0 });
      }
    }

    // 1. Admission: free rows, the KV budget, and a bound on prefills per iteration (deferred: in flight).
    this.#joinPrefilled(done);
    for (let admitted = 0; admitted < this.#o.admitPerStep && this.#waiting.length && this.#rows.length + this.#pending.length < this.#o.maxRows; admitted++) {
      if (this.#deferred && this.#pending.length >= this.#o.admitPerStep) break;
      const at = this.#nextAdmissible();
      if (at < 0) break;
      const next = this.#waiting[at];
      const need = next.promptIds.length + next.textIds.length + next.prompts.length + 1;
      if (this.#rows.length + this.#pending.length > 0 && this.#bytesFor(need) > this.#o.kvBudgetBytes) break;
      this.#waiting.splice(at, 1);
      // A streamed request's later segment is prefilled while the batch waits, even with a prefill
      // thread: running beside the decode steps it would also take CPU from the other stages working on
      // the request's first audio (its first window's DiT), and pacing counts its prefill as a stall.
      if (this.#deferred && !(next.group !== undefined && next.emitAt && (next.order ?? 0) > 0)) {
        this.#startPrefill(next);
        continue;
      }
      try {
        this.#rows.push(await this.#admit(next));
      } catch (err) {
        this.#addedAt.delete(next.id);
        if (next.group !== undefined) this.#forget(next.group);
        done.push({ id: next.id, tokens: new Int32Array(), stoppedBy: "aborted", queueMs: 0, computeMs: 0, maxBatch: 0, meanBatch: 0, error: (err as Error).message });
      }
    }

    // Nothing to decode while prefills run elsewhere: wait for one instead of spinning.
    if (this.#rows.length === 0 && this.#pending.length) {
      await Promise.race(this.#pending.map((p) => p.settled));
      this.#joinPrefilled(done);
    }

    // 2. Sample every row's next token; retire rows that stop.
    const tokens: number[] = [];
    for (let i = 0; i < this.#rows.length; ) {
      const row = this.#rows[i];
      let stop: GptResult["stoppedBy"] | undefined;
      let error: string | undefined;
      let token = -1;
      if (this.#aborted.has(row.req.id)) stop = "aborted";
      else if (row.generated.length >= row.limit) stop = row.byPolicy ? "length-policy" : "max-tokens";
      else {
        try {
          const s = sampleToken(row.logits, row.history, row.generated.length, row.req.sampling, row.rng, d.eos);
          if (s.token === d.eos || s.argmax === d.eos) stop = "eos";
          else token = s.token;
        } catch (err) {
          // One row's failure (e.g. non-finite logits) ends that row only; the batch goes on.
          stop = "aborted";
          error = (err as Error).message;
        }
      }
      if (stop) {
        done.push(this.#finish(row, stop, error));
        const last = this.#rows.length - 1;
        if (i !== last) {
          this.#move(last, i);
          this.#rows[i] = this.#rows[last];
          this.#rows[i].slot = i;
          tokens[i] = tokens[last] ?? -1;
        }
        this.#rows.pop();
        // the moved row (if any) has not been sampled yet: do not advance i
        if (i !== last) continue;
        break;
      }
      row.generated.push(token);
      row.history.push(token);
      const emitAt = row.req.emitAt;
      if (emitAt) {
        while (row.emitIdx < emitAt.length && emitAt[row.emitIdx] < row.generated.length) row.emitIdx++;
        if (emitAt[row.emitIdx] === row.generated.length) {
          this.#partials.push({ id: row.req.id, tokens: Int32Array.from(row.generated) });
          if (this.#pacing && row.emitIdx === 0 && row.req.order === 0 && row.req.group !== undefined)
            this.#groups.set(row.req.group, { playStart: this.#o.now(), done: new Map() });
          row.emitIdx++;
        }
      }
      tokens[i] = token;
      i++;
    }
    if (this.#rows.length === 0) {
      if (this.#waiting.length === 0 && this.#pending.length === 0) this.#shrink();
      return done;
    }

    // 3. One batched decode step over every running row.
    const b = this.#rows.length;
    this.#fit(Math.max(...this.#rows.map((r) => r.len + 1)), true);
    const cap = this.#capacity;
    const tok = new BigInt64Array(b);
    const pos = new BigInt64Array(b);
    for (let i = 0; i < b; i++) {
      tok[i] = BigInt(tokens[i]);
      pos[i] = BigInt(this.#rows[i].t25 + this.#rows[i].generated.length - 1);
    }
    const per = d.heads * cap * d.headDim;
    const feeds: Record<string, ort.Tensor> = {
      token: new ort.Tensor("int64", tok, [b, 1]),
      pos: new ort.Tensor("int64", pos, [b]),
      past_mask: new ort.Tensor("float32", this.#mask.subarray(0, b * cap), [b, cap]),
    };
    for (let l = 0; l < d.layers; l++) {
      feeds[`past_k_${l}`] = new ort.Tensor("float32", this.#k[l].subarray(0, b * per), [b, d.heads, cap, d.headDim]);
      feeds[`past_v_${l}`] = new ort.Tensor("float32", this.#v[l].subarray(0, b * per), [b, d.heads, cap, d.headDim]);
    }
    const t0 = this.#o.now();
    const out = await this.#s.t2s_step.run(feeds);
    this.stats.lastStepMs = this.#o.now() - t0;
    this.#stepMs.set(b, average(this.#stepMs.get(b), this.stats.lastStepMs));
    this.stats.steps++;
    this.stats.tokens += b;
    this.stats.batchHistogram.set(b, (this.stats.batchHistogram.get(b) ?? 0) + 1);
    const logits = out.logits.data as Float32Array;
    const vocab = d.vocab;
    const kNew = Array.from({ length: d.layers }, (_, l) => out[`k_${l}`].data as Float32Array);
    const vNew = Array.from({ length: d.layers }, (_, l) => out[`v_${l}`].data as Float32Array);
    const rowSize = d.heads * d.headDim;
    const Dh = d.headDim;
    for (let i = 0; i < b; i++) {
      const row = this.#rows[i];
      row.logits = logits.slice(i * vocab, (i + 1) * vocab);
      // The new position's K/V, [heads, 1, headDim] per row, go to slot position `len` (plain copies: this runs B·L·heads times a step).
      for (let l = 0; l < d.layers; l++) {
        const kl = this.#k[l];
        const vl = this.#v[l];
        const kn = kNew[l];
        const vn = vNew[l];
        for (let h = 0; h < d.heads; h++) {
          const src = i * rowSize + h * Dh;
          const dst = ((i * d.heads + h) * cap + row.len) * Dh;
          for (let e = 0; e < Dh; e++) {
            kl[dst + e] = kn[src + e];
            vl[dst + e] = vn[src + e];
          }
        }
      }
      this.#mask[i * cap + row.len] = 1;
      row.len++;
      row.batchSum += b;
      row.batchSteps++;
      row.maxBatch = Math.max(row.maxBatch, b);
    }
    return done;
  }

  /** When idle, give back memory grown for long sequences. */
  #shrink(): void {
    if (this.#room > this.#o.initialCapacity) {
      this.#k = [];
      this.#v = [];
      this.#alloc(this.#o.initialCapacity);
    }
    this.#capacity = Math.min(CAPACITY_GRAIN, this.#room);
  }
}
