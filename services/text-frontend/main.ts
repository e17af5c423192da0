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

const cfg = loadConfig("text-frontend");
const nc = await connectNats({ url: cfg.natsUrl, name: cfg.replica });

/** One attempt waits at most this long: a replica killed mid-preparation never answers, so ask again (another replica). */
const PREPARE_ATTEMPT_MS = 15_000;

async function prepareVoice(job: TextJob): Promise<string> {
  let data: Uint8Array | undefined;
  while (!data) {
    const left = job.deadline - Date.now();
    if (left <= 0) throw new GsvError("DEADLINE_EXCEEDED", "voice preparation did not answer before the deadline");
    try {
      const m = await nc.request(Subjects.voicePrepare, encode({ audioSha: job.voice.audioSha, deadline: job.deadline }), { timeout: Math.min(left, PREPARE_ATTEMPT_MS), headers: traceHeaders() });
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
        params: job.params,
        ...(job.stream ? { stream: job.stream } : {}),
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
});
