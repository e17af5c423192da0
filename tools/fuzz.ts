/**
 * gsv fuzz: hostile input against a running stack, from a seeded PRNG (the seed is printed; the same seed
 * replays the same cases).
 *
 *  - HTTP: random methods and paths (traversal, %2e%2e, absolute, NUL), malformed query strings, JSON
 *    bodies of wrong types, huge numbers, unknown and __proto__ keys, oversized and truncated bodies,
 *    odd headers, hostile `ref_audio_path` values (../, encoded dots, absolute paths, a symlink out of the
 *    voices directory, /proc, /dev), and raw malformed HTTP on a socket.
 *  - NATS: every subject the services consume (the four work queues, voice prepare, cancel, status,
 *    stats, a real vocoder's vocode): random bytes, valid msgpack of wrong shapes, valid jobs with one
 *    field made hostile (ids out of range, NaN, wrong typed arrays, hostile reply subjects such as
 *    `$JS.API.STREAM.DELETE.…`), payloads up to the size limits.
 *
 * Checks: every HTTP answer is audio or a coded JSON error whose status matches the catalogue (never
 * INTERNAL or MODEL_ERROR); every NATS request gets a coded reply, and every work message that names a
 * usable reply subject gets events there; no service process exits; a secret WAV planted outside the
 * voices directory (reachable by ../, by absolute path and by a symlink) is never served; the work
 * queues still exist; afterwards a normal request succeeds.
 *
 *   node dist/tools/fuzz.js [--http 20000] [--raw 500] [--nats 5000] [--seed N] [--fast]
 */
import { copyFileSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { connect as netConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { pathToFileURL } from "node:url";
import { connect, type NatsConnection } from "nats";
import { Packr } from "msgpackr";
import { decode } from "../shared/codec.js";
import { encodeWav } from "../shared/dsp/index.js";
import { ErrorCodes, isErrorCode } from "../shared/errors.js";
import { fromRoot } from "../shared/paths.js";
import { Buckets, PREFIX, Stages, Subjects, WorkQueues, type Stage } from "../shared/subjects.js";
import { startService, startStack, type ServiceProcess, type Stack } from "./launch.js";
import { prng } from "./loadgen.js";

// Hostile payloads may hold maps of more than 65,535 keys, which the project's codec (fast 16-bit map
// sizes) refuses to write; the services read either encoding the same way.
const hostilePackr = new Packr({ moreTypes: true, useRecords: false, variableMapSize: true });

export interface FuzzOptions {
  seed: number;
  httpCases: number;
  rawCases: number;
  natsCases: number;
  /** Valid HTTP requests get timeout_ms 1 (cheap), except 1 in 50 and the ref_audio_path cases. */
  fast?: boolean;
  /** HTTP requests in flight at once. */
  concurrency?: number;
  log?: (line: string) => void;
}

export interface FuzzReport {
  seed: number;
  cases: { http: number; raw: number; nats: number };
  /** HTTP statuses and codes seen, e.g. "400 BAD_PARAMETER": 1234. */
  outcomes: Record<string, number>;
  natsReplies: Record<string, number>;
  violations: string[];
  durationMs: number;
  afterwardsOk: boolean;
}

type Rand = () => number;
const pick = <T>(r: Rand, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];
const int = (r: Rand, lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1));
const SECRET_MARKER = "gsv-fuzz-secret-7f3a";
const VOCODER = "mb-melgan-ljspeech";

/** Percent-encode every byte of the UTF-8 form (lone surrogates become U+FFFD instead of throwing). */
function pct(s: string): string {
  return [...Buffer.from(s, "utf8")].map((b) => "%" + b.toString(16).padStart(2, "0")).join("");
}

function randomString(r: Rand, max = 40): string {
  const alphabets = ["abcdefghijklmnopqrstuvwxyz ", "0123456789.-+eE", "../\\%2e%00\u0000\u202e\ud83d\ude00\uffff", "<>&\"'`;|$(){}[]*?!#", "\n\r\t\u0085\u2028"];
  const a = pick(r, alphabets);
  let s = "";
  for (let i = int(r, 0, max); i > 0; i--) s += a[Math.floor(r() * a.length)];
  return s;
}

/** Values of every type, with a bias to the edges. */
function hostileValue(r: Rand, depth = 0): unknown {
  const k = int(r, 0, 19);
  switch (k) {
    case 0: return null;
    case 1: return pick(r, [true, false]);
    case 2: return pick(r, [0, -0, -1, 1, 2 ** 31, 2 ** 32, 2 ** 53 + 1, -(2 ** 53), 1e308, -1e308, 5e-324, 0.5, 1025, 4294967296]);
    case 3: return pick(r, ["NaN", "Infinity", "-Infinity", "1e999", "0x10", "1_000", " 7 ", "", "-0", "007"]);
    case 4: return randomString(r);
    case 5: return "x".repeat(pick(r, [1000, 6000, 70_000]));
    case 6: return depth < 3 ? Array.from({ length: int(r, 0, 4) }, () => hostileValue(r, depth + 1)) : [];
    case 7: return depth < 3 ? { [randomString(r, 8)]: hostileValue(r, depth + 1) } : {};
    case 8: return JSON.parse('{"__proto__": {"polluted": true}, "constructor": {"prototype": {"x": 1}}}');
    case 9: return pick(r, ["../secret/secret.wav", "/etc/passwd", "%2e%2e/%2e%2e/etc/passwd", "..\\..\\secret.wav"]);
    default: return int(r, -1000, 100_000);
  }
}

const FIELDS = ["text", "text_lang", "ref_audio_path", "aux_ref_audio_paths", "prompt_text", "prompt_lang", "top_k", "top_p", "temperature", "text_split_method", "batch_size", "batch_threshold", "split_bucket", "speed_factor", "fragment_interval", "seed", "media_type", "streaming_mode", "parallel_infer", "repetition_penalty", "sample_steps", "super_sampling", "timeout_ms"];

function hostilePaths(secretDir: string): string[] {
  return [
    "../secret/secret.wav",
    "../../secret/secret.wav",
    `${secretDir}/secret.wav`,
    `${secretDir}/../${secretDir.split("/").pop()}/secret.wav`,
    "escape.wav",
    "escape-dir/secret.wav",
    "%2e%2e/secret/secret.wav",
    "..%2fsecret%2fsecret.wav",
    "....//secret/secret.wav",
    "./../secret/secret.wav",
    "default.wav/../../secret/secret.wav",
    "default.wav\u0000../../secret/secret.wav",
    "\u0000",
    "",
    ".",
    "..",
    "/",
    "/etc/passwd",
    "/proc/self/environ",
    "/proc/self/cmdline",
    "/dev/zero",
    "/dev/urandom",
    "file:///etc/passwd",
    "~/.ssh/id_rsa",
    "\\\\?\\C:\\Windows\\win.ini",
    "a/".repeat(2000) + "x.wav",
    "x".repeat(5000),
    "default.wav",
    "./default.wav",
    "sub/../default.wav",
  ];
}

interface HttpCase {
  method: string;
  path: string;
  headers: Record<string, string>;
  body?: string;
  /** The case names the secret file (any success would have read it). */
  secret?: boolean;
}

function httpCase(r: Rand, secretDir: string, fast: boolean): HttpCase {
  // fast: a request that passes validation gets timeout_ms 1, so it runs every check up to the stages
  // and ends there with DEADLINE_EXCEEDED instead of a full synthesis (1 in 50 still synthesises).
  const timeout = fast && r() < 0.98 ? 1 : 5000;
  const base: Record<string, unknown> = { text: "Hi.", text_lang: "en", sample_steps: 1, timeout_ms: timeout, seed: 1 };
  const json = { "content-type": "application/json" };
  const kind = int(r, 0, 9);
  if (kind === 0) {
    const method = pick(r, ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "PROPFIND"]);
    const path = pick(r, ["/", "/tts/", "/TTS", "/tts/../tts", "/%2e%2e/%2e%2e/etc/passwd", "//etc/passwd", "/health/x", "/tts%00", "/tts?%", "/" + randomString(r), "/..%2f..%2fetc%2fpasswd", "/voices/../../etc/passwd", "/" + "a".repeat(4000)]);
    return { method, path: path.replace(/[^\x21-\x7e]/g, (c) => pct(c)), headers: {} };
  }
  if (kind === 1) {
    // GET with a malformed query string
    const parts: string[] = [];
    for (let i = int(r, 0, 6); i > 0; i--) {
      const k = pick(r, [...FIELDS, randomString(r, 6), "", "%", "%zz", "__proto__", "text[]"]);
      const v = pick(r, [String(hostileValue(r)), "%", "%zz", "%00", "%E0%A4%A", "&&", "=", "+"]);
      parts.push(`${k.startsWith("%") ? k : pct(k)}=${v.startsWith("%") ? v : pct(v)}`);
    }
    if (r() < 0.5) parts.push("text_lang=en");
    return { method: "GET", path: `/tts?${parts.join("&")}`, headers: {} };
  }
  if (kind === 2 || kind === 3) {
    // JSON body, one to three fields made hostile
    const body: Record<string, unknown> = { ...base };
    for (let i = int(r, 1, 3); i > 0; i--) {
      const f = r() < 0.85 ? pick(r, FIELDS) : pick(r, ["__proto__", "constructor", randomString(r, 8)]);
      if (r() < 0.1) delete body[f];
      else body[f] = hostileValue(r);
    }
    if (!Object.hasOwn(body, "timeout_ms") || typeof body.timeout_ms !== "number") body.timeout_ms = timeout;
    return { method: "POST", path: "/tts", headers: json, body: JSON.stringify(body) };
  }
  if (kind === 4) {
    const path = pick(r, hostilePaths(secretDir));
    const secret = /secret|escape/.test(path);
    // a full deadline: if the secret were read, the request would succeed and show it
    const body = { ...base, timeout_ms: 5000, ref_audio_path: path, prompt_text: r() < 0.5 ? "a tone" : "" };
    if (r() < 0.5) return { method: "POST", path: "/tts", headers: json, body: JSON.stringify(body), secret };
    return { method: "GET", path: `/tts?${new URLSearchParams(body as unknown as Record<string, string>)}`, headers: {}, secret };
  }
  if (kind === 5) {
    // not JSON, or not an object, or truncated, or oversized
    const valid = JSON.stringify(base);
    const body = pick(r, [
      valid.slice(0, int(r, 0, valid.length - 1)),
      "[]",
      "null",
      "42",
      '"text"',
      "{",
      "\u0000\u0001\u0002",
      "{\"text\": \"a\", \"text\": 5}",
      "[".repeat(5000) + "]".repeat(5000),
      '{"a":'.repeat(3000) + "1" + "}".repeat(3000),
      JSON.stringify({ ...base, text: "word ".repeat(1200) }),
      JSON.stringify({ ...base, pad: "x".repeat(1024 * 1024 + 10) }),
    ]);
    return { method: "POST", path: "/tts", headers: pick(r, [json, { "content-type": "text/plain" }, {}]), body };
  }
  if (kind === 6) {
    const headers = pick<Record<string, string>>(r, [
      { "content-type": "application/json; charset=utf-16" },
      { "transfer-encoding": "chunked" },
      { "x-forwarded-for": "../../etc" },
      { expect: "100-continue" },
      { "content-type": randomString(r, 20).replace(/[^\x21-\x7e]/g, "x") || "x" },
      { "x-long": "y".repeat(8000) },
      { accept: "*/*", "accept-encoding": "gzip, br" },
    ]);
    return { method: "POST", path: "/tts", headers: { ...json, ...headers }, body: JSON.stringify(base) };
  }
  // numeric edges in the most interesting fields
  const body: Record<string, unknown> = { ...base, [pick(r, ["top_k", "top_p", "temperature", "speed_factor", "sample_steps", "seed", "fragment_interval", "repetition_penalty", "timeout_ms", "batch_size"])]: pick(r, [0, -1, 1e308, -1e308, 2 ** 53 + 1, "1e999", "NaN", 4294967296, 129, 0.0000001, "15abc", [], {}]) };
  return { method: "POST", path: "/tts", headers: json, body: JSON.stringify(body) };
}

/** Raw bytes on a socket: what fetch would refuse to send. */
function rawCase(r: Rand): string {
  return pick(r, [
    "GET /tts?text=a\u0000b HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET /etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
    "GET http://evil/../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
    "POST /tts HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n{}",
    'POST /tts HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5\r\n\r\n{"text":"Hi.","text_lang":"en"}',
    "POST /tts HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "POST /tts HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    "GARBAGE\r\n\r\n",
    "GET / HTTP/9.9\r\n\r\n",
    "TRACE /tts HTTP/1.1\r\nHost: x\r\n\r\n",
    "CONNECT /tts HTTP/1.1\r\nHost: x\r\n\r\n",
    `GET /tts HTTP/1.1\r\nHost: x\r\nX-Big: ${"a".repeat(20_000)}\r\n\r\n`,
    "GET /tts HTTP/1.1\r\nHo st: x\r\n\r\n",
    `${randomString(r, 200)}\r\n\r\n`,
    "\u0000\u0001\u0002\u0003\r\n\r\n",
  ]);
}

async function rawHttp(url: string, data: string): Promise<string> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const s = netConnect({ host: u.hostname, port: Number(u.port) });
    let out = "";
    const timer = setTimeout(() => s.destroy(), 5000);
    s.on("data", (d) => (out += d.toString("latin1")));
    s.on("error", () => undefined);
    s.on("close", () => {
      clearTimeout(timer);
      resolve(out);
    });
    s.write(data, "latin1", () => s.end());
  });
}

/** A valid job for each stage, as a base for mutations. */
function validJob(stage: Stage, id: string, voiceKey: string, audioSha: string): Record<string, unknown> {
  const env = { id, reply: Subjects.reply(id), deadline: Date.now() + 8000, enqueuedAt: Date.now(), timings: [] };
  const params = { topK: 15, topP: 1, temperature: 1, repetitionPenalty: 1.35, seed: 3, speed: 1, sampleSteps: 1, fragmentInterval: 0.3 };
  const seg = { seg: 0, segCount: 1, voiceKey, promptIds: Int32Array.from([10, 20, 30, 40]), textIds: Int32Array.from([50, 60, 70]), params };
  if (stage === "text") return { ...env, text: "Hi there.", textLang: "en", splitMethod: "cut5", voice: { audioSha, promptText: "hello", promptLang: "en" }, params };
  if (stage === "gpt") return { ...env, ...seg };
  if (stage === "sovits") return { ...env, ...seg, tokens: Int32Array.from({ length: 14 }, (_, i) => (i * 37) % 1024) };
  return { ...env, seg: 0, segCount: 1, win: 0, last: true, mel: new Float32Array(100 * 8).fill(-4), frames: 8, overlap: 0, tail: 0, tokens: 2, fragmentInterval: 0 };
}

function hostileTyped(r: Rand): unknown {
  const n = pick(r, [0, 1, 3, 5000, 200_000]);
  return pick(r, [
    Int32Array.from({ length: n }, () => int(r, -5, 2000)),
    Int32Array.from({ length: 4 }, () => pick(r, [-1, 732, 1024, 1025, 2 ** 31 - 1, -(2 ** 31)])),
    new Float64Array(n),
    new Float32Array(Math.min(n, 1000)).fill(Number.NaN),
    new Float32Array(Math.min(n, 1000)).fill(Number.POSITIVE_INFINITY),
    new Uint8Array(n),
    Array.from({ length: Math.min(n, 100) }, () => int(r, 0, 100)),
  ]);
}

const HOSTILE_REPLIES = [`$JS.API.STREAM.DELETE.${WorkQueues.text.stream}`, `$JS.API.STREAM.PURGE.${WorkQueues.gpt.stream}`, "$SYS.REQ.SERVER.PING", WorkQueues.gpt.subject, `${PREFIX}.cancel.victim`, "tts.v1.>", "*", "a b", "a..b", ".a", "x".repeat(300), ""];

function natsPayload(r: Rand, stage: Stage, id: string, voiceKey: string, audioSha: string): { data: Uint8Array; replyExpected: boolean } {
  const kind = int(r, 0, 5);
  if (kind === 0) {
    const n = pick(r, [0, 1, 7, 100, 4096, 65_536, 1024 * 1024, 3 * 1024 * 1024]);
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = (r() * 256) | 0;
    return { data: b, replyExpected: false };
  }
  if (kind === 1) return { data: hostilePackr.pack(hostileValue(r)), replyExpected: false };
  const job = validJob(stage, id, voiceKey, audioSha);
  const keys = Object.keys(job);
  let replyExpected = true;
  for (let i = int(r, 1, 2); i > 0; i--) {
    const k = pick(r, [...keys, "params", "voice", "promptIds", "textIds", "tokens", "mel", "frames"]);
    const v = r() < 0.5 ? hostileTyped(r) : hostileValue(r);
    if (k === "reply") {
      job.reply = r() < 0.5 ? pick(r, HOSTILE_REPLIES) : v;
      replyExpected = false;
    } else if (k === "id") {
      job.id = v;
      replyExpected = false;
    } else if (k === "params" && r() < 0.7) {
      job.params = { ...(job.params as object), [pick(r, ["topK", "topP", "temperature", "repetitionPenalty", "seed", "speed", "sampleSteps", "fragmentInterval"])]: pick(r, [0, -1, Number.NaN, Number.POSITIVE_INFINITY, 1e308, 2 ** 53, "7", null, 1025, 129]) };
    } else job[k] = v;
  }
  if (r() < 0.1) {
    job.pad = new Uint8Array(pick(r, [100_000, 1_000_000, 3_500_000]));
  }
  return { data: hostilePackr.pack(job), replyExpected };
}

export async function runFuzz(o: FuzzOptions): Promise<FuzzReport> {
  const log = o.log ?? ((s: string) => console.log(s));
  const t0 = Date.now();
  const r = prng(o.seed);
  const violations: string[] = [];
  const violate = (s: string) => {
    if (violations.length < 50) violations.push(s);
  };
  const outcomes: Record<string, number> = {};
  const natsReplies: Record<string, number> = {};
  const count = (m: Record<string, number>, k: string) => (m[k] = (m[k] ?? 0) + 1);

  // Voices dir with the default voice and a symlink out of it; a valid secret WAV outside.
  const root = mkdtempSync(join(tmpdir(), "gsv-fuzz-"));
  const voices = join(root, "voices");
  const secretDir = join(root, "secret");
  for (const d of [voices, secretDir]) rmSync(d, { recursive: true, force: true });
  await import("node:fs/promises").then((fs) => Promise.all([fs.mkdir(voices), fs.mkdir(secretDir)]));
  copyFileSync(fromRoot("voices", "default.wav"), join(voices, "default.wav"));
  copyFileSync(fromRoot("voices", "default.txt"), join(voices, "default.txt"));
  writeFileSync(join(secretDir, "secret.wav"), encodeWav(Float32Array.from({ length: 16000 * 5 }, (_, i) => 0.3 * Math.sin(i / 7)), 16000));
  writeFileSync(join(secretDir, "secret.txt"), SECRET_MARKER);
  symlinkSync(join(secretDir, "secret.wav"), join(voices, "escape.wav"));
  symlinkSync(secretDir, join(voices, "escape-dir"));

  let stack: Stack | undefined;
  let vocoder: ServiceProcess | undefined;
  let nc: NatsConnection | undefined;
  let afterwardsOk = false;
  try {
    stack = await startStack({ logs: process.env.GSV_FUZZ_LOGS ? "inherit" : undefined, env: { GSV_VOICES_DIR: voices, GSV_LOG: "error", GSV_ACK_WAIT_MS: "3000", GSV_MAX_INFLIGHT: "256", GSV_MAX_TEXT_CHARS: "5000" } });
    vocoder = await startService("vocoder", { NATS_URL: stack.natsUrl, GSV_VOCODER: VOCODER, GSV_LOG: "error" });
    const procs = [...stack.services, vocoder];
    nc = await connect({ servers: stack.natsUrl });
    const url = stack.gatewayUrl;
    log(`fuzz: seed ${o.seed}; stack up (${procs.length} processes)`);

    // A normal request first: it prepares the default voice, whose key the NATS cases reuse.
    const first = await fetch(`${url}/tts`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ text: "Hello.", text_lang: "en", sample_steps: 1, seed: 1 }) });
    if (first.status !== 200) throw new Error(`the first request failed: ${first.status} ${await first.text()}`);
    await first.arrayBuffer();
    const kv = await nc.jetstream().views.kv(Buckets.voices);
    let voiceKey = "";
    for await (const k of await kv.keys()) voiceKey = k;
    const audioSha = voiceKey.split(".").pop()!;

    // ── HTTP ────────────────────────────────────────────────────────────────────────────────────
    const cases = Array.from({ length: o.httpCases }, () => httpCase(r, secretDir, o.fast ?? false));
    let next = 0;
    const send = (c: HttpCase) => fetch(`${url}${c.path}`, { method: c.method, headers: c.headers, body: c.method === "GET" || c.method === "HEAD" ? undefined : c.body, signal: AbortSignal.timeout(30_000) });
    const check = async (c: HttpCase) => {
      let res: Response;
      try {
        try {
          res = await send(c);
        } catch (err) {
          // A pooled keep-alive connection closed by the server as the request went out (a transport race
          // between undici and Node's keepAliveTimeout, not an answer): send it once more on a new one.
          if (!/other side closed|ECONNRESET/.test(String((err as { cause?: Error }).cause?.message))) throw err;
          count(outcomes, "resent after a closed keep-alive connection");
          res = await send(c);
        }
      } catch (err) {
        const m = (err as Error).message + " " + String((err as { cause?: Error }).cause?.message ?? "");
        // fetch itself refuses some inputs (bad header values, a bad URL); nothing reached the server
        if (/invalid|header|Request cannot be constructed|URL|unsupported/i.test(m)) return count(outcomes, "client refused");
        violate(`${c.method} ${c.path.slice(0, 120)} ${JSON.stringify(c.headers).slice(0, 100)} ${c.body?.slice(0, 100)}… (${c.body?.length} chars): no answer (${m})`);
        return;
      }
      const body = new Uint8Array(await res.arrayBuffer());
      if (c.method === "HEAD") {
        // no body to carry a code; the status must still be an error for anything but a route that exists
        count(outcomes, `HEAD ${res.status}`);
        if (res.status < 400) violate(`HEAD ${c.path.slice(0, 120)}: ${res.status}`);
        return;
      }
      const text = new TextDecoder().decode(body.subarray(0, 4000));
      if (text.includes(SECRET_MARKER)) violate(`${c.method} ${c.path.slice(0, 120)}: the secret's content appeared in the answer`);
      if (res.status === 200) {
        count(outcomes, "200");
        if (c.secret) violate(`${c.method} ${c.path.slice(0, 120)} ${c.body?.slice(0, 200)}: served audio for a path naming the secret file`);
        return;
      }
      let code = "";
      try {
        code = (JSON.parse(new TextDecoder().decode(body)) as { code: string }).code;
      } catch {
        // not JSON
      }
      count(outcomes, `${res.status} ${code || "(no code)"}`);
      if (!isErrorCode(code)) return violate(`${c.method} ${c.path.slice(0, 120)} ${c.body?.slice(0, 200)}: ${res.status} without an error code: ${text.slice(0, 200)}`);
      if (ErrorCodes[code].status !== res.status) violate(`${c.method} ${c.path.slice(0, 120)}: ${res.status} with code ${code} (catalogue: ${ErrorCodes[code].status})`);
      if (res.status >= 500 && !["OVERLOADED", "STAGE_UNAVAILABLE", "DEADLINE_EXCEEDED"].includes(code)) violate(`${c.method} ${c.path.slice(0, 120)} ${c.body?.slice(0, 300)}: ${res.status} ${code}: ${text.slice(0, 300)}`);
    };
    await Promise.all(
      Array.from({ length: o.concurrency ?? 8 }, async () => {
        while (next < cases.length) await check(cases[next++]);
      }),
    );
    log(`fuzz: ${cases.length} HTTP cases in ${((Date.now() - t0) / 1000).toFixed(1)} s`);

    // Raw malformed HTTP
    for (let i = 0; i < o.rawCases; i++) {
      const data = rawCase(r);
      const out = await rawHttp(url, data);
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(out)?.[1] ?? 0);
      const code = /"code":"([A-Z_]+)"/.exec(out)?.[1] ?? "";
      count(outcomes, `raw ${status || "(closed)"} ${code}`);
      if (!status) count(outcomes, `raw closed for ${JSON.stringify(data.slice(0, 40))}`);
      if (out.includes(SECRET_MARKER) || /root:x:0:0/.test(out)) violate(`raw ${JSON.stringify(data.slice(0, 80))}: leaked file content`);
      if (status === 200) violate(`raw ${JSON.stringify(data.slice(0, 80))}: 200 for a malformed request`);
      if (status >= 400 && !isErrorCode(code)) violate(`raw ${JSON.stringify(data.slice(0, 80))}: ${status} without an error code`);
      if (status >= 500) violate(`raw ${JSON.stringify(data.slice(0, 80))}: ${status}`);
    }

    // ── NATS ────────────────────────────────────────────────────────────────────────────────────
    const events = new Map<string, unknown[]>();
    const replySub = nc.subscribe(`${PREFIX}.reply.>`, {
      callback: (_e, m) => {
        const id = m.subject.slice(`${PREFIX}.reply.`.length);
        const list = events.get(id);
        if (list) {
          try {
            list.push(decode(m.data));
          } catch {
            list.push({ undecodable: true });
          }
        }
      },
    });
    const js = nc.jetstream();
    const awaitingReply: { id: string; stage: Stage }[] = [];
    const statusNames = ["text-frontend", "gpt-semantic", "sovits-decoder", "vocoder"];
    for (let i = 0; i < o.natsCases; i++) {
      const target = int(r, 0, 10);
      const id = `fz${o.seed}x${i}`;
      if (target <= 4) {
        const stage = Stages[target % 4];
        const p = natsPayload(r, stage, id, voiceKey, audioSha);
        if (p.replyExpected) events.set(id, []);
        try {
          await js.publish(WorkQueues[stage].subject, p.data);
          if (p.replyExpected) awaitingReply.push({ id, stage });
          count(natsReplies, `queued ${stage}`);
        } catch (err) {
          count(natsReplies, `refused by JetStream (${/size|maximum/i.test((err as Error).message) ? "too large" : (err as Error).message})`);
          events.delete(id);
        }
      } else if (target === 5 || target === 9) {
        // voice preparation and the real vocoder: request/reply, the answer must be coded
        const subject = target === 5 ? Subjects.voicePrepare : Subjects.vocode(VOCODER);
        const data = r() < 0.3 ? hostilePackr.pack({ audioSha: pick(r, [audioSha, "0".repeat(64), "../".repeat(21) + "x", hostileValue(r)]), deadline: hostileValue(r) }) : r() < 0.5 ? hostilePackr.pack({ mel: hostileTyped(r), frames: hostileValue(r), deadline: Date.now() + 5000 }) : natsPayload(r, "vocoder", id, voiceKey, audioSha).data;
        try {
          const m = await nc.request(subject, data, { timeout: 20_000 });
          const rep = decode(m.data) as { ok?: boolean; code?: string };
          if (rep.ok === true) count(natsReplies, `${subject} ok`);
          else if (rep.ok === false && isErrorCode(rep.code)) count(natsReplies, `${subject} ${rep.code}`);
          else violate(`${subject}: reply without ok/code: ${JSON.stringify(rep).slice(0, 200)}`);
          if (rep.code === "INTERNAL") violate(`${subject}: INTERNAL: ${JSON.stringify(rep).slice(0, 300)}`);
        } catch (err) {
          const m = (err as Error).message;
          if (/MAX_PAYLOAD|payload/i.test(m)) count(natsReplies, `${subject} too large for NATS`);
          else violate(`${subject}: no reply (${m})`);
        }
      } else if (target === 10) {
        // model sets: a load request (one replica answers, coded) or a switch's preload broadcast (no reply);
        // names of small sets only, or hostile ones: never the bench set, which takes long to load
        const stage = pick(r, ["gpt-semantic", "sovits-decoder", "vocoder"]);
        const data = r() < 0.5 ? hostilePackr.pack({ set: pick(r, ["tiny", "nope", "../tiny", ".hidden", "x".repeat(300), hostileValue(r)]) }) : natsPayload(r, "gpt", id, voiceKey, audioSha).data.subarray(0, 2000);
        if (r() < 0.5) {
          nc.publish(Subjects.modelsPreload(stage), data);
          count(natsReplies, "models preload");
        } else {
          const subject = Subjects.modelsLoad(stage);
          try {
            const rep = decode((await nc.request(subject, data, { timeout: 20_000 })).data) as { ok?: boolean; code?: string };
            if (rep.ok === true) count(natsReplies, "models load ok");
            else if (rep.ok === false && isErrorCode(rep.code)) count(natsReplies, `models load ${rep.code}`);
            else violate(`${subject}: reply without ok/code: ${JSON.stringify(rep).slice(0, 200)}`);
            if (rep.code === "INTERNAL") violate(`${subject}: INTERNAL: ${JSON.stringify(rep).slice(0, 300)}`);
          } catch (err) {
            violate(`${subject}: no reply (${(err as Error).message})`);
          }
        }
      } else if (target === 6) {
        nc.publish(`${PREFIX}.cancel.${pick(r, [id, "victim", "x".repeat(200)])}`, natsPayload(r, "text", id, voiceKey, audioSha).data.subarray(0, 1000));
        count(natsReplies, "cancel");
      } else {
        const name = pick(r, statusNames);
        const subject = target === 7 ? `${PREFIX}.status.${name}` : `${PREFIX}.stats.${name}`;
        try {
          const m = await nc.request(subject, natsPayload(r, "gpt", id, voiceKey, audioSha).data.subarray(0, 100_000), { timeout: 10_000 });
          const rep = decode(m.data) as { replica?: string };
          if (typeof rep.replica !== "string") violate(`${subject}: odd reply ${JSON.stringify(rep).slice(0, 200)}`);
          count(natsReplies, `${target === 7 ? "status" : "stats"} answered`);
        } catch (err) {
          violate(`${subject}: no reply (${(err as Error).message})`);
        }
      }
      if (i % 200 === 199) await new Promise((res) => setTimeout(res, 50)); // let the stages keep up
    }
    // Every work message that named a usable reply subject hears back (an error code, or its audio).
    const until = Date.now() + 60_000;
    const pendingIds = () => awaitingReply.filter(({ id }) => (events.get(id) ?? []).length === 0);
    while (pendingIds().length && Date.now() < until) await new Promise((res) => setTimeout(res, 200));
    for (const { id, stage } of pendingIds()) violate(`work message ${id} to ${stage}: no event on its reply subject`);
    for (const { id, stage } of awaitingReply) {
      for (const ev of events.get(id) ?? []) {
        const e = ev as { type?: string; code?: string; message?: string };
        count(natsReplies, `event ${e.type}${e.code ? " " + e.code : ""}`);
        if (e.type === "error" && (!isErrorCode(e.code) || e.code === "INTERNAL" || e.code === "MODEL_ERROR")) violate(`${stage} ${id}: error event ${e.code}: ${e.message}`);
      }
    }
    replySub.unsubscribe();
    log(`fuzz: ${o.natsCases} NATS cases; ${awaitingReply.length} expected a reply`);

    // ── Afterwards ──────────────────────────────────────────────────────────────────────────────
    for (const p of procs) if (p.proc.exitCode !== null || p.proc.signalCode !== null) violate(`${p.name} exited (${p.proc.exitCode ?? p.proc.signalCode})`);
    const jsm = await nc.jetstreamManager();
    for (const s of Stages) {
      try {
        await jsm.streams.info(WorkQueues[s].stream);
      } catch {
        violate(`stream ${WorkQueues[s].stream} is gone`);
      }
    }
    try {
      const after = await fetch(`${url}/tts`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ text: "Still here.", text_lang: "en", sample_steps: 1, seed: 2 }) });
      afterwardsOk = after.status === 200 && (await after.arrayBuffer()).byteLength > 44;
      if (!afterwardsOk) violate(`a normal request afterwards failed: ${after.status}`);
    } catch (err) {
      violate(`a normal request afterwards failed: ${(err as Error).message}`);
    }
  } finally {
    await nc?.close().catch(() => undefined);
    await vocoder?.stop();
    await stack?.stop();
    rmSync(root, { recursive: true, force: true });
  }
  return { seed: o.seed, cases: { http: o.httpCases, raw: o.rawCases, nats: o.natsCases }, outcomes, natsReplies, violations, durationMs: Date.now() - t0, afterwardsOk };
}

export async function fuzzCli(argv: string[]): Promise<number> {
  const { values } = parseArgs({ args: argv, options: { http: { type: "string", default: "20000" }, raw: { type: "string", default: "500" }, nats: { type: "string", default: "5000" }, seed: { type: "string" }, fast: { type: "boolean", default: false } } });
  const seed = values.seed ? Number(values.seed) : Math.floor(Math.random() * 2 ** 31);
  console.log(`fuzz: seed ${seed} (replay with --seed ${seed})`);
  const rep = await runFuzz({ seed, httpCases: Number(values.http), rawCases: Number(values.raw), natsCases: Number(values.nats), fast: values.fast });
  console.log(JSON.stringify({ outcomes: rep.outcomes, nats: rep.natsReplies }, null, 1));
  console.log(`fuzz: ${rep.cases.http + rep.cases.raw + rep.cases.nats} cases in ${(rep.durationMs / 1000).toFixed(1)} s, ${rep.violations.length} violations`);
  for (const v of rep.violations) console.log(`VIOLATION: ${v}`);
  return rep.violations.length ? 1 : 0;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  fuzzCli(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err) => {
      console.error(`fuzz: ${(err as Error).stack}`);
      process.exit(2);
    },
  );
}
