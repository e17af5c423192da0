/**
 * The client side of the protocol, used by the gateway and by any TypeScript program on NATS:
 * publish a TextJob, listen on its reply subject, put audio windows in order, cross-fade the seams,
 * insert the pause after each segment, and summarise where the time went, per stage.
 */
import { createHash, randomUUID } from "node:crypto";
import { StorageType, type NatsConnection } from "nats";
import { decodeAs, encode } from "./codec.js";
import { GsvError, isErrorCode } from "./errors.js";
import { publishWork } from "./nats.js";
import { ReplyEvent, type GenParams, type TextJob, type Timing, type VoiceRef } from "./schemas.js";
import { Buckets, Subjects, WorkQueues } from "./subjects.js";
import type { StreamMode } from "./streaming.js";
import { traceHeaders } from "./trace.js";
import { parseSelection, type ModelSelection } from "./model-sets.js";

export interface SynthesisRequest {
  text: string;
  textLang: string;
  splitMethod: TextJob["splitMethod"];
  voice: VoiceRef;
  params: GenParams;
  id?: string;
  timeoutMs: number;
  /** Ordered PCM pieces as soon as they can be played, with their sample rate. */
  onAudio?: (pcm: Float32Array, sampleRate: number) => void;
  /** Every event from the reply subject, as it arrives (plan, audio windows in any order, progress, error). */
  onEvent?: (ev: ReplyEvent) => void;
  signal?: AbortSignal;
  /** Streaming mode 1..3 (docs/streaming.md); absent or 0: the segment is decoded whole before its audio. */
  stream?: StreamMode;
  /** The model sets to run on (shared/model-sets.ts); absent: each stage's default set. */
  models?: ModelSelection;
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
  /** Every stage's timing entries, each unit once (with `at`, its compute start in epoch ms). */
  timings: Timing[];
  /** Epoch ms when the request was queued. */
  startedAt: number;
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

/** Timings are carried along, so the same upstream entry arrives with every window: keep each once. */
export function uniqueTimings(timings: Timing[]): Timing[] {
  const seen = new Set<string>();
  return timings.filter((t) => {
    const key = `${t.stage}:${t.seg}:${t.win ?? ""}:${t.replica}:${t.computeMs}:${t.queueMs}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
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
    req.onAudio?.(pcm, sampleRate);
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
  // Either may settle while the job is still being published (a short deadline, an early error event):
  // mark them handled now, or Node ends the process on an unhandled rejection. The race below still sees them.
  timeout.catch(() => undefined);
  finished.catch(() => undefined);

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
      ...(req.models ? { models: req.models } : {}),
    };
    try {
      await publishWork(nc.jetstream(), WorkQueues.text.subject, encode(job), id, deadline, traceHeaders());
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
    timings: uniqueTimings([...planTimings, ...asm.timings]),
    startedAt: t0,
  };
}

// ─── The typed client for other programs on NATS ─────────────────────────────────────────────────

/** An ordered piece of a request's audio. */
export interface AudioChunk {
  pcm: Float32Array;
  sampleRate: number;
  /** Samples of this request's audio before this chunk. */
  offset: number;
}

/** Audio chunks in order as they arrive; `result` settles when the request ends (the whole PCM, timings). */
export interface AudioStream extends AsyncIterableIterator<AudioChunk> {
  readonly id: string;
  readonly result: Promise<SynthesisResult>;
}

/** A request with upstream's defaults for everything but the text and the voice. */
export interface SpeakRequest {
  text: string;
  textLang?: string;
  splitMethod?: TextJob["splitMethod"];
  /** A reference in the object store: see GsvClient.putReferenceAudio. */
  voice: VoiceRef;
  params?: Partial<GenParams>;
  id?: string;
  timeoutMs?: number;
  signal?: AbortSignal;
  /** 1..3 as api_v2's streaming_mode (docs/streaming.md); GsvClient.stream defaults to 2. */
  stream?: StreamMode;
  onEvent?: (ev: ReplyEvent) => void;
  /** The model sets to run on; default: the client's `models` option, else each stage's default set. */
  models?: ModelSelection;
}

/** Upstream api_v2's defaults; a seed of -1 draws a random one. */
export function defaultGenParams(p: Partial<GenParams> = {}): GenParams {
  const seed = p.seed === undefined || p.seed === -1 ? (Math.random() * 2 ** 32) >>> 0 : p.seed;
  return { topK: 15, topP: 1, temperature: 1, repetitionPenalty: 1.35, speed: 1, sampleSteps: 32, fragmentInterval: 0.3, ...p, seed };
}

/**
 * Speak through the pipeline from any TypeScript program that can reach its NATS server: no gateway needed.
 *
 *   const client = new GsvClient(nc);
 *   const voice = { audioSha: await client.putReferenceAudio(wavBytes), promptText: "…", promptLang: "en" };
 *   for await (const chunk of client.stream({ text: "Hello.", voice })) play(chunk.pcm);
 */
export class GsvClient {
  readonly nc: NatsConnection;
  readonly timeoutMs: number;
  /** The model sets every request runs on unless it names its own (absent: each stage's default). */
  readonly models: ModelSelection | undefined;

  constructor(nc: NatsConnection, opts: { timeoutMs?: number; models?: ModelSelection } = {}) {
    this.nc = nc;
    this.timeoutMs = opts.timeoutMs ?? 120_000;
    this.models = opts.models ? parseSelection(opts.models) : undefined;
  }

  /** Put reference audio (a WAV file's bytes) into the object store; returns the sha256 a VoiceRef names. */
  async putReferenceAudio(bytes: Uint8Array): Promise<string> {
    const sha = createHash("sha256").update(bytes).digest("hex");
    const os = await this.nc.jetstream().views.os(Buckets.refAudio, { storage: StorageType.File });
    if (!(await os.info(sha))) await os.putBlob({ name: sha }, bytes);
    return sha;
  }

  #request(r: SpeakRequest): SynthesisRequest {
    return {
      text: r.text,
      textLang: r.textLang ?? "en",
      splitMethod: r.splitMethod ?? "cut5",
      voice: r.voice,
      params: defaultGenParams(r.params),
      id: r.id,
      timeoutMs: r.timeoutMs ?? this.timeoutMs,
      signal: r.signal,
      onEvent: r.onEvent,
      ...(r.stream ? { stream: r.stream } : {}),
      ...((r.models ?? this.models) ? { models: parseSelection(r.models ?? this.models) } : {}),
    };
  }

  /** The whole request's audio at once. */
  synthesize(r: SpeakRequest): Promise<SynthesisResult> {
    return synthesize(this.nc, this.#request(r));
  }

  /**
   * Audio chunks in order, as they arrive. Abort `signal` (or break out of the loop) to cancel the request
   * in every stage; the iterator then throws a CANCELLED GsvError (after an abort) or just ends (after a break).
   */
  stream(r: SpeakRequest): AudioStream {
    const req = this.#request({ stream: 2, ...r });
    const id = req.id ?? randomUUID().replaceAll("-", "");
    const ac = new AbortController();
    const onAbort = () => ac.abort();
    if (r.signal?.aborted) ac.abort();
    r.signal?.addEventListener("abort", onAbort, { once: true });
    const queue: AudioChunk[] = [];
    let wake: (() => void) | undefined;
    let ended = false;
    let error: unknown;
    let sampleRate = 24000;
    let offset = 0;
    const result = synthesize(this.nc, {
      ...req,
      id,
      signal: ac.signal,
      onEvent: (ev) => {
        if (ev.type === "audio") sampleRate = ev.sampleRate;
        req.onEvent?.(ev);
      },
      onAudio: (pcm) => {
        queue.push({ pcm, sampleRate, offset });
        offset += pcm.length;
        wake?.();
      },
    });
    result.then(
      () => undefined,
      (e) => void (error = e),
    ).finally(() => {
      ended = true;
      r.signal?.removeEventListener("abort", onAbort);
      wake?.();
    });
    const it: AudioStream = {
      id,
      result,
      async next(): Promise<IteratorResult<AudioChunk>> {
        for (;;) {
          const c = queue.shift();
          if (c) return { value: c, done: false };
          if (ended) {
            if (error) throw error;
            return { value: undefined, done: true };
          }
          await new Promise<void>((res) => (wake = res));
          wake = undefined;
        }
      },
      async return(): Promise<IteratorResult<AudioChunk>> {
        if (!ended) ac.abort();
        queue.length = 0;
        return { value: undefined, done: true };
      },
      [Symbol.asyncIterator]() {
        return it;
      },
    };
    return it;
  }
}
