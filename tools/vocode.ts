/**
 * Copy synthesis through a real vocoder service: WAV → 22,050 Hz → LJSpeech mel → the vocoder service
 * over NATS (tts.v1.vocode.<name>) → WAV. `gsv vocode in.wav -o out.wav [--url nats://…]`.
 *
 * Without --url (and without NATS_URL) it starts its own nats-server and one vocoder service process
 * with GSV_VOCODER=<name>, and stops them afterwards. Long inputs are sent in chunks of at most
 * CHUNK_FRAMES frames (under the service's 30 s cap and NATS's 8 MB payload limit), each with CONTEXT
 * frames of real neighbouring mel on both sides that are vocoded and then cut away, so chunk joins
 * see the same receptive field as the middle of the clip.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { connect, type NatsConnection } from "nats";
import { decodeAs, encode } from "../shared/codec.js";
import { decodeWav, encodeWav, resample } from "../shared/dsp/index.js";
import { LJSPEECH_MEL, ljspeechMel } from "../shared/dsp/ljspeech-mel.js";
import { GsvError, isErrorCode } from "../shared/errors.js";
import { natsAuthFromEnv, natsServers } from "../shared/nats.js";
import { Subjects } from "../shared/subjects.js";
import { VocodeReply } from "../shared/schemas.js";
import { startNatsServer, startService, type NatsServer, type ServiceProcess } from "./launch.js";

export const DEFAULT_VOCODER = "mb-melgan-ljspeech";
/** Frames per request (23.8 s at hop 256 / 22,050 Hz): mel 655 KB in, PCM 2.1 MB out. */
export const CHUNK_FRAMES = 2048;
/** Neighbouring frames vocoded on each side of a chunk and cut away (the model's receptive field is ~10). */
export const CONTEXT_FRAMES = 16;
/** Fewest frames MB-MelGAN accepts (its first reflect pad is 3 frames); shorter mels are edge-padded. */
export const MIN_FRAMES = 4;


/** One request: a normalised mel [frames, bands] frames-first → PCM at the vocoder's rate. */
export async function vocodeOnce(nc: NatsConnection, name: string, mel: Float32Array, frames: number, timeoutMs = 60_000): Promise<{ pcm: Float32Array; sampleRate: number; ms: number }> {
  let data: Uint8Array;
  try {
    data = (await nc.request(Subjects.vocode(name), encode({ mel, frames, deadline: Date.now() + timeoutMs }), { timeout: timeoutMs })).data;
  } catch (err) {
    const m = (err as Error).message;
    if (/503|no responders/i.test(m)) throw new GsvError("STAGE_UNAVAILABLE", `no vocoder service answers on ${Subjects.vocode(name)} (start one with GSV_VOCODER=${name})`);
    if (/timeout/i.test(m)) throw new GsvError("DEADLINE_EXCEEDED", `the vocoder service did not answer within ${timeoutMs} ms`);
    throw new GsvError("STAGE_UNAVAILABLE", m);
  }
  const reply = decodeAs(VocodeReply, data);
  if (!reply.ok) throw new GsvError(isErrorCode(reply.code) ? reply.code : "INTERNAL", reply.message);
  return reply;
}

/** A whole mel of any length, in chunks with context (see the file comment). PCM is hop·frames long. */
export async function vocodeMel(
  nc: NatsConnection,
  mel: Float32Array,
  frames: number,
  opts: { name?: string; bands?: number; hop?: number; chunkFrames?: number; contextFrames?: number; timeoutMs?: number } = {},
): Promise<{ pcm: Float32Array; sampleRate: number; requests: number; ms: number }> {
  const name = opts.name ?? DEFAULT_VOCODER;
  const bands = opts.bands ?? LJSPEECH_MEL.bands;
  const hop = opts.hop ?? LJSPEECH_MEL.hop;
  const chunk = opts.chunkFrames ?? CHUNK_FRAMES;
  const ctx = opts.contextFrames ?? CONTEXT_FRAMES;
  if (mel.length !== frames * bands) throw new GsvError("BAD_PARAMETER", `mel has ${mel.length} values, ${frames} × ${bands} expected`);
  if (frames < 1) throw new GsvError("BAD_PARAMETER", "mel has no frame");
  if (frames < MIN_FRAMES) {
    // Repeat the last frame up to the minimum, vocode, keep the real frames' samples.
    const padded = new Float32Array(MIN_FRAMES * bands);
    padded.set(mel);
    for (let f = frames; f < MIN_FRAMES; f++) padded.set(mel.subarray((frames - 1) * bands, frames * bands), f * bands);
    const r = await vocodeMel(nc, padded, MIN_FRAMES, opts);
    return { ...r, pcm: r.pcm.slice(0, frames * hop) };
  }
  const pcm = new Float32Array(frames * hop);
  let sampleRate = 0;
  let requests = 0;
  let ms = 0;
  for (let s = 0; s < frames; s += chunk) {
    const e = Math.min(frames, s + chunk);
    const b = Math.min(frames, e + ctx);
    const a = Math.max(0, Math.min(s - ctx, b - MIN_FRAMES));
    const r = await vocodeOnce(nc, name, mel.slice(a * bands, b * bands), b - a, opts.timeoutMs);
    if (r.pcm.length !== (b - a) * hop) throw new GsvError("MODEL_ERROR", `the vocoder gave ${r.pcm.length} samples for ${b - a} frames (hop ${hop})`);
    pcm.set(r.pcm.subarray((s - a) * hop, (e - a) * hop), s * hop);
    sampleRate = r.sampleRate;
    requests++;
    ms += r.ms;
  }
  return { pcm, sampleRate, requests, ms };
}

/** Any WAV → mono → 22,050 Hz → the LJSpeech vocoder's normalised mel, [frames, 80]. */
export function wavToLjspeechMel(wav: Uint8Array): { mel: Float32Array; frames: number; seconds: number; samples22k: number } {
  const { samples, sampleRate } = decodeWav(wav);
  const x = sampleRate === LJSPEECH_MEL.sampleRate ? samples : resample(samples, sampleRate, LJSPEECH_MEL.sampleRate);
  const m = ljspeechMel(x);
  return { mel: m.data, frames: m.frames, seconds: samples.length / sampleRate, samples22k: x.length };
}

/** A private nats-server plus one real-vocoder service process; `stop` ends both. */
export async function startVocoderStack(name = DEFAULT_VOCODER, env: Record<string, string> = {}): Promise<{ url: string; nats: NatsServer; service: ServiceProcess; stop(): Promise<void> }> {
  const nats = await startNatsServer();
  let service: ServiceProcess;
  try {
    service = await startService("vocoder", { NATS_URL: nats.url, GSV_VOCODER: name, GSV_LOG: "warn", ...env });
  } catch (err) {
    await nats.stop();
    throw err;
  }
  return {
    url: nats.url,
    nats,
    service,
    async stop() {
      await service.stop();
      await nats.stop();
    },
  };
}

/** `gsv vocode in.wav -o out.wav [--url nats://…] [--vocoder name] [--rate hz]`. */
export async function vocodeCli(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      out: { type: "string", short: "o", default: "vocoded.wav" },
      url: { type: "string" },
      vocoder: { type: "string", default: DEFAULT_VOCODER },
      rate: { type: "string" },
    },
  });
  if (positionals.length !== 1) throw new Error("usage: gsv vocode in.wav -o out.wav [--url nats://host:4222] [--vocoder mb-melgan-ljspeech] [--rate 22050]");
  const t0 = Date.now();
  const { mel, frames, seconds, samples22k } = wavToLjspeechMel(new Uint8Array(readFileSync(positionals[0])));
  const url = values.url;
  const stack = url ? undefined : await startVocoderStack(values.vocoder);
  let nc: NatsConnection | undefined;
  try {
    nc = await connect({ servers: natsServers(url ?? stack!.url), ...natsAuthFromEnv(), name: "gsv-vocode" });
    const r = await vocodeMel(nc, mel, frames, { name: values.vocoder });
    const rate = values.rate ? Number(values.rate) : r.sampleRate;
    if (!Number.isInteger(rate) || rate < 1000 || rate > 192_000) throw new Error(`--rate must be an integer sample rate, got ${values.rate}`);
    // The centred STFT gives 1 + floor(len/hop) frames, so the vocoder returns up to one hop more than
    // the input: cut it back to the input's length.
    const pcm = r.sampleRate === LJSPEECH_MEL.sampleRate ? r.pcm.subarray(0, Math.min(r.pcm.length, samples22k)) : r.pcm;
    const out = rate === r.sampleRate ? pcm : resample(pcm, r.sampleRate, rate);
    writeFileSync(values.out!, encodeWav(out, rate));
    console.log(
      `wrote ${values.out} (${(out.length / rate).toFixed(2)} s at ${rate} Hz from ${seconds.toFixed(2)} s of input; ${frames} mel frames, ` +
        `${r.requests} request(s), vocoder ${r.ms} ms, total ${Date.now() - t0} ms)`,
    );
  } finally {
    await nc?.close();
    await stack?.stop();
  }
}
