/**
 * The client side of the protocol, used by the gateway and by any TypeScript program on NATS:
 * publish a TextJob, listen on its reply subject, put audio windows in order, cross-fade the seams,
 * insert the pause after each segment, and summarise where the time went, per stage.
 */
import { randomUUID } from "node:crypto";
import type { NatsConnection } from "nats";
import { decodeAs, encode } from "./codec.js";
import { GsvError, isErrorCode } from "./errors.js";
import { ReplyEvent, type GenParams, type TextJob, type Timing, type VoiceRef } from "./schemas.js";
import { Subjects, WorkQueues } from "./subjects.js";
import type { StreamMode } from "./streaming.js";

export interface SynthesisRequest {
  text: string;
  textLang: string;
  splitMethod: TextJob["splitMethod"];
  voice: VoiceRef;
  params: GenParams;
  id?: string;
  timeoutMs: number;
  /** Ordered PCM pieces as soon as they can be played. */
  onAudio?: (pcm: Float32Array) => void;
  /** Every event from the reply subject, as it arrives (plan, audio windows in any order, progress, error). */
  onEvent?: (ev: ReplyEvent) => void;
  signal?: AbortSignal;
  /** Streaming mode 1..3 (docs/streaming.md); absent or 0: the segment is decoded whole before its audio. */
  stream?: StreamMode;
}

export interface StageSummary {
  stage: string;
  computeMs: number;
  queueMs: number;
  maxBatch: number;
  units: number;
}

export interface SynthesisResult {
  id: string;
  sampleRate: number;
  pcm: Float32Array;
  segments: number;
  tokens: number[];
  totalMs: number;
  firstAudioMs: number;
  stages: StageSummary[];
}

/** Upstream appends int(32000 · fragment_interval) zero samples after every segment, at any output rate. */
export function pauseSamples(fragmentInterval: number): number {
  return Math.floor(32000 * fragmentInterval);
}

type Audio = Extract<ReplyEvent, { type: "audio" }>;

/** Puts windows in order and joins them: each window's overlap is cross-faded with the held-back tail of the one before. */
export class AudioAssembler {
  #pending = new Map<string, Audio>();
  #seg = 0;
  #win = 0;
  #tail: Float32Array | undefined;
  #segCount: number | undefined;
  readonly tokens: number[] = [];
  readonly timings: Timing[] = [];
  #emit: (pcm: Float32Array) => void;

  constructor(emit: (pcm: Float32Array) => void) {
    this.#emit = emit;
  }

  set segCount(n: number) {
    this.#segCount = n;
  }

  get done(): boolean {
    return this.#segCount !== undefined && this.#seg >= this.#segCount;
  }

  /** Returns false for a duplicate (a redelivered window). */
  push(ev: Audio): boolean {
    const key = `${ev.seg}:${ev.win}`;
    if (ev.seg < this.#seg || (ev.seg === this.#seg && ev.win < this.#win) || this.#pending.has(key)) return false;
    if (this.#segCount === undefined) this.#segCount = ev.segCount;
    this.#pending.set(key, ev);
    for (let next = this.#pending.get(`${this.#seg}:${this.#win}`); next; next = this.#pending.get(`${this.#seg}:${this.#win}`)) {
      this.#pending.delete(`${this.#seg}:${this.#win}`);
      this.#take(next);
    }
    return true;
  }

  #take(ev: Audio): void {
    this.timings.push(...ev.timings);
    let pcm = ev.pcm;
    if (ev.overlap > 0 && this.#tail) {
      const n = Math.min(ev.overlap, this.#tail.length, pcm.length);
      const head = new Float32Array(n);
      for (let i = 0; i < n; i++) {
        const w = (i + 0.5) / n; // linear cross-fade: the two windows render the same frames
        head[i] = this.#tail[i] * (1 - w) + pcm[i] * w;
      }
      this.#emit(head);
      pcm = pcm.subarray(ev.overlap);
    }
    this.#tail = undefined;
    const keep = Math.min(ev.tail, pcm.length);
    if (keep > 0) {
      this.#tail = pcm.slice(pcm.length - keep);
      pcm = pcm.subarray(0, pcm.length - keep);
    }
    if (pcm.length) this.#emit(pcm.slice());
    if (ev.last) {
      this.tokens[ev.seg] = ev.tokens;
      const pause = pauseSamples(ev.fragmentInterval);
      if (pause > 0) this.#emit(new Float32Array(pause));
      this.#seg++;
      this.#win = 0;
    } else {
      this.#win++;
    }
  }
}

export function summarise(timings: Timing[]): StageSummary[] {
  const by = new Map<string, StageSummary>();
  const seen = new Set<string>();
  for (const t of timings) {
    // Timings are carried along, so the same upstream entry arrives with every window: count it once.
    const key = `${t.stage}:${t.seg}:${t.win ?? ""}:${t.replica}:${t.computeMs}:${t.queueMs}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const s = by.get(t.stage) ?? { stage: t.stage, computeMs: 0, queueMs: 0, maxBatch: 0, units: 0 };
    s.computeMs += t.computeMs;
    s.queueMs += t.queueMs;
    s.maxBatch = Math.max(s.maxBatch, t.batch);
    s.units++;
    by.set(t.stage, s);
  }
  const order = ["gateway", "text", "gpt", "sovits", "vocoder"];
  return [...by.values()].sort((a, b) => order.indexOf(a.stage) - order.indexOf(b.stage));
}

/** Run one request through the pipeline. Rejects with a GsvError carrying the stage's code. */
export async function synthesize(nc: NatsConnection, req: SynthesisRequest): Promise<SynthesisResult> {
  const id = req.id ?? randomUUID().replaceAll("-", "");
  const reply = Subjects.reply(id);
  const t0 = Date.now();
  const deadline = t0 + req.timeoutMs;
  const pieces: Float32Array[] = [];
  let firstAudioMs = -1;
  let sampleRate = 24000;
  const asm = new AudioAssembler((pcm) => {
    if (firstAudioMs < 0) firstAudioMs = Date.now() - t0;
    pieces.push(pcm);
    req.onAudio?.(pcm);
  });
  const planTimings: Timing[] = [];

  const sub = nc.subscribe(reply);
  const cancel = () => nc.publish(Subjects.cancel(id));
  let timer: NodeJS.Timeout | undefined;
  const onAbort = () => {
    cancel();
    sub.unsubscribe();
  };
  req.signal?.addEventListener("abort", onAbort, { once: true });

  const finished = (async () => {
    for await (const m of sub) {
      const ev = decodeAs(ReplyEvent, m.data);
      req.onEvent?.(ev);
      if (ev.type === "error") {
        cancel(); // stop the request's other segments in every stage
        throw new GsvError(isErrorCode(ev.code) ? ev.code : "INTERNAL", `${ev.stage}: ${ev.message}`);
      }
      if (ev.type === "plan") {
        asm.segCount = ev.segments;
        planTimings.push(...ev.timings);
      } else if (ev.type === "audio") {
        sampleRate = ev.sampleRate;
        asm.push(ev);
      }
      if (asm.done) return;
    }
    throw new GsvError("CANCELLED", "the request was cancelled");
  })();

  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      cancel();
      reject(new GsvError("DEADLINE_EXCEEDED", `no complete answer within ${req.timeoutMs} ms`));
    }, req.timeoutMs);
  });

  try {
    const job: TextJob = {
      id,
      reply,
      deadline,
      enqueuedAt: Date.now(),
      timings: [],
      text: req.text,
      textLang: req.textLang,
      splitMethod: req.splitMethod,
      voice: req.voice,
      params: req.params,
      ...(req.stream ? { stream: { mode: req.stream } } : {}),
    };
    try {
      await nc.jetstream().publish(WorkQueues.text.subject, encode(job), { msgID: id });
    } catch (err) {
      const m = (err as Error).message ?? "";
      if (/maximum messages|resource limits/i.test(m)) throw new GsvError("OVERLOADED", "the text queue is full");
      throw new GsvError("STAGE_UNAVAILABLE", `cannot queue the request: ${m}`);
    }
    await Promise.race([finished, timeout]);
  } finally {
    clearTimeout(timer);
    req.signal?.removeEventListener("abort", onAbort);
    sub.unsubscribe();
    finished.catch(() => undefined);
  }

  let total = 0;
  for (const p of pieces) total += p.length;
  const pcm = new Float32Array(total);
  let o = 0;
  for (const p of pieces) {
    pcm.set(p, o);
    o += p.length;
  }
  return {
    id,
    sampleRate,
    pcm,
    segments: asm.tokens.length,
    tokens: asm.tokens,
    totalMs: Date.now() - t0,
    firstAudioMs,
    stages: summarise([...planTimings, ...asm.timings]),
  };
}
