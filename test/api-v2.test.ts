/**
 * Upstream api_v2 over HTTP against the real stack: every /tts parameter in GET and POST, its
 * accepted spellings, NOT_SUPPORTED for what we cannot honour, /control, /set_refer_audio,
 * /set_*_weights (naming sets; switching is in model-sets.test.ts), and SillyTavern's GPT-SoVITS provider request replayed unchanged.
 */
import t from "tap";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { decodeWav, encodeWav } from "../shared/dsp/index.js";
import { fromRoot } from "../shared/paths.js";
import { startStack, type Stack } from "../tools/launch.js";
import { TEST_ENV, startService } from "./helpers/stack.js";
import { ffmpegDecode, ffprobe } from "./helpers/ffmpeg.js";

const voices = mkdtempSync(join(tmpdir(), "gsv-voices-"));
copyFileSync(fromRoot("voices", "default.wav"), join(voices, "default.wav"));
copyFileSync(fromRoot("voices", "default.txt"), join(voices, "default.txt"));
// A second voice: the same recording at half the level (another content hash), with its transcript.
const def = decodeWav(readFileSync(fromRoot("voices", "default.wav")));
writeFileSync(join(voices, "other.wav"), encodeWav(def.samples.map((v) => v * 0.5), def.sampleRate));
writeFileSync(join(voices, "other.txt"), readFileSync(fromRoot("voices", "default.txt")));
writeFileSync(join(voices, "short.wav"), encodeWav(Float32Array.from({ length: 16000 }, (_, i) => 0.3 * Math.sin(i / 5)), 16000));
// The GPT-SoVITS-V2 fork's layout that SillyTavern's provider assumes: voices/参考音频/<transcript>.wav
const stVoice = readFileSync(fromRoot("voices", "default.txt"), "utf8").trim().replace(/\.$/, "");
mkdirSync(join(voices, "参考音频"));
copyFileSync(fromRoot("voices", "default.wav"), join(voices, "参考音频", `${stVoice}.wav`));

let stack: Stack;
let url: string;
t.before(async () => {
  stack = await startStack({ env: { ...TEST_ENV, GSV_VOICES_DIR: voices } });
  url = stack.gatewayUrl;
});
t.teardown(async () => {
  await stack?.stop();
  rmSync(voices, { recursive: true, force: true });
});

interface Answer {
  status: number;
  headers: Headers;
  data: Uint8Array;
  json: { code: string; message: string; Exception?: string };
}

async function call(path: string, init?: RequestInit): Promise<Answer> {
  const res = await fetch(url + path, init);
  const data = new Uint8Array(await res.arrayBuffer());
  let json = { code: "", message: "" } as Answer["json"];
  if (res.headers.get("content-type")?.startsWith("application/json")) json = JSON.parse(new TextDecoder().decode(data));
  return { status: res.status, headers: res.headers, data, json };
}
const post = (body: unknown, path = "/tts") => call(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
const get = (q: Record<string, string | string[]>) => {
  const sp = new URLSearchParams();
  for (const [k, v] of Object.entries(q)) for (const x of Array.isArray(v) ? v : [v]) sp.append(k, x);
  return call(`/tts?${sp}`);
};
const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a).equals(Buffer.from(b));
const base = { text: "Every parameter, once.", text_lang: "en", seed: 21, sample_steps: 2 };

t.test("api_v2 - POST with every upstream parameter (upstream's own example body) speaks", async (t) => {
  const r = await post({
    text: "Every parameter, once.",
    text_lang: "en",
    ref_audio_path: "default.wav",
    aux_ref_audio_paths: [],
    prompt_text: "",
    prompt_lang: "en",
    top_k: 15,
    top_p: 1,
    temperature: 1,
    text_split_method: "cut5",
    batch_size: 1,
    batch_threshold: 0.75,
    split_bucket: true,
    speed_factor: 1.0,
    fragment_interval: 0.3,
    seed: 21,
    parallel_infer: true,
    repetition_penalty: 1.35,
    sample_steps: 2,
    super_sampling: false,
    streaming_mode: false,
    overlap_length: 2,
    min_chunk_length: 16,
    media_type: "wav",
  });
  t.equal(r.status, 200, r.json.message);
  t.equal(r.headers.get("content-type"), "audio/wav");
  t.equal(decodeWav(r.data).sampleRate, 24000);
  const g = await get({ ...Object.fromEntries(Object.entries(base).map(([k, v]) => [k, String(v)])), ref_audio_path: "default.wav", prompt_lang: "en", batch_size: "1", batch_threshold: "0.75", split_bucket: "true", parallel_infer: "true", super_sampling: "false", streaming_mode: "false", overlap_length: "2", min_chunk_length: "16" });
  t.equal(g.status, 200, "GET with the same parameters as query strings");
  t.ok(same(r.data, g.data), "GET and POST give the same audio");
});

t.test("api_v2 - upstream's batching knobs are accepted, validated, and do not change the audio", async (t) => {
  const a = await post(base);
  t.equal(a.status, 200);
  for (const knobs of [{ batch_size: 20 }, { batch_threshold: 0.1 }, { split_bucket: false }, { parallel_infer: false }, { batch_size: "8", split_bucket: "0", parallel_infer: "off" }]) {
    const b = await post({ ...base, ...knobs });
    t.equal(b.status, 200, JSON.stringify(knobs));
    t.ok(same(a.data, b.data), `${JSON.stringify(knobs)}: same audio (our scheduler batches across requests)`);
  }
  for (const [knobs, field] of [[{ batch_size: 0 }, "batch_size"], [{ batch_size: 1.5 }, "batch_size"], [{ batch_threshold: 1.5 }, "batch_threshold"], [{ split_bucket: "maybe" }, "split_bucket"], [{ parallel_infer: 2 }, "parallel_infer"]] as const) {
    const b = await post({ ...base, ...knobs });
    t.equal(b.status, 400, `${JSON.stringify(knobs)} refused`);
    t.equal(b.json.code, "BAD_PARAMETER");
    t.match(b.json.message, field, "names the field");
  }
});

t.test("api_v2 - streaming_mode: bool or 0..3 accepted and streamed, anything else refused with upstream's message", async (t) => {
  const plain = await post(base);
  const pcm = (d: Uint8Array) => d.subarray(44); // the streamed WAV header has unknown-length sizes
  for (const mode of [false, true, 0, 1, 2, 3, "true", "false", "1", "3"]) {
    const r = await post({ ...base, streaming_mode: mode });
    t.equal(r.status, 200, `streaming_mode ${JSON.stringify(mode)}`);
    const want = mode === true || mode === "true" ? "1" : mode === false || mode === "false" ? "0" : String(mode);
    t.equal(r.headers.get("x-gsv-streaming-mode"), want, "parsed as upstream parses it");
    t.match(r.headers.get("x-request-id"), /^[0-9a-f]{32}$/, "X-Request-Id, streamed or not");
    if (want === "0") t.ok(same(r.data, plain.data), "not streamed: the same file");
    else {
      const streamedHeader = new DataView(r.data.buffer, r.data.byteOffset, 44).getUint32(40, true);
      t.equal(streamedHeader, 0xffffffff, "streamed: a WAV header of unknown length");
      // Mode 1 sends non-streaming-sized windows: the same samples. Modes 2 and 3 start with smaller
      // windows (docs/streaming.md): the same length, other samples.
      if (want === "1") t.ok(same(pcm(r.data), pcm(plain.data)), "mode 1: the same samples as without streaming");
      else t.equal(pcm(r.data).length, pcm(plain.data).length, `mode ${want}: the same length as without streaming`);
    }
  }
  for (const mode of [4, -1, "abc", 1.5, [1]]) {
    const r = await post({ ...base, streaming_mode: mode });
    t.equal(r.status, 400, `streaming_mode ${JSON.stringify(mode)} refused`);
    t.equal(r.json.code, "BAD_PARAMETER");
    t.equal(r.json.message, "the value of streaming_mode must be 0, 1, 2, 3(int) or true/false(bool)");
  }
});

t.test("api_v2 - values we cannot honour are NOT_SUPPORTED, never ignored", async (t) => {
  const ss = await post({ ...base, super_sampling: true });
  t.equal(ss.status, 400);
  t.equal(ss.json.code, "NOT_SUPPORTED");
  t.match(ss.json.message, /super_sampling/);
  t.equal(ss.json.Exception, ss.json.message, "upstream's error shape: message + Exception");
  const aux = await post({ ...base, aux_ref_audio_paths: ["other.wav"] });
  t.equal(aux.status, 400);
  t.equal(aux.json.code, "NOT_SUPPORTED");
  const auxGet = await get({ text: "Hi.", text_lang: "en", aux_ref_audio_paths: ["a.wav", "b.wav"] });
  t.equal(auxGet.json.code, "NOT_SUPPORTED", "GET with repeated aux_ref_audio_paths");
  const ssGet = await get({ text: "Hi.", text_lang: "en", super_sampling: "1" });
  t.equal(ssGet.json.code, "NOT_SUPPORTED", "GET super_sampling=1");
});

t.test("api_v2 - wrong types and unknown values are coded 400s naming the field", async (t) => {
  const cases: [string, Record<string, unknown>, string, RegExp][] = [
    ["top_k not a number", { top_k: "abc" }, "BAD_PARAMETER", /top_k/],
    ["top_k fractional", { top_k: 1.5 }, "BAD_PARAMETER", /top_k/],
    ["top_p above 1", { top_p: 1.5 }, "BAD_PARAMETER", /top_p/],
    ["temperature zero", { temperature: 0 }, "BAD_PARAMETER", /temperature/],
    ["seed fractional", { seed: "1.5" }, "BAD_PARAMETER", /seed/],
    ["speed out of range", { speed_factor: 9 }, "BAD_PARAMETER", /speed_factor/],
    ["unknown media_type", { media_type: "mp4" }, "BAD_PARAMETER", /media_type/],
    ["unknown split method", { text_split_method: "cut9" }, "BAD_PARAMETER", /text_split_method/],
    ["text a number", { text: 123 }, "BAD_PARAMETER", /text: must be a string/],
    ["text missing", { text: undefined }, "MISSING_TEXT", /text is required/],
    ["prompt_text a list", { prompt_text: ["a"] }, "BAD_PARAMETER", /prompt_text/],
    ["aux paths not a list", { aux_ref_audio_paths: 5 }, "BAD_PARAMETER", /aux_ref_audio_paths/],
    ["sample_steps zero", { sample_steps: 0 }, "BAD_PARAMETER", /sample_steps/],
    ["unknown text language", { text_lang: "klingon" }, "UNKNOWN_LANGUAGE", /klingon/],
    ["unknown voice id", { ref_audio_path: "voice:nobody" }, "NOT_FOUND", /nobody/],
    ["path outside the voices dir", { ref_audio_path: "../../etc/passwd" }, "PATH_NOT_ALLOWED", /outside/],
    ["absolute path outside", { ref_audio_path: "/etc/hostname" }, "PATH_NOT_ALLOWED", /outside/],
    ["reference too short", { ref_audio_path: "short.wav", prompt_text: "a tone" }, "REFERENCE_LENGTH", /3 to 10/],
  ];
  for (const [name, extra, code, msg] of cases) {
    const r = await post({ ...base, ...extra });
    t.equal(r.json.code, code, `${name}: ${r.json.message}`);
    t.ok(r.status >= 400 && r.status < 500, `${name}: status ${r.status}`);
    t.match(r.json.message, msg, `${name}: the message says what`);
  }
  const unknownName = await post({ ...base, no_such_parameter: 1 });
  t.equal(unknownName.status, 200, "unknown parameter names are ignored, as upstream's pydantic model ignores them");
  const put = await call("/tts", { method: "PUT" });
  t.equal(put.status, 400, "a method other than GET/POST");
});

t.test("api_v2 - /set_refer_audio changes the default reference; /control restart resets it", async (t) => {
  const missing = await call("/set_refer_audio");
  t.equal(missing.status, 400);
  t.match(missing.json.message, /refer_audio_path is required/);
  t.equal((await call("/set_refer_audio?refer_audio_path=../outside.wav")).json.code, "PATH_NOT_ALLOWED");
  t.equal((await call("/set_refer_audio?refer_audio_path=short.wav")).json.code, "REFERENCE_LENGTH", "checked as the pipeline checks it");
  const before = await post(base);
  t.equal(before.headers.get("x-gsv-voice"), "default.wav");
  const ok = await call("/set_refer_audio?refer_audio_path=other.wav");
  t.equal(ok.status, 200);
  t.same(JSON.parse(new TextDecoder().decode(ok.data)), { message: "success" });
  const after = await post(base);
  t.equal(after.headers.get("x-gsv-voice"), "other.wav", "requests without ref_audio_path use it");
  t.notOk(same(before.data, after.data), "and sound different (another reference)");
  const explicit = await post({ ...base, ref_audio_path: "default.wav" });
  t.ok(same(before.data, explicit.data), "a request naming its reference is not affected");

  t.equal((await call("/control")).json.code, "BAD_PARAMETER", "command is required");
  t.match((await call("/control?command=reboot")).json.message, /restart, exit/);
  await call("/set_refer_audio?refer_audio_path=other.wav");
  const postRestart = await post({ command: "restart" }, "/control");
  t.equal(postRestart.status, 200, "POST /control with a JSON body, as upstream's docstring shows");
  t.equal((await post(base)).headers.get("x-gsv-voice"), "default.wav", "POST restart reset it");
  await call("/set_refer_audio?refer_audio_path=other.wav");
  const restart = await call("/control?command=restart");
  t.equal(restart.status, 200);
  const reset = await post(base);
  t.equal(reset.headers.get("x-gsv-voice"), "default.wav", "restart restored the default reference");
  t.ok(same(before.data, reset.data));
});

t.test("api_v2 - /set_gpt_weights and /set_sovits_weights name a model set under the models root (test/model-sets.test.ts switches between sets)", async (t) => {
  for (const which of ["gpt", "sovits"]) {
    const none = await call(`/set_${which}_weights`);
    t.equal(none.status, 400);
    t.match(none.json.message, `${which} weight path is required`);
    for (const path of ["models/tiny", "tiny", "tiny/manifest.json"]) {
      const served = await call(`/set_${which}_weights?weights_path=${encodeURIComponent(path)}`);
      t.equal(served.status, 200, `${which} ${path}: the served model set`);
      t.equal((served.json as unknown as { model_set: string }).model_set, "tiny");
    }
    // Upstream's checkpoint paths are not model sets: export them first (docs/export.md).
    const other = await call(`/set_${which}_weights?weights_path=${which === "gpt" ? "GPT_weights_v3/x-e15.ckpt" : "SoVITS_weights_v3/x_e8.pth"}`);
    t.equal(other.status, 400);
    t.equal(other.json.code, "UNKNOWN_MODEL_SET", other.json.message);
    t.equal(other.json.Exception, other.json.message, "upstream's error shape");
    const escape = await call(`/set_${which}_weights?weights_path=${encodeURIComponent("../../etc")}`);
    t.equal(escape.status, 400);
    t.equal(escape.json.code, "BAD_PARAMETER");
    t.match(escape.json.message, /outside the models root/);
  }
  const r = await post(base);
  t.equal(r.status, 200, "serving goes on");
});

t.test("api_v2 - /control exit answers, then the gateway shuts down gracefully", async (t) => {
  const gw = await startService("gateway", { ...TEST_ENV, NATS_URL: stack.natsUrl, PORT: "0", GSV_VOICES_DIR: voices });
  const exited = new Promise<number | null>((resolve) => gw.proc.once("exit", (code) => resolve(code)));
  const res = await fetch(`${gw.ready.url as string}/control?command=exit`);
  t.equal(res.status, 200);
  t.equal(await exited, 0, "the process exited cleanly");
  const still = await post(base);
  t.equal(still.status, 200, "the other gateway and the stages are untouched");
});

t.test("api_v2 - SillyTavern's GPT-SoVITS-V2 provider, its requests replayed unchanged", async (t) => {
  // GET /speakers, then POST / with exactly the body fetchTtsGeneration() builds (SillyTavern
  // public/scripts/extensions/tts/gpt-sovits-v2.js), with the provider's defaults except the two
  // language settings, which a user sets to the language we speak (en).
  const speakers = await call("/speakers");
  t.equal(speakers.status, 200);
  const list = JSON.parse(new TextDecoder().decode(speakers.data)) as { name: string }[];
  const voiceId = list.find((v) => v.name === stVoice)?.name;
  t.equal(voiceId, stVoice, "the speaker list names the reference by its file name");
  const settings = { text_lang: "en", prompt_lang: "en", batch_size: 1, fragment_interval: 0.3, speed_factor: 1.0, top_k: 5, top_p: 1, temperature: 1, repetition_penalty: 1.35 };
  const replaceSpeaker = (text: string) => text.replace(/\[.*?\]/gu, "");
  const bodies = [
    // the provider as of 2025
    {
      text: "The weather is lovely today.",
      prompt_text: replaceSpeaker(voiceId!),
      ref_audio_path: "./参考音频/" + voiceId + ".wav",
      text_lang: settings.text_lang,
      prompt_lang: settings.prompt_lang,
      text_split_method: "cut5",
      batch_size: settings.batch_size,
      media_type: "ogg",
      streaming_mode: "true",
      fragment_interval: settings.fragment_interval,
      speed_factor: settings.speed_factor,
      top_k: settings.top_k,
      top_p: settings.top_p,
      temperature: settings.temperature,
      repetition_penalty: settings.repetition_penalty,
    },
    // its first version (2024)
    {
      text: "The weather is lovely today.",
      prompt_text: replaceSpeaker(voiceId!),
      ref_audio_path: "./参考音频/" + voiceId + ".wav",
      text_lang: settings.text_lang,
      prompt_lang: settings.prompt_lang,
      text_split_method: "cut5",
      batch_size: 1,
      media_type: "ogg",
      streaming_mode: "true",
    },
  ];
  for (const body of bodies) {
    const res = await fetch(`${url}/`, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    const data = new Uint8Array(await res.arrayBuffer());
    t.ok(res.ok, `POST / answered ${res.status}`);
    t.equal(res.headers.get("content-type"), "audio/ogg");
    const probe = ffprobe(data);
    t.equal(probe.codec, "vorbis", "Ogg Vorbis, as upstream's ogg");
    t.equal(probe.sampleRate, 24000);
    t.ok(ffmpegDecode(data).length > 24000 * 0.5, "more than half a second of audio");
  }
  const gsvi = await get({ text: "Hi.", text_lang: "en", ref_audio_path: "./参考音频/../../escape.wav" });
  t.equal(gsvi.json.code, "PATH_NOT_ALLOWED", "the fork's relative paths cannot climb out of the voices directory");
});
