/**
 * The HTTP face of the pipeline: upstream api_v2's `/tts` (GET and POST, same names and defaults),
 * plus /health. Requests are validated here, the reference audio goes to the object store by content
 * hash, and the pipeline is driven over NATS by shared/client.ts.
 */
import { createHash } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { readFile, realpath, stat } from "node:fs/promises";
import { isAbsolute, join, sep } from "node:path";
import type { NatsConnection, ObjectStore } from "nats";
import { synthesize, type SynthesisResult } from "../../shared/client.js";
import { encodeWav, floatToInt16 } from "../../shared/dsp/index.js";
import { GsvError, toGsvError } from "../../shared/errors.js";
import { log } from "../../shared/log.js";
import { TtsParams } from "../../shared/schemas.js";
import { resolveSeed } from "../../shared/sampling.js";
import { PREFIX, ServiceNames } from "../../shared/subjects.js";
import { decode } from "../../shared/codec.js";
import { toStreamMode } from "../../shared/streaming.js";
import { streamAudio } from "./stream.js";

export interface GatewayOptions {
  nc: NatsConnection;
  refAudio: ObjectStore;
  voicesDir: string;
  requestTimeoutMs: number;
  maxInflight: number;
  maxBodyBytes?: number;
}

export const DEFAULT_VOICE = "default.wav";
const MAX_REF_BYTES = 20 * 1024 * 1024;

export class Gateway {
  #o: GatewayOptions;
  #inflight = 0;
  #uploaded = new Set<string>();
  readonly server: Server;

  constructor(o: GatewayOptions) {
    this.#o = o;
    this.server = createServer((req, res) => {
      this.#route(req, res).catch((err) => this.#fail(res, toGsvError(err)));
    });
  }

  async #route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://localhost");
    if (url.pathname === "/tts" && (req.method === "GET" || req.method === "POST")) return this.#tts(req, res, url);
    if (url.pathname === "/health" && req.method === "GET") return this.#health(res);
    if (url.pathname === "/tts") throw new GsvError("BAD_REQUEST", `method ${req.method} is not allowed on /tts`);
    throw new GsvError("NOT_FOUND", `no route ${req.method} ${url.pathname}`);
  }

  async #health(res: ServerResponse): Promise<void> {
    const stages: Record<string, number> = {};
    for (const name of Object.values(ServiceNames)) {
      if (name === "gateway") continue;
      stages[name] = 0;
      try {
        const it = await this.#o.nc.requestMany(`${PREFIX}.status.${name}`, new Uint8Array(), { maxWait: 300 });
        for await (const m of it) {
          decode(m.data);
          stages[name]++;
        }
      } catch {
        // no replica answered
      }
    }
    const ok = Object.values(stages).every((n) => n > 0);
    this.#json(res, ok ? 200 : 503, { status: ok ? "ok" : "degraded", replicas: stages, inflight: this.#inflight });
  }

  async #params(req: IncomingMessage, url: URL): Promise<TtsParams> {
    let raw: Record<string, unknown>;
    if (req.method === "GET") {
      raw = {};
      for (const [k, v] of url.searchParams) raw[k] = v;
    } else {
      const body = await readBody(req, this.#o.maxBodyBytes ?? 1024 * 1024);
      try {
        raw = JSON.parse(body.toString("utf8"));
      } catch {
        throw new GsvError("BAD_REQUEST", "the body is not valid JSON");
      }
      if (!raw || typeof raw !== "object" || Array.isArray(raw)) throw new GsvError("BAD_REQUEST", "the body must be a JSON object");
    }
    const parsed = TtsParams.safeParse(raw);
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      const field = issue?.path.join(".") || "request";
      const code = field === "text" ? "MISSING_TEXT" : "BAD_PARAMETER";
      throw new GsvError(code, `${field}: ${issue?.message}`);
    }
    if (!parsed.data.text.trim()) throw new GsvError("MISSING_TEXT", "text: must not be empty");
    return parsed.data;
  }

  /** A reference path is opened only if it resolves (links followed) inside the voices directory. */
  async #resolveVoice(p: TtsParams): Promise<{ bytes: Uint8Array; promptText: string }> {
    const dir = await realpath(this.#o.voicesDir);
    const rel = p.ref_audio_path ?? DEFAULT_VOICE;
    const candidate = isAbsolute(rel) ? rel : join(dir, rel);
    let real: string;
    try {
      real = await realpath(candidate);
    } catch {
      if (!candidate.startsWith(dir + sep)) throw new GsvError("PATH_NOT_ALLOWED", `ref_audio_path ${JSON.stringify(rel)} is outside the voices directory`);
      throw new GsvError("NOT_FOUND", `ref_audio_path ${JSON.stringify(rel)} does not exist in the voices directory`);
    }
    if (!real.startsWith(dir + sep)) throw new GsvError("PATH_NOT_ALLOWED", `ref_audio_path ${JSON.stringify(rel)} is outside the voices directory`);
    const st = await stat(real);
    if (!st.isFile()) throw new GsvError("BAD_AUDIO", `ref_audio_path ${JSON.stringify(rel)} is not a file`);
    if (st.size > MAX_REF_BYTES) throw new GsvError("BAD_AUDIO", `the reference file is larger than ${MAX_REF_BYTES} bytes`);
    let promptText = p.prompt_text.trim();
    if (!promptText) {
      // A voice may ship its transcript beside it (voice.wav + voice.txt), as the bundled default does.
      const txt = real.replace(/\.[^./\\]+$/, "") + ".txt";
      promptText = (await readFile(txt, "utf8").catch(() => "")).trim();
    }
    if (!promptText) throw new GsvError("BAD_PARAMETER", "prompt_text is required for v3 (it has no reference-free mode)");
    return { bytes: await readFile(real), promptText };
  }

  async #tts(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const t0 = Date.now();
    const p = await this.#params(req, url);
    if (this.#inflight >= this.#o.maxInflight) {
      res.setHeader("Retry-After", "1");
      throw new GsvError("OVERLOADED", `${this.#inflight} requests in flight; try again shortly`);
    }
    this.#inflight++;
    const abort = new AbortController();
    const onClose = () => {
      if (!res.writableEnded) abort.abort();
    };
    res.on("close", onClose);
    try {
      const voice = await this.#resolveVoice(p);
      const audioSha = createHash("sha256").update(voice.bytes).digest("hex");
      await this.#upload(audioSha, voice.bytes);
      const gatewayMs = Date.now() - t0;
      const request = {
        text: p.text,
        textLang: p.text_lang,
        splitMethod: p.text_split_method,
        voice: { audioSha, promptText: voice.promptText, promptLang: p.prompt_lang },
        params: {
          topK: p.top_k,
          topP: p.top_p,
          temperature: p.temperature,
          repetitionPenalty: p.repetition_penalty,
          seed: resolveSeed(p.seed),
          speed: p.speed_factor,
          sampleSteps: p.sample_steps,
          fragmentInterval: p.fragment_interval,
        },
        timeoutMs: p.timeout_ms || this.#o.requestTimeoutMs,
        signal: abort.signal,
      };
      const mode = toStreamMode(p.streaming_mode) ?? 0;
      if (mode) return await streamAudio(res, this.#o.nc, { ...request, stream: mode }, p.media_type, gatewayMs);
      const result = await synthesize(this.#o.nc, request);
      this.#sendAudio(res, p.media_type, result, gatewayMs);
    } finally {
      this.#inflight--;
      res.off("close", onClose);
    }
  }

  async #upload(sha: string, bytes: Uint8Array): Promise<void> {
    if (this.#uploaded.has(sha)) return;
    const info = await this.#o.refAudio.info(sha);
    if (!info) await this.#o.refAudio.putBlob({ name: sha }, bytes);
    this.#uploaded.add(sha);
  }

  #sendAudio(res: ServerResponse, media: "wav" | "raw", r: SynthesisResult, gatewayMs: number): void {
    const body = media === "wav" ? encodeWav(r.pcm, r.sampleRate) : new Uint8Array(floatToInt16(r.pcm).buffer);
    const timing = [`gateway;dur=${gatewayMs}`, ...r.stages.flatMap((s) => [`${s.stage};dur=${s.computeMs};desc="compute x${s.units}"`, `${s.stage}-queue;dur=${s.queueMs}`]), `total;dur=${r.totalMs}`];
    res.writeHead(200, {
      "Content-Type": media === "wav" ? "audio/wav" : "audio/raw",
      "Content-Length": body.length,
      "Server-Timing": timing.join(", "),
      "X-Request-Id": r.id,
      "X-Gsv-Segments": String(r.segments),
      "X-Gsv-Tokens": r.tokens.join(","),
      "X-Gsv-Sample-Rate": String(r.sampleRate),
      "X-Gsv-Stages": JSON.stringify(r.stages),
    });
    res.end(body);
  }

  #json(res: ServerResponse, status: number, body: unknown): void {
    const data = JSON.stringify(body);
    res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(data) });
    res.end(data);
  }

  #fail(res: ServerResponse, e: GsvError): void {
    if (e.code === "INTERNAL") log.error("gateway: " + e.message);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    // Upstream answers errors as {"message", "Exception"}; we add the code.
    this.#json(res, e.status, { code: e.code, message: e.message, Exception: e.message });
  }

  listen(port: number, host: string): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once("error", reject);
      this.server.listen(port, host, () => {
        const addr = this.server.address();
        resolve(typeof addr === "object" && addr ? addr.port : port);
      });
    });
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

function readBody(req: IncomingMessage, max: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let n = 0;
    req.on("data", (c: Buffer) => {
      n += c.length;
      if (n > max) {
        reject(new GsvError("TEXT_TOO_LONG", `the request body is larger than ${max} bytes`));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}
