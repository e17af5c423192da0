/**
 * The HTTP face of the pipeline. This file owns the server, routing, admission, reference-voice
 * resolution and the one path into the pipeline (`synthesize`); the endpoints live in route modules:
 *   routes/api-v2.ts  upstream api_v2 (/tts, /control, /set_refer_audio, /set_*_weights)
 *   routes/openai.ts  OpenAI-compatible /v1/audio/speech, /v1/models
 *   routes/voices.ts  the voice registry (/voices)
 * Reference audio goes to the object store by content hash; shared/client.ts drives the stages.
 */
import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { readFile, realpath, stat } from "node:fs/promises";
import { isAbsolute, join, sep } from "node:path";
import { RequestStrategy, type NatsConnection, type ObjectStore } from "nats";
import { synthesize, type SynthesisResult } from "../../shared/client.js";
import { decode } from "../../shared/codec.js";
import { GsvError, toGsvError } from "../../shared/errors.js";
import { log } from "../../shared/log.js";
import type { GenParams, TextJob } from "../../shared/schemas.js";
import { PREFIX, ServiceNames } from "../../shared/subjects.js";
import { sha256Hex, VoiceRegistry } from "../../shared/voice-registry.js";
import { errorBody, sendJson, VOICE_PREFIX, type Ctx, type ErrorStyle, type Route } from "./common.js";

export { VOICE_PREFIX };
import { apiV2Routes } from "./routes/api-v2.js";
import { openaiRoutes } from "./routes/openai.js";
import { voiceRoutes } from "./routes/voices.js";
import { CONTENT_TYPE, metrics } from "../../shared/metrics.js";
import { parseTraceparent, SpanKind, tracer, withSpan } from "../../shared/trace.js";
import { GatewayObserver } from "./observe.js";
import { checkApiKey } from "./auth.js";
import { Admission } from "./admission.js";
import { answerProtocolErrors, requestUrl } from "./protocol-errors.js";
import type { StreamMode } from "../../shared/streaming.js";
import type { ModelSelector } from "./model-sets.js";
import type { ModelSelection } from "../../shared/model-sets.js";

export interface GatewayOptions {
  nc: NatsConnection;
  refAudio: ObjectStore;
  /** Registered voices (KV + object store); see shared/voice-registry.ts. */
  registry: VoiceRegistry;
  voicesDir: string;
  requestTimeoutMs: number;
  maxInflight: number;
  maxBodyBytes?: number;
  /** Largest accepted voice upload (GSV_MAX_UPLOAD_BYTES). */
  maxUploadBytes?: number;
  /** Called by /control?command=exit after the answer is sent: shut the process down gracefully. */
  onExit?: () => void;
  /** Admission control (admission.ts); by default only the maxInflight cap. */
  admission?: Admission;
  /** The model sets new requests run on, and the switch (model-sets.ts); absent: the stages' defaults. */
  models?: ModelSelector;
}

export const DEFAULT_VOICE = "default.wav";
const MAX_REF_BYTES = 20 * 1024 * 1024;

/** A reference voice ready to be named in a TextJob. */
export interface ResolvedVoice {
  audioSha: string;
  /** The transcript that came with the voice (registry entry or a .txt beside the file), "" if none. */
  promptText: string;
  promptLang?: string;
  /** How the request named it, for messages and the X-Gsv-Voice header. */
  label: string;
}

/** One synthesis as the route modules describe it, before it becomes a TextJob. */
export interface SynthJob {
  text: string;
  textLang: string;
  splitMethod: TextJob["splitMethod"];
  voice: ResolvedVoice;
  /** The request's prompt text; "" falls back to the voice's own transcript. */
  promptText: string;
  promptLang?: string;
  params: GenParams;
  timeoutMs: number;
  onAudio?: (pcm: Float32Array, sampleRate: number) => void;
  /** When the HTTP request arrived (epoch ms), for the recent-requests timeline; default: now. */
  receivedAt?: number;
  /** Streaming mode 1..3 (docs/streaming.md); absent: the whole segment is decoded before its audio. */
  stream?: StreamMode;
  /** The model sets to run on; absent: the current selection (/set_*_weights), else the stages' defaults. */
  models?: ModelSelection;
  /** The request id (X-Request-Id); absent: a new one. */
  id?: string;
}

/** A new request id: 32 hex digits. */
export function newRequestId(): string {
  return randomUUID().replaceAll("-", "");
}

export class Gateway {
  readonly o: GatewayOptions;
  readonly #admission: Admission;
  readonly server: Server;
  #inflight = 0;
  #routes: Route[];
  /** The reference used when a request names none: /set_refer_audio changes it, /control restart resets it. */
  defaultRef = DEFAULT_VOICE;
  /** Metrics, recent requests and status (services/gateway/observe.ts). */
  readonly observer = new GatewayObserver();

  constructor(o: GatewayOptions) {
    this.o = o;
    this.#routes = [
      ...apiV2Routes(this),
      ...openaiRoutes(this),
      ...voiceRoutes(this),
      { method: "GET", path: "/health", handle: (ctx) => this.#health(ctx.res) },
      { method: "GET", path: "/metrics", handle: (ctx) => this.#metrics(ctx.res) },
    ];
    this.#admission = o.admission ?? new Admission({ maxInflight: o.maxInflight, maxQueued: 0 });
    this.observer.trackInflight(() => this.#inflight);
    this.server = createServer((req, res) => {
      this.observer.watch(req, res);
      this.#route(req, res);
    });
    answerProtocolErrors(this.server);
  }

  get inflight(): number {
    return this.#inflight;
  }

  #route(req: IncomingMessage, res: ServerResponse): void {
    let url: URL;
    try {
      url = requestUrl(req.url);
    } catch (err) {
      this.fail(res, toGsvError(err), "api_v2");
      return;
    }
    let style: ErrorStyle = url.pathname.startsWith("/v1/") ? "openai" : "api_v2";
    const run = async () => {
      checkApiKey(req, url.pathname);
      let pathMatched = false;
      for (const r of this.#routes) {
        const m = typeof r.path === "string" ? (r.path === url.pathname ? [url.pathname] : null) : r.path.exec(url.pathname);
        if (!m) continue;
        pathMatched = true;
        if (r.method !== req.method) continue;
        style = r.style ?? style;
        const ctx: Ctx = { req, res, url, params: m.slice(1).map(decodePathPart) };
        return r.handle(ctx);
      }
      if (pathMatched) throw new GsvError("BAD_REQUEST", `method ${req.method} is not allowed on ${url.pathname}`);
      throw new GsvError("NOT_FOUND", `no route ${req.method} ${url.pathname}`);
    };
    run().catch((err) => this.fail(res, toGsvError(err), style));
  }

  async #metrics(res: ServerResponse): Promise<void> {
    const body = await metrics.render();
    res.writeHead(200, { "Content-Type": CONTENT_TYPE, "Content-Length": Buffer.byteLength(body) }).end(body);
  }

  async #health(res: ServerResponse): Promise<void> {
    const stages: Record<string, number> = {};
    for (const name of Object.values(ServiceNames)) {
      if (name === "gateway") continue;
      stages[name] = 0;
      try {
        const it = await this.o.nc.requestMany(`${PREFIX}.status.${name}`, new Uint8Array(), { maxWait: 300 });
        for await (const m of it) {
          decode(m.data);
          stages[name]++;
        }
      } catch {
        // no replica answered
      }
    }
    const ok = Object.values(stages).every((n) => n > 0);
    // models: the sets new requests run on (/set_*_weights); null = every stage's default set.
    sendJson(res, ok ? 200 : 503, { status: ok ? "ok" : "degraded", replicas: stages, inflight: this.#inflight, models: this.o.models?.current ?? null });
  }

  /**
   * A reference as api_v2 names it: "voice:<id>" (a registered voice), or a path that must resolve
   * (links followed) inside the voices directory. Empty means the current default reference.
   */
  async resolveVoice(ref: string | undefined): Promise<ResolvedVoice> {
    const spec = ref && ref.trim() ? ref : this.defaultRef;
    if (spec.startsWith(VOICE_PREFIX)) {
      const v = await this.o.registry.require(spec.slice(VOICE_PREFIX.length));
      return { audioSha: v.audioSha, promptText: v.promptText, promptLang: v.promptLang, label: spec };
    }
    const file = await this.readVoiceFile(spec);
    const audioSha = sha256Hex(file.bytes);
    await this.o.registry.putAudio(audioSha, file.bytes);
    return { audioSha, promptText: file.promptText, label: spec };
  }

  /** Read a reference file from the voices directory (and its .txt transcript beside it, if any). */
  async readVoiceFile(rel: string): Promise<{ bytes: Uint8Array; promptText: string; real: string }> {
    const dir = await realpath(this.o.voicesDir);
    const shown = JSON.stringify(rel);
    const candidate = isAbsolute(rel) ? rel : join(dir, rel);
    let real: string;
    try {
      real = await realpath(candidate);
    } catch {
      if (!candidate.startsWith(dir + sep)) throw new GsvError("PATH_NOT_ALLOWED", `ref_audio_path ${shown} is outside the voices directory`);
      throw new GsvError("NOT_FOUND", `ref_audio_path ${shown} does not exist in the voices directory`);
    }
    if (!real.startsWith(dir + sep)) throw new GsvError("PATH_NOT_ALLOWED", `ref_audio_path ${shown} is outside the voices directory`);
    const st = await stat(real);
    if (!st.isFile()) throw new GsvError("BAD_AUDIO", `ref_audio_path ${shown} is not a file`);
    if (st.size > MAX_REF_BYTES) throw new GsvError("BAD_AUDIO", `the reference file is larger than ${MAX_REF_BYTES} bytes`);
    // A voice may ship its transcript beside it (voice.wav + voice.txt), as the bundled default does.
    const txt = real.replace(/\.[^./\\]+$/, "") + ".txt";
    const promptText = (await readFile(txt, "utf8").catch(() => "")).trim();
    return { bytes: await readFile(real), promptText, real };
  }

  /**
   * Run one request through the pipeline, counted against the in-flight limit. `signal` aborts it
   * (the HTTP client went away): the stages are told to cancel. `req` carries the caller's W3C trace
   * context; the request is traced and recorded for /metrics and `gsv profile`.
   */
  async synthesize(job: SynthJob, signal: AbortSignal, req?: IncomingMessage, res?: ServerResponse): Promise<SynthesisResult> {
    const promptText = job.promptText.trim() || job.voice.promptText;
    if (!promptText) throw new GsvError("BAD_PARAMETER", "prompt_text is required for v3 (it has no reference-free mode)");
    // Admission control (admission.ts): sheds with 503 OVERLOADED + Retry-After and releases the slot
    // when the response ends. Callers without an HTTP response get the plain in-flight cap.
    if (res) this.#admission.admit(res, job.timeoutMs || this.o.requestTimeoutMs);
    else if (this.#inflight >= this.o.maxInflight) {
      throw Object.assign(new GsvError("OVERLOADED", `${this.#inflight} requests in flight; try again shortly`), { retryAfter: 1 });
    }
    const id = job.id ?? newRequestId();
    // Read once, at admission: a switch after this point does not change the sets this request runs on.
    const models = job.models ?? this.o.models?.current;
    const receivedAt = job.receivedAt ?? Date.now();
    const path = req ? requestUrl(req.url).pathname : "/tts";
    // Continue the caller's trace (W3C traceparent), or start one.
    const parent = parseTraceparent(req?.headers.traceparent as string | undefined, req?.headers.tracestate as string | undefined);
    const span = tracer.startSpan(`${req?.method ?? "POST"} ${path}`, { parent: parent ?? null, kind: SpanKind.SERVER, attributes: { "http.request.method": req?.method ?? "POST", "url.path": path, "gsv.request_id": id } });
    this.#inflight++;
    try {
      const r = await withSpan(span, () =>
        synthesize(this.o.nc, {
          id,
          text: job.text,
          textLang: job.textLang,
          splitMethod: job.splitMethod,
          voice: { audioSha: job.voice.audioSha, promptText, promptLang: job.promptLang ?? job.voice.promptLang ?? "en" },
          params: job.params,
          timeoutMs: job.timeoutMs || this.o.requestTimeoutMs,
          signal,
          onAudio: job.onAudio,
          ...(job.stream ? { stream: job.stream } : {}),
          ...(models ? { models } : {}),
        }),
      );
      span.setAttribute("http.response.status_code", 200);
      this.observer.record({
        id,
        traceId: span.context.traceId,
        receivedAt,
        queuedAt: r.startedAt,
        firstAudioAt: r.firstAudioMs >= 0 ? r.startedAt + r.firstAudioMs : undefined,
        doneAt: Date.now(),
        status: 200,
        segments: r.segments,
        audioSeconds: r.pcm.length / r.sampleRate,
        timings: r.timings,
      });
      return r;
    } catch (err) {
      const e = toGsvError(err);
      span.setAttribute("http.response.status_code", e.status).setError(e.code, e.message);
      this.observer.record({ id, traceId: span.context.traceId, receivedAt, doneAt: Date.now(), status: e.status, code: e.code, timings: [] });
      throw err;
    } finally {
      this.#inflight--;
      span.end();
    }
  }

  /** /control?command=restart: forget run-time changes made by earlier requests. */
  restart(): void {
    this.defaultRef = DEFAULT_VOICE;
  }

  /** Names of the model sets the gpt-semantic replicas serve (their services-API metadata). */
  async servedModelSets(): Promise<string[]> {
    const names = new Set<string>();
    try {
      const it = await this.o.nc.services.client({ maxWait: 500, strategy: RequestStrategy.Timer }).info(ServiceNames.gpt);
      for await (const info of it) if (info.metadata?.modelSet) names.add(info.metadata.modelSet);
    } catch {
      // no replica answered
    }
    return [...names];
  }

  /** An AbortSignal that fires when the client disconnects before the answer is complete. */
  clientGone(res: ServerResponse): { signal: AbortSignal; done(): void } {
    const abort = new AbortController();
    const onClose = () => {
      if (!res.writableEnded) abort.abort();
    };
    res.on("close", onClose);
    return { signal: abort.signal, done: () => res.off("close", onClose) };
  }

  fail(res: ServerResponse, e: GsvError, style: ErrorStyle): void {
    (res as ServerResponse & { gsvCode?: string }).gsvCode ??= e.code;
    if (e.code === "INTERNAL") log.error("gateway: " + e.message);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    const retryAfter = (e as GsvError & { retryAfter?: number }).retryAfter;
    sendJson(res, e.status, errorBody(e, style), retryAfter ? { "Retry-After": String(retryAfter) } : {});
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
    return new Promise<void>((resolve) => this.server.close(() => resolve())).then(() => this.observer.close());
  }
}

function decodePathPart(s: string | undefined): string {
  try {
    return decodeURIComponent(s ?? "");
  } catch {
    throw new GsvError("BAD_REQUEST", `the path part ${JSON.stringify(s)} is not valid percent-encoding`);
  }
}
