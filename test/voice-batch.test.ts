/**
 * Voice preparation batched across references: cnhubert, vq_extract and ge_encoder run several references
 * padded to the longest, each row with its own length, and every row equals the reference prepared alone.
 * First on the graphs (real onnxruntime sessions in the pool), then through the sovits-decoder service
 * (real nats-server), where references asked for at the same time share one batch.
 */
import t from "tap";
import { createHash } from "node:crypto";
import { copyFile, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import onnxProto from "onnx-proto";
import { decode, decodeAs, encode } from "../shared/codec.js";
import { encodeWav } from "../shared/dsp/index.js";
import { loadManifest } from "../shared/manifest.js";
import { ensureAllQueues, refAudioStore, voicesBucket } from "../shared/nats.js";
import { OrtPool } from "../shared/ort-pool.js";
import { fromRoot } from "../shared/paths.js";
import { VoicePrepareReply } from "../shared/schemas.js";
import { Subjects, ServiceNames } from "../shared/subjects.js";
import { f32, i64 } from "../shared/tensor.js";
import { VoiceStore } from "../shared/voices.js";
import { hubertFrames, prepareVoice, runVoiceBatch, runVoiceGraphs, voiceBatching, voiceInput, type VoiceInput } from "../services/sovits-decoder/voice-prep.js";
import { syntheticReference as reference } from "../tools/loadgen.js";
import { startServices, withNats } from "./helpers/stack.js";

const dir = fromRoot("models", "tiny");
const manifest = loadManifest(dir);

const maxAbs = (a: Float32Array, b: Float32Array) => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i])), 0);
/** |a − b| relative to b's largest magnitude (float noise of batched GEMMs is relative to the values). */
const relDiff = (a: Float32Array, b: Float32Array) => maxAbs(a, b) / Math.max(1e-12, b.reduce((m, v) => Math.max(m, Math.abs(v)), 0));

t.test("voice graphs: a padded batch of references of different lengths gives each its result alone", async (t) => {
  const pool = await OrtPool.create({ modelDir: dir, manifest, graphs: ["cnhubert", "vq_extract", "ge_encoder"], workers: 1, intraOpThreads: 1 });
  t.teardown(() => pool.close());
  const batching = voiceBatching(pool);
  t.same(batching, { cnhubert: true, vq_extract: true, ge_encoder: true }, "the generated graphs take batches");
  const inputs: VoiceInput[] = [reference(3.3, 16000, 1), reference(7.9, 32000, 2), reference(5.2, 24000, 3)].map((w) => voiceInput(w));
  const alone = [];
  for (const it of inputs) alone.push((await runVoiceGraphs(pool, manifest, [it], batching))[0]);
  const batched = await runVoiceGraphs(pool, manifest, inputs, batching);
  t.equal(batched.length, 3);
  inputs.forEach((it, i) => {
    t.equal(alone[i].prompts.length, Math.floor(hubertFrames(it.audio16k.length) / 2), `reference ${i}: ⌊T50/2⌋ prompt tokens`);
    t.same(Array.from(batched[i].prompts), Array.from(alone[i].prompts), `reference ${i}: the same prompt tokens in the batch`);
    t.equal(batched[i].ge.length, manifest.dims.ge.dim);
    const d = relDiff(batched[i].ge, alone[i].ge);
    t.ok(d < 1e-5, `reference ${i}: ge within 1e-5 relative (${d.toExponential(2)})`);
  });
  t.notSame(Array.from(alone[0].ge), Array.from(alone[1].ge), "different references give different ge");

  // The lengths are what makes the batch exact: the same padded batch told that every row is as long as
  // the longest (what a batch without masks computes) changes the shorter rows.
  const width = Math.max(...inputs.map((it) => it.audio16k.length));
  const audio = new Float32Array(3 * width);
  inputs.forEach((it, i) => audio.set(it.audio16k, i * width));
  const unmasked = await pool.run("cnhubert", { ref_audio_16k: f32(audio, [3, width]), ref_lengths: i64([width, width, width], [3]) });
  const masked = await pool.run("cnhubert", { ref_audio_16k: f32(audio, [3, width]), ref_lengths: i64(inputs.map((it) => it.audio16k.length), [3]) });
  const [, D, T] = masked.ssl_content.dims;
  const t50 = hubertFrames(inputs[0].audio16k.length);
  let diff = 0;
  for (let c = 0; c < D; c++)
    for (let f = 0; f < t50; f++) diff = Math.max(diff, Math.abs((masked.ssl_content.data as Float32Array)[c * T + f] - (unmasked.ssl_content.data as Float32Array)[c * T + f]));
  t.ok(diff > 1e-3, `without its length the short row's features change (${diff.toExponential(2)})`);

  // a reference too short for one prompt token (200 samples; the service refuses it before, by length,
  // so this stands in for any reference the graphs cannot take) fails the batch; run again alone, it
  // fails only itself
  const tooShort: VoiceInput = { ...inputs[0], audio16k: inputs[0].audio16k.slice(0, 200) };
  await t.rejects(runVoiceGraphs(pool, manifest, [inputs[0], tooShort, inputs[2]], batching), { code: "REFERENCE_LENGTH" }, "the batch fails");
  const isolated = await runVoiceBatch(pool, manifest, [inputs[0], tooShort, inputs[2]], batching);
  t.ok("error" in isolated[1], "the short reference gets its own error");
  for (const i of [0, 2]) {
    const r = isolated[i];
    t.ok(!("error" in r) && Array.from(r.prompts).join() === Array.from(alone[i].prompts).join(), `reference ${i} still gets its voice`);
  }

  // prepareVoice (the baseline's path) is the batch of one
  const wav = reference(4.4, 22050, 4);
  const v = await prepareVoice(pool, manifest, "x", wav);
  const [one] = await runVoiceGraphs(pool, manifest, [voiceInput(wav)], batching);
  t.same(Array.from(v.prompts), Array.from(one.prompts));
  t.same(Array.from(v.ge), Array.from(one.ge));
});

/**
 * The graphs as exporters wrote them before the batch inputs existed: the length input removed and
 * computed inside from the audio's own shape (a batch of one, no padding), vq_extract fixed to batch 1.
 */
async function legacyGraph(name: "cnhubert" | "ge_encoder" | "vq_extract", out: string): Promise<void> {
  const { onnx } = onnxProto;
  const model = onnx.ModelProto.decode(await readFile(join(dir, manifest.graphs[name].file)));
  const graph = model.graph!;
  if (name === "vq_extract") {
    graph.input![0].type!.tensorType!.shape!.dim![0] = { dimValue: 1 };
  } else {
    const [lengths, from, axis] = name === "cnhubert" ? ["ref_lengths", "ref_audio_16k", 1] : ["refer_lengths", "refer", 2];
    graph.input = graph.input!.filter((i) => i.name !== lengths);
    const INT = onnx.AttributeProto.AttributeType.INT;
    graph.node!.unshift({ opType: "Shape", input: [from], output: [lengths], name: "legacy_length", attribute: [{ name: "start", type: INT, i: axis }, { name: "end", type: INT, i: axis + 1 }] });
  }
  await writeFile(join(out, manifest.graphs[name].file), onnx.ModelProto.encode(model).finish());
}

t.test("voice graphs without the batch inputs (earlier exports) run one reference a call, with the same results", async (t) => {
  const legacyDir = await mkdtemp(join(tmpdir(), "gsv-legacy-voice-"));
  t.teardown(() => rm(legacyDir, { recursive: true, force: true }));
  for (const g of ["cnhubert", "ge_encoder", "vq_extract"] as const) await legacyGraph(g, legacyDir);
  await copyFile(join(dir, "manifest.json"), join(legacyDir, "manifest.json"));
  const graphs = ["cnhubert", "vq_extract", "ge_encoder"] as const;
  const legacy = await OrtPool.create({ modelDir: legacyDir, manifest, graphs, workers: 1, intraOpThreads: 1 });
  const current = await OrtPool.create({ modelDir: dir, manifest, graphs, workers: 1, intraOpThreads: 1 });
  t.teardown(() => Promise.all([legacy.close(), current.close()]));
  t.same(voiceBatching(legacy), { cnhubert: false, vq_extract: false, ge_encoder: false }, "read from the graphs' inputs");
  const inputs = [reference(3.1, 16000, 11), reference(6.6, 48000, 12)].map((w) => voiceInput(w));
  const old = await runVoiceGraphs(legacy, manifest, inputs, voiceBatching(legacy));
  const now = await runVoiceGraphs(current, manifest, inputs, voiceBatching(current));
  inputs.forEach((_, i) => {
    t.same(Array.from(old[i].prompts), Array.from(now[i].prompts), `reference ${i}: the same prompt tokens`);
    t.ok(relDiff(old[i].ge, now[i].ge) < 1e-5, `reference ${i}: the same ge`);
  });
});

t.test("sovits-decoder: references asked for at once are prepared in one batch, each as alone; a bad one fails alone", async (t) => {
  const env = await withNats();
  await ensureAllQueues(env.nc);
  const [svc] = await startServices(env.server.url, ["sovits-decoder"], { GSV_VOICE_MAX_BATCH: "4", GSV_VOICE_BATCH_WAIT_MS: "5000", GSV_SOVITS_ORT_WORKERS: "1" });
  t.teardown(async () => {
    await svc.stop();
    await env.stop();
  });
  const store = await refAudioStore(env.nc);
  const put = async (wav: Uint8Array) => {
    const sha = createHash("sha256").update(wav).digest("hex");
    await store.putBlob({ name: sha }, wav);
    return sha;
  };
  const ask = async (audioSha: string) =>
    decodeAs(VoicePrepareReply, (await env.nc.request(Subjects.voicePrepare, encode({ audioSha, deadline: Date.now() + 60_000 }), { timeout: 60_000 })).data);

  // a batch waits up to 5 s for its fourth reference, so the four asked for at once run together
  const wavs = [reference(9.5, 16000, 5), reference(3.4, 16000, 6), reference(6.1, 44100, 7), reference(4.8, 24000, 8)];
  const shas = await Promise.all(wavs.map(put));
  const short = await put(encodeWav(new Float32Array(16000).map((_, i) => Math.sin(i / 7) * 0.3), 16000));
  const replies = await Promise.all([...shas, short].map((s) => ask(s)));
  const codes = replies.map((r) => (r.ok ? "ok" : r.code));
  t.same(codes, ["ok", "ok", "ok", "ok", "REFERENCE_LENGTH"], "four prepared; the 1 s reference refused with its code");

  const status = decode((await env.nc.request(Subjects.status(ServiceNames.sovits), new Uint8Array(), { timeout: 5000 })).data) as { voiceBatches: Record<string, number> };
  t.same(status.voiceBatches, { 4: 1 }, "one batch held the four references");

  // each voice in KV equals the same reference prepared alone in process
  const pool = await OrtPool.create({ modelDir: dir, manifest, graphs: ["cnhubert", "vq_extract", "ge_encoder"], workers: 1, intraOpThreads: 1 });
  t.teardown(() => pool.close());
  const kv = new VoiceStore(await voicesBucket(env.nc));
  for (let i = 0; i < wavs.length; i++) {
    const r = replies[i];
    if (!r.ok) continue;
    const stored = await kv.get(r.voiceKey);
    const alone = await prepareVoice(pool, manifest, shas[i], wavs[i]);
    t.ok(stored, `voice ${i} is in KV`);
    if (!stored) continue;
    t.same(Array.from(stored.prompts), Array.from(alone.prompts), `voice ${i}: prompt tokens as alone`);
    t.ok(relDiff(stored.ge, alone.ge) < 1e-5, `voice ${i}: ge as alone (${relDiff(stored.ge, alone.ge).toExponential(2)} relative)`);
    t.equal(stored.refMelFrames, alone.refMelFrames);
  }
});
