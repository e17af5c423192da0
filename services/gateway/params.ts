/**
 * Upstream api_v2's `/tts` parameters: every name, default and accepted spelling (FastAPI/pydantic lax
 * parsing: numbers and booleans may arrive as strings in a query or a JSON body). Values that upstream
 * accepts but this server cannot honour are NOT_SUPPORTED, never silently ignored; unknown parameter
 * NAMES are ignored as upstream's pydantic model ignores them.
 */
import { z } from "zod";
import { GsvError } from "../../shared/errors.js";
import { resolveSeed } from "../../shared/sampling.js";
import { SplitMethods, type GenParams } from "../../shared/schemas.js";
import { AUDIO_FORMATS } from "./audio-encode.js";

const TRUE = new Set(["true", "1", "yes", "on", "t", "y"]);
const FALSE = new Set(["false", "0", "no", "off", "f", "n"]);

/** pydantic's bool: true/false, 0/1, and the strings it accepts (case-insensitive). */
export const boolParam = (d: boolean) =>
  z
    .preprocess((v) => {
      if (v === undefined || v === null || v === "") return d;
      if (typeof v === "boolean") return v;
      if (v === 0 || v === 1) return v === 1;
      if (typeof v === "string" && TRUE.has(v.toLowerCase())) return true;
      if (typeof v === "string" && FALSE.has(v.toLowerCase())) return false;
      return v;
    }, z.boolean({ error: "must be a boolean (true/false, 1/0)" }));

/** An integer, also from a string of digits; "1.5", "abc" and 1.5 are refused. */
export const intParam = (d: number, min: number, max: number) =>
  z.preprocess(
    (v) => {
      if (v === undefined || v === null || v === "") return d;
      if (typeof v === "string" && /^\s*[+-]?\d+\s*$/.test(v)) return Number(v);
      return v;
    },
    z.number({ error: "must be an integer" }).int("must be an integer").min(min, `must be >= ${min}`).max(max, `must be <= ${max}`),
  );

/** A finite number, also from a numeric string. */
export const numParam = (d: number, check: (n: number) => boolean, range: string) =>
  z.preprocess(
    (v) => {
      if (v === undefined || v === null || v === "") return d;
      if (typeof v === "string" && v.trim() !== "" && Number.isFinite(Number(v))) return Number(v);
      return v;
    },
    z.number({ error: "must be a number" }).refine(Number.isFinite, "must be a finite number").refine(check, `must be ${range}`),
  );

const optString = z.preprocess((v) => (v === null ? undefined : v), z.string({ error: "must be a string" }).optional());

/**
 * streaming_mode as upstream: false/0 off, true/1 fragment mode, 2 token-chunk streaming, 3 fixed-length
 * token chunks. Strings "true", "2" etc. are accepted as pydantic's Union[bool, int] accepts them.
 */
export const streamingParam = z.preprocess(
  (v) => {
    if (v === undefined || v === null || v === "") return 0;
    if (v === false) return 0;
    if (v === true) return 1;
    if (typeof v === "string") {
      const s = v.trim().toLowerCase();
      if (FALSE.has(s)) return 0;
      if (TRUE.has(s)) return 1;
      if (/^[+-]?\d+$/.test(s)) return Number(s);
    }
    return v;
  },
  z.union([z.literal(0), z.literal(1), z.literal(2), z.literal(3)], { error: "the value of streaming_mode must be 0, 1, 2, 3(int) or true/false(bool)" }),
);

export const ApiV2Params = z.object({
  text: z.string({ error: (iss) => (iss.input === undefined || iss.input === null ? "text is required" : "text: must be a string") }),
  text_lang: z.string({ error: "text_lang is required" }).transform((s) => s.toLowerCase()),
  ref_audio_path: optString,
  aux_ref_audio_paths: z.preprocess((v) => (v === null ? undefined : typeof v === "string" ? [v] : v), z.array(z.string(), { error: "must be a list of strings" }).optional()),
  prompt_text: z.preprocess((v) => (v === null ? undefined : v), z.string({ error: "must be a string" }).default("")),
  prompt_lang: optString.transform((s) => s?.toLowerCase()),
  top_k: intParam(15, 1, 1025),
  top_p: numParam(1, (n) => n > 0 && n <= 1, "in (0, 1]"),
  temperature: numParam(1, (n) => n > 0 && n <= 100, "in (0, 100]"),
  text_split_method: z.preprocess((v) => (v === null || v === "" ? undefined : v), z.enum(SplitMethods, { error: `must be one of ${SplitMethods.join(", ")}` }).default("cut5")),
  // Upstream's in-request batching knobs: validated, then left to our scheduler (docs/api.md).
  batch_size: intParam(1, 1, 1024),
  batch_threshold: numParam(0.75, (n) => n >= 0 && n <= 1, "in [0, 1]"),
  split_bucket: boolParam(true),
  parallel_infer: boolParam(true),
  speed_factor: numParam(1, (n) => n >= 0.25 && n <= 4, "in [0.25, 4]"),
  fragment_interval: numParam(0.3, (n) => n >= 0 && n <= 10, "in [0, 10]"),
  seed: intParam(-1, -1, 4294967295),
  media_type: z.preprocess((v) => (v === null || v === "" ? undefined : v), z.enum(AUDIO_FORMATS, { error: `is not supported (one of ${AUDIO_FORMATS.join(", ")})` }).default("wav")),
  streaming_mode: streamingParam,
  repetition_penalty: numParam(1.35, (n) => n > 0 && n <= 10, "in (0, 10]"),
  sample_steps: intParam(32, 1, 128),
  super_sampling: boolParam(false),
  // Upstream's token-streaming knobs (streaming_mode 2 and 3).
  overlap_length: intParam(2, 0, 64),
  min_chunk_length: intParam(16, 1, 1024),
  /** Not upstream: a per-request deadline in milliseconds (0 = the server default). */
  timeout_ms: intParam(0, 0, 3_600_000),
});
export type ApiV2Params = z.infer<typeof ApiV2Params>;

/** The first schema issue as a coded error that names the field. */
export function paramError(error: z.ZodError, raw: Record<string, unknown> = {}): GsvError {
  const issue = error.issues[0];
  const field = issue?.path.join(".") || "request";
  const code = field === "text" && (raw.text === undefined || raw.text === null) ? "MISSING_TEXT" : "BAD_PARAMETER";
  const msg = issue?.message ?? "invalid";
  return new GsvError(code, msg.startsWith(field) || msg.startsWith("the value of") ? msg : `${field}: ${msg}`);
}

/** Validate api_v2 parameters; NOT_SUPPORTED for what upstream accepts but we cannot do. */
export function parseApiV2(raw: Record<string, unknown>): ApiV2Params {
  const parsed = ApiV2Params.safeParse(raw);
  if (!parsed.success) throw paramError(parsed.error, raw);
  const p = parsed.data;
  if (!p.text.trim()) throw new GsvError("MISSING_TEXT", "text is required");
  if (!p.text_lang.trim()) throw new GsvError("BAD_PARAMETER", "text_lang is required");
  if (p.super_sampling) {
    throw new GsvError("NOT_SUPPORTED", "super_sampling=true (AP-BWE upsampling to 48 kHz) is not available: this server has no AP-BWE model; send super_sampling=false");
  }
  if (p.aux_ref_audio_paths && p.aux_ref_audio_paths.length > 0) {
    throw new GsvError(
      "NOT_SUPPORTED",
      "aux_ref_audio_paths (multi-reference timbre fusion) is a v1/v2 feature that v3 does not use (upstream ignores it for v3); omit it or send []",
    );
  }
  return p;
}

/** A query string as api_v2's GET sees it: repeated keys become lists (only aux_ref_audio_paths takes one). */
export function queryToObject(url: URL): Record<string, unknown> {
  const raw: Record<string, unknown> = {};
  for (const [k, v] of url.searchParams) {
    if (k !== "aux_ref_audio_paths") raw[k] = v;
    else if (Array.isArray(raw[k])) (raw[k] as string[]).push(v);
    else raw[k] = [v];
  }
  return raw;
}

/** Upstream's generation parameters (api_v2 names, also taken by /v1/audio/speech) as a job's GenParams. */
export function genParams(
  p: { top_k: number; top_p: number; temperature: number; repetition_penalty: number; seed: number; sample_steps: number; fragment_interval: number },
  speed: number,
): GenParams {
  return {
    topK: p.top_k,
    topP: p.top_p,
    temperature: p.temperature,
    repetitionPenalty: p.repetition_penalty,
    seed: resolveSeed(p.seed),
    speed,
    sampleSteps: p.sample_steps,
    fragmentInterval: p.fragment_interval,
  };
}
