/**
 * Load generation shared by the chaos, soak, overload and benchmark tools: the benchmark texts and
 * voice, request variants with a fixed seed, an HTTP call that classifies its outcome (completed, coded failure, lost, unclear), the audio checks
 * (expected length, equality with an undisturbed run), and a service's resident memory from /proc.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { decodeWav, encodeWav } from "../shared/dsp/index.js";
import { isErrorCode } from "../shared/errors.js";
import { fromRoot } from "../shared/paths.js";

/** The benchmarks' English texts (two short sentences each): `npm run bench` and `npm run sim`. */
export const BENCH_TEXTS = [
  "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs.",
  "She sells sea shells by the sea shore, and the shells she sells are surely sea shells.",
  "A journey of a thousand miles begins with a single step. Keep going.",
  "It was the best of times, it was the worst of times, it was the age of wisdom.",
];

/** The bundled reference voice (voices/default.wav and its transcript) and its sha256, the object-store name. */
export function defaultVoice(): { wav: Buffer; promptText: string; audioSha: string } {
  const wav = readFileSync(fromRoot("voices", "default.wav"));
  return { wav, promptText: readFileSync(fromRoot("voices", "default.txt"), "utf8").trim(), audioSha: createHash("sha256").update(wav).digest("hex") };
}

/** A deterministic PRNG (mulberry32): the same seed gives the same sequence, so a failing run can be replayed. */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A reference-like WAV, different for each seed: a gliding harmonic tone (f0 110 + 40·seed Hz) with a
 * little noise, `seconds` long at `rate` Hz (voice-preparation tests and benchmarks need many voices).
 */
export function syntheticReference(seconds: number, rate: number, seed: number): Uint8Array {
  const n = Math.round(seconds * rate);
  const x = new Float32Array(n);
  const noise = prng(seed);
  for (let i = 0; i < n; i++) {
    const t = i / rate;
    const f0 = 110 + 40 * seed + 30 * Math.sin(2 * Math.PI * 0.7 * t);
    let v = 0;
    for (let h = 1; h <= 4; h++) v += Math.sin(2 * Math.PI * f0 * h * t) / h;
    x[i] = 0.2 * v + 0.02 * (noise() * 2 - 1);
  }
  return encodeWav(x, rate);
}

/** Request bodies used under load: short texts (one or two segments), fixed seeds, few CFM steps. */
export const VARIANTS: Record<string, unknown>[] = [
  { text: "Hello world.", text_lang: "en", seed: 101, sample_steps: 2 },
  { text: "Good morning. How are you?", text_lang: "en", seed: 202, sample_steps: 2 },
  { text: "The quick brown fox jumps.", text_lang: "en", seed: 303, sample_steps: 2 },
  { text: "One, two, three. Four, five.", text_lang: "en", seed: 404, sample_steps: 2 },
];

/** 960 samples per token at 24 kHz (floor(3.75·T25) mel frames × 256), plus int(32000·fragment_interval) of pause per segment. */
export function expectedSamples(tokens: number[], fragmentInterval = 0.3): number {
  return tokens.reduce((n, k) => n + 256 * Math.floor(3.75 * k) + Math.floor(32000 * fragmentInterval), 0);
}

export type Outcome =
  | { kind: "completed"; ms: number; tokens: number[]; samples: Int16Array }
  | { kind: "failed"; ms: number; status: number; code: string; message: string; retryAfter: string | null }
  /** No answer by the deadline plus grace (hung), or the connection dropped without an answer. */
  | { kind: "lost"; ms: number; message: string }
  /** An answer that is neither audio nor a coded JSON error. */
  | { kind: "unclear"; ms: number; status: number; body: string };

/** POST /tts and classify the answer; `guardMs` after which a missing answer counts as lost. */
export async function ttsCall(gatewayUrl: string, body: Record<string, unknown>, guardMs: number): Promise<Outcome> {
  const t0 = Date.now();
  let res: Response;
  try {
    res = await fetch(`${gatewayUrl}/tts`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body), signal: AbortSignal.timeout(guardMs) });
  } catch (err) {
    return { kind: "lost", ms: Date.now() - t0, message: (err as Error).message };
  }
  let data: Uint8Array;
  try {
    data = new Uint8Array(await res.arrayBuffer());
  } catch (err) {
    return { kind: "lost", ms: Date.now() - t0, message: `body: ${(err as Error).message}` };
  }
  const ms = Date.now() - t0;
  if (res.status === 200) {
    try {
      const wav = decodeWav(data);
      const tokens = (res.headers.get("x-gsv-tokens") ?? "").split(",").filter(Boolean).map(Number);
      const samples = new Int16Array(wav.samples.length);
      for (let i = 0; i < samples.length; i++) samples[i] = Math.round(Math.max(-1, Math.min(1, wav.samples[i])) * 32767);
      return { kind: "completed", ms, tokens, samples };
    } catch (err) {
      return { kind: "unclear", ms, status: 200, body: `not a WAV: ${(err as Error).message}` };
    }
  }
  const text = new TextDecoder().decode(data);
  try {
    const j = JSON.parse(text) as { code?: unknown; message?: unknown };
    if (isErrorCode(j.code) && typeof j.message === "string") return { kind: "failed", ms, status: res.status, code: j.code, message: j.message, retryAfter: res.headers.get("retry-after") };
  } catch {
    // not JSON
  }
  return { kind: "unclear", ms, status: res.status, body: text.slice(0, 300) };
}

/** Compare a completed request with the undisturbed run of the same body: "ok", "duplicated" (longer), or "mismatch". */
export function checkAudio(got: { tokens: number[]; samples: Int16Array }, baseline: { tokens: number[]; samples: Int16Array }, fragmentInterval = 0.3): "ok" | "duplicated" | "mismatch" {
  const expected = expectedSamples(got.tokens, fragmentInterval);
  if (got.samples.length > expected || got.samples.length > baseline.samples.length) return "duplicated";
  if (got.samples.length !== expected || got.tokens.join() !== baseline.tokens.join()) return "mismatch";
  for (let i = 0; i < got.samples.length; i++) if (Math.abs(got.samples[i] - baseline.samples[i]) > 4) return "mismatch";
  return "ok";
}

/** Resident set size of a process in MB (VmRSS from /proc/<pid>/status); NaN if it is gone. */
export function rssMb(pid: number | undefined): number {
  if (!pid) return NaN;
  try {
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** Counts of a run, printed by the tools. */
export class Tally {
  completed = 0;
  failed: Record<string, number> = {};
  lost = 0;
  duplicated = 0;
  mismatched = 0;
  unclear = 0;
  late = 0;
  samples: string[] = [];

  note(s: string): void {
    if (this.samples.length < 20) this.samples.push(s);
  }

  get total(): number {
    return this.completed + Object.values(this.failed).reduce((a, b) => a + b, 0) + this.lost + this.unclear;
  }

  summary(): Record<string, unknown> {
    return { total: this.total, completed: this.completed, failed: this.failed, lost: this.lost, duplicated: this.duplicated, mismatched: this.mismatched, unclear: this.unclear, late: this.late };
  }
}
