/**
 * Audio formats: every media_type the gateway writes is read back by the real ffprobe/ffmpeg with the
 * right codec, sample rate and duration; lossless formats give back the exact samples. Also through
 * the whole pipeline over HTTP, and with ffmpeg missing (a coded 501, wav still served).
 */
import t from "tap";
import { decodeWav, floatToInt16 } from "../shared/dsp/index.js";
import { AUDIO_FORMATS, AudioEncoderStream, encodeAudio, FORMATS, type AudioFormat } from "../services/gateway/audio-encode.js";
import { startStack, type Stack } from "../tools/launch.js";
import { TEST_ENV, startService } from "./helpers/stack.js";
import { ffmpegDecode, ffprobe, rms, zeroCrossingHz } from "./helpers/ffmpeg.js";

const SR = 24000;
/** 1.5 s of a 440 Hz sine at 0.5: 440 upward zero crossings per second, RMS 0.5/√2. */
const sine = Float32Array.from({ length: Math.round(1.5 * SR) }, (_, i) => 0.5 * Math.sin((2 * Math.PI * 440 * i) / SR));

const expectCodec: Record<Exclude<AudioFormat, "raw">, { codec: string; rate: number; lossless: boolean }> = {
  wav: { codec: "pcm_s16le", rate: SR, lossless: true },
  flac: { codec: "flac", rate: SR, lossless: true },
  ogg: { codec: "vorbis", rate: SR, lossless: false }, // upstream's ogg is Vorbis (libsndfile's default)
  aac: { codec: "aac", rate: SR, lossless: false },
  mp3: { codec: "mp3", rate: SR, lossless: false },
  opus: { codec: "opus", rate: 48000, lossless: false }, // Opus always decodes at 48 kHz
};

t.test("audio formats - each encodes a sine that ffmpeg decodes back with the right codec, rate, length and pitch", async (t) => {
  const int16 = floatToInt16(sine);
  for (const fmt of Object.keys(expectCodec) as (keyof typeof expectCodec)[]) {
    const want = expectCodec[fmt];
    const bytes = await encodeAudio(sine, SR, fmt);
    const probe = ffprobe(bytes);
    t.equal(probe.codec, want.codec, `${fmt}: codec`);
    t.equal(probe.channels, 1, `${fmt}: mono`);
    t.equal(probe.sampleRate, want.rate, `${fmt}: sample rate`);
    const pcm = ffmpegDecode(bytes);
    const seconds = pcm.length / want.rate;
    t.ok(Math.abs(seconds - 1.5) < 0.08, `${fmt}: decodes to ${seconds.toFixed(3)} s (1.5 s encoded)`);
    t.ok(Math.abs(zeroCrossingHz(pcm, want.rate) - 440) < 440 * 0.03, `${fmt}: still a 440 Hz tone (${zeroCrossingHz(pcm, want.rate).toFixed(1)} Hz)`);
    t.ok(Math.abs(rms(pcm) - 0.5 / Math.SQRT2) < 0.05, `${fmt}: level kept (rms ${rms(pcm).toFixed(3)})`);
    if (want.lossless) {
      let same = pcm.length === int16.length;
      for (let i = 0; same && i < pcm.length; i++) same = Math.round(pcm[i] * 32768) === int16[i];
      t.ok(same, `${fmt}: the exact 16-bit samples come back`);
    }
  }
  const raw = await encodeAudio(sine, SR, "raw");
  t.equal(raw.length, 2 * sine.length, "raw: two bytes per sample, no header");
  t.same(Array.from(new Int16Array(raw.buffer, raw.byteOffset, sine.length).subarray(0, 64)), Array.from(int16.subarray(0, 64)), "raw: int16 little-endian samples");
});

t.test("audio formats - a streamed encode (pieces in, bytes out as they come) decodes like the whole", async (t) => {
  for (const fmt of ["wav", "mp3", "opus", "flac"] as const) {
    const chunks: Uint8Array[] = [];
    const enc = new AudioEncoderStream(fmt, SR, (c) => chunks.push(c.slice()));
    for (let i = 0; i < sine.length; i += 5000) enc.write(sine.subarray(i, i + 5000));
    await enc.end();
    const bytes = Buffer.concat(chunks);
    const pcm = ffmpegDecode(bytes);
    const rate = fmt === "opus" ? 48000 : SR;
    t.ok(Math.abs(pcm.length / rate - 1.5) < 0.08, `${fmt}: streamed encode decodes to ${(pcm.length / rate).toFixed(3)} s`);
    if (fmt === "wav") {
      t.equal(new DataView(bytes.buffer, bytes.byteOffset).getUint32(40, true), 0xffffffff, "streamed wav: unknown data size in the header");
      t.equal(decodeWav(bytes).samples.length, sine.length, "streamed wav: our own decoder reads it to the end");
    }
  }
});

t.test("audio formats - a missing ffmpeg is a coded ENCODER_UNAVAILABLE, not a crash", async (t) => {
  const saved = process.env.GSV_FFMPEG;
  process.env.GSV_FFMPEG = "/nonexistent/ffmpeg";
  try {
    await t.rejects(encodeAudio(sine, SR, "mp3"), { code: "ENCODER_UNAVAILABLE" });
    t.equal((await encodeAudio(sine, SR, "wav")).length, 44 + 2 * sine.length, "wav needs no ffmpeg");
  } finally {
    if (saved === undefined) delete process.env.GSV_FFMPEG;
    else process.env.GSV_FFMPEG = saved;
  }
});

let stack: Stack;
t.before(async () => {
  stack = await startStack({ env: { ...TEST_ENV } });
});
t.teardown(() => stack?.stop());

t.test("audio formats - /tts answers every media_type with the pipeline's audio: right type, rate and duration", async (t) => {
  let reference: Float32Array | undefined;
  for (const fmt of AUDIO_FORMATS) {
    const res = await fetch(`${stack.gatewayUrl}/tts?text=${encodeURIComponent("Formats, formats.")}&text_lang=en&seed=5&sample_steps=2&fragment_interval=0&media_type=${fmt}`);
    const bytes = new Uint8Array(await res.arrayBuffer());
    t.equal(res.status, 200, `${fmt}: ${res.status === 200 ? "200" : new TextDecoder().decode(bytes)}`);
    t.equal(res.headers.get("content-type"), FORMATS[fmt].contentType, `${fmt}: content type`);
    const tokens = res.headers.get("x-gsv-tokens")!.split(",").map(Number);
    const samples = tokens.reduce((n, k) => n + 256 * Math.floor(3.75 * k), 0);
    if (fmt === "raw") {
      t.equal(bytes.length, 2 * samples, "raw: 2 bytes per sample of the pipeline's length");
      continue;
    }
    const want = expectCodec[fmt];
    const probe = ffprobe(bytes);
    t.equal(probe.codec, want.codec, `${fmt}: codec`);
    t.equal(probe.sampleRate, want.rate, `${fmt}: sample rate`);
    const pcm = ffmpegDecode(bytes);
    t.ok(Math.abs(pcm.length / want.rate - samples / SR) < 0.08, `${fmt}: ${(pcm.length / want.rate).toFixed(3)} s, the pipeline made ${(samples / SR).toFixed(3)} s`);
    if (fmt === "wav") reference = pcm;
    if (fmt === "flac" && reference) t.same(Array.from(pcm.subarray(0, 200)), Array.from(reference.subarray(0, 200)), "flac carries the same samples as wav");
  }
});

t.test("audio formats - a gateway without ffmpeg answers 501 ENCODER_UNAVAILABLE for mp3 and still serves wav", async (t) => {
  const gw = await startService("gateway", { ...TEST_ENV, NATS_URL: stack.natsUrl, PORT: "0", GSV_FFMPEG: "/nonexistent/ffmpeg" });
  t.teardown(() => gw.stop());
  const url = gw.ready.url as string;
  const mp3 = await fetch(`${url}/tts?text=Hello.&text_lang=en&seed=1&sample_steps=2&media_type=mp3`);
  t.equal(mp3.status, 501);
  const body = (await mp3.json()) as { code: string; message: string };
  t.equal(body.code, "ENCODER_UNAVAILABLE");
  t.match(body.message, /apt-get install -y ffmpeg/, "says how to fix it");
  const wav = await fetch(`${url}/tts?text=Hello.&text_lang=en&seed=1&sample_steps=2&media_type=wav`);
  t.equal(wav.status, 200);
  t.equal(decodeWav(new Uint8Array(await wav.arrayBuffer())).sampleRate, SR);
});
