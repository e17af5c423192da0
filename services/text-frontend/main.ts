/** text-frontend stage: normalise, split, G2P; asks for the voice to be prepared; fans out one GPT job per segment. */
import { loadConfig } from "../../shared/config.js";
import { decodeAs, encode } from "../../shared/codec.js";
import { GsvError, isErrorCode } from "../../shared/errors.js";
import { log } from "../../shared/log.js";
import { connectNats } from "../../shared/nats.js";
import { TextJob, VoicePrepareReply, type GptJob } from "../../shared/schemas.js";
import { StageRunner, runUntilSignalled, timing } from "../../shared/stage.js";
import { Subjects } from "../../shared/subjects.js";
import { traceHeaders } from "../../shared/trace.js";
import { promptToPhones, textToSegments } from "./frontend.js";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { MANIFEST_FILE, graphPath, loadManifest } from "../../shared/manifest.js";
import { OrtPool } from "../../shared/ort-pool.js";
import { ortBackend } from "../../shared/cost-model.js";
import { i64 } from "../../shared/tensor.js";
import { bertCompact, loadVocab, type BertRunner, type BertVocab } from "./bert.js";

const cfg = loadConfig("text-frontend");
const nc = await connectNats({ url: cfg.natsUrl, name: cfg.replica });

/**
 * zh BERT (docs/frontend.md): when the model set has the optional bert_zh graph, it runs here (worker
 * threads) and each GPT job carries its segment's and the prompt's features; otherwise nothing is sent
 * and gpt-semantic passes zeros, as before.
 */
async function loadBert(): Promise<{ runner: BertRunner; vocab: BertVocab; dim: number; pool: OrtPool } | null> {
  if (!existsSync(join(cfg.modelDir, MANIFEST_FILE)) || ortBackend() === "cost-model") return null;
  const manifest = loadManifest(cfg.modelDir, { graphs: [] });
  if (!manifest.graphs.bert_zh) return null;
  loadManifest(cfg.modelDir, { graphs: ["bert_zh"] }); // size and sha256 of the graph and its vocab
  const vocab = loadVocab(join(cfg.modelDir, manifest.graphs.bert_zh.vocab.file));
  const pool = await OrtPool.create({ modelDir: cfg.modelDir, manifest, graphs: ["bert_zh"], workers: cfg.ortWorkers, intraOpThreads: cfg.ortThreads });
  const runner: BertRunner = async ({ input_ids, attention_mask, token_type_ids, dims }) => {
    const out = await pool.run("bert_zh", { input_ids: i64(input_ids, dims), attention_mask: i64(attention_mask, dims), token_type_ids: i64(token_type_ids, dims) });
    const h = out.hidden_m3;
    if (!h || !(h.data instanceof Float32Array)) throw new GsvError("MODEL_ERROR", "bert_zh returned no float32 hidden_m3");
    return { data: h.data, dims: h.dims };
  };
  log.info("zh BERT features on", { graph: graphPath(cfg.modelDir, manifest, "bert_zh"), dim: manifest.dims.t2s.bertDim });
  return { runner, vocab, dim: manifest.dims.t2s.bertDim, pool };
}
const bert = await loadBert();
/** Bytes a GPT job may spend on BERT features: the server's max_payload less 64 KiB for everything else. */
const bertBudget = Math.max(0, (nc.info?.max_payload ?? 1024 * 1024) - 64 * 1024);

/** One attempt waits at most this long: a replica killed mid-preparation never answers, so ask again (another replica). */
const PREPARE_ATTEMPT_MS = 15_000;

async function prepareVoice(job: TextJob): Promise<string> {
  let data: Uint8Array | undefined;
  while (!data) {
    const left = job.deadline - Date.now();
    if (left <= 0) throw new GsvError("DEADLINE_EXCEEDED", "voice preparation did not answer before the deadline");
    try {
      const m = await nc.request(Subjects.voicePrepare, encode({ audioSha: job.voice.audioSha, deadline: job.deadline, ...(job.models ? { sovits: job.models.sovits } : {}) }), { timeout: Math.min(left, PREPARE_ATTEMPT_MS), headers: traceHeaders() });
      data = m.data;
    } catch (err) {
      const msg = (err as Error).message;
      if (/timeout/i.test(msg)) continue;
      throw new GsvError("STAGE_UNAVAILABLE", `voice preparation (sovits-decoder) is not reachable: ${msg}`);
    }
  }
  const reply = decodeAs(VoicePrepareReply, data);
  if (!reply.ok) throw new GsvError(isErrorCode(reply.code) ? reply.code : "INTERNAL", reply.message);
  return reply.voiceKey;
}

const runner = new StageRunner({
  stage: "text",
  schema: TextJob,
  nc,
  replica: cfg.replica,
  concurrency: cfg.concurrency,
  ackWaitMs: cfg.ackWaitMs,
  async handle(job, ctx) {
    const started = Date.now();
    const voice = prepareVoice(job); // runs while we do G2P
    voice.catch(() => undefined);
    const segments = textToSegments(job.text, job.textLang, job.splitMethod, { maxChars: cfg.maxTextChars });
    const prompt = promptToPhones(job.voice.promptText, job.voice.promptLang);
    // One padded batch over every zh run of the request; the prompt's features are the last entry.
    const feats = bert ? await bertCompact([...segments, prompt], bert) : [];
    const promptBert = feats[segments.length] ?? null;
    for (let seg = 0; seg < segments.length; seg++) {
      const bytes = ((feats[seg]?.vecs.length ?? 0) + (promptBert?.vecs.length ?? 0)) * 4 + ((feats[seg]?.index.length ?? 0) + (promptBert?.index.length ?? 0)) * 4;
      if (bytes > bertBudget) {
        throw new GsvError("SEGMENT_TOO_LONG", `segment ${seg} ("${segments[seg].normText.slice(0, 40)}…") needs ${bytes} bytes of BERT features; one message holds ${bertBudget} (NATS max_payload less 64 KiB)`);
      }
    }
    const voiceKey = await voice;
    ctx.checkAlive(job);
    const t = timing("text", cfg.replica, job, started, 1, -1);
    const timings = [...job.timings, t];
    ctx.reply(job, { type: "plan", id: job.id, segments: segments.length, texts: segments.map((s) => s.normText), timings });
    const promptIds = Int32Array.from(prompt.ids);
    for (let seg = 0; seg < segments.length; seg++) {
      const out: GptJob = {
        id: job.id,
        reply: job.reply,
        deadline: job.deadline,
        enqueuedAt: Date.now(),
        timings,
        seg,
        segCount: segments.length,
        voiceKey,
        promptIds,
        textIds: Int32Array.from(segments[seg].ids),
        ...(promptBert ? { promptBert } : {}),
        ...(feats[seg] ? { textBert: feats[seg]! } : {}),
        params: job.params,
        ...(job.stream ? { stream: job.stream } : {}),
        ...(job.models ? { models: job.models } : {}),
      };
      await ctx.forward("gpt", `${job.id}:gpt:${seg}`, out);
    }
  },
});

await runner.start();
log.info("text-frontend ready", { replica: cfg.replica });
process.stdout.write(JSON.stringify({ ready: "text-frontend", replica: cfg.replica, metrics: runner.metricsUrl }) + "\n");
runUntilSignalled("text-frontend", async () => {
  await runner.stop();
  await nc.drain();
  await bert?.pool.close();
});
