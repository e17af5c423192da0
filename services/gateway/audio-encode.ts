/**
 * Audio container/codec encoding for HTTP answers. `wav` and `raw` (bare int16 LE PCM) are written
 * in-process; every compressed format goes through Debian's `ffmpeg` as a child process, PCM in on
 * stdin and the encoded stream out on stdout (see docs/audio-formats.md for why ffmpeg).
 *
 * The same encoder serves whole answers (`encodeAudio`) and streamed ones (`AudioEncoderStream`): PCM
 * pieces are written as they arrive and encoded bytes are handed on as ffmpeg produces them.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { encodeWav, floatToInt16, wavHeader } from "../../shared/dsp/index.js";
import { GsvError } from "../../shared/errors.js";

export const AUDIO_FORMATS = ["wav", "raw", "ogg", "aac", "mp3", "flac", "opus"] as const;
export type AudioFormat = (typeof AUDIO_FORMATS)[number];

interface FormatSpec {
  contentType: string;
  /** ffmpeg output options (codec, bit rate, muxer); undefined for the in-process formats. */
  ffmpeg?: string[];
}

/**
 * Upstream api_v2 writes `ogg` with libsndfile's default Ogg subtype (Vorbis) and `aac` with ffmpeg's
 * native AAC at 192 kb/s in ADTS; we do the same. `opus` is Ogg Opus, as OpenAI's `opus` format.
 */
export const FORMATS: Record<AudioFormat, FormatSpec> = {
  wav: { contentType: "audio/wav" },
  raw: { contentType: "audio/raw" },
  ogg: { contentType: "audio/ogg", ffmpeg: ["-c:a", "libvorbis", "-q:a", "5", "-f", "ogg"] },
  aac: { contentType: "audio/aac", ffmpeg: ["-c:a", "aac", "-b:a", "192k", "-f", "adts"] },
  mp3: { contentType: "audio/mpeg", ffmpeg: ["-c:a", "libmp3lame", "-b:a", "128k", "-f", "mp3"] },
  flac: { contentType: "audio/flac", ffmpeg: ["-c:a", "flac", "-f", "flac"] },
  opus: { contentType: "audio/ogg; codecs=opus", ffmpeg: ["-c:a", "libopus", "-b:a", "64k", "-f", "ogg"] },
};

export function isAudioFormat(v: unknown): v is AudioFormat {
  return typeof v === "string" && (AUDIO_FORMATS as readonly string[]).includes(v);
}

export function ffmpegBinary(): string {
  return process.env.GSV_FFMPEG ?? "ffmpeg";
}

function int16Bytes(pcm: Float32Array): Uint8Array {
  const s = floatToInt16(pcm);
  // Int16Array is little-endian on every platform Node runs on; copy to be explicit about the view.
  return new Uint8Array(s.buffer, s.byteOffset, s.byteLength);
}

function missing(err: NodeJS.ErrnoException): GsvError {
  return new GsvError(
    "ENCODER_UNAVAILABLE",
    err.code === "ENOENT"
      ? `ffmpeg is not installed (${ffmpegBinary()}): install it (apt-get install -y ffmpeg) for ogg, aac, mp3, flac and opus; wav and raw work without it`
      : `cannot start ffmpeg: ${err.message}`,
  );
}

/**
 * One answer's encoder. Write PCM pieces in order, then `end()`; encoded bytes go to `onData` as soon
 * as they exist. wav streams as a header with unknown sizes (0xFFFFFFFF, what ffmpeg itself writes to
 * a pipe) followed by PCM, unless `end()` comes before any output was asked for (see encodeAudio).
 */
export class AudioEncoderStream {
  readonly format: AudioFormat;
  readonly sampleRate: number;
  #onData: (chunk: Uint8Array) => void;
  #proc: ChildProcess | undefined;
  #done: Promise<void> | undefined;
  #stderr = "";
  #headerSent = false;
  #failed: GsvError | undefined;

  constructor(format: AudioFormat, sampleRate: number, onData: (chunk: Uint8Array) => void) {
    this.format = format;
    this.sampleRate = sampleRate;
    this.#onData = onData;
    const args = FORMATS[format].ffmpeg;
    if (!args) return;
    const proc = spawn(
      ffmpegBinary(),
      ["-hide_banner", "-loglevel", "error", "-nostdin", "-f", "s16le", "-ar", String(sampleRate), "-ac", "1", "-i", "pipe:0", "-vn", ...args, "pipe:1"],
      { stdio: ["pipe", "pipe", "pipe"] },
    );
    this.#proc = proc;
    proc.stdout!.on("data", (d: Buffer) => this.#onData(new Uint8Array(d.buffer, d.byteOffset, d.byteLength)));
    proc.stderr!.on("data", (d: Buffer) => (this.#stderr = (this.#stderr + d.toString()).slice(-2000)));
    proc.stdin!.on("error", () => undefined); // EPIPE when ffmpeg died: reported by the exit below
    this.#done = new Promise<void>((resolve, reject) => {
      proc.once("error", (err) => {
        this.#failed = missing(err);
        reject(this.#failed);
      });
      proc.once("close", (code, signal) => {
        if (this.#failed) return reject(this.#failed);
        if (code === 0) return resolve();
        reject(new GsvError("INTERNAL", `ffmpeg (${format}) exited with ${code ?? signal}: ${this.#stderr.trim()}`));
      });
    });
    this.#done.catch(() => undefined);
  }

  write(pcm: Float32Array): void {
    if (pcm.length === 0) return;
    if (this.#proc) {
      if (!this.#failed) this.#proc.stdin!.write(int16Bytes(pcm));
      return;
    }
    if (this.format === "wav" && !this.#headerSent) {
      const h = wavHeader(this.sampleRate, 0);
      new DataView(h.buffer).setUint32(4, 0xffffffff, true);
      new DataView(h.buffer).setUint32(40, 0xffffffff, true);
      this.#onData(h);
      this.#headerSent = true;
    }
    this.#onData(int16Bytes(pcm).slice());
  }

  /** Flush and wait for the encoder; rejects with ENCODER_UNAVAILABLE if ffmpeg is missing. */
  async end(): Promise<void> {
    if (this.#proc) {
      this.#proc.stdin!.end();
      await this.#done;
      return;
    }
    if (this.format === "wav" && !this.#headerSent) {
      this.#onData(wavHeader(this.sampleRate, 0));
      this.#headerSent = true;
    }
  }

  /** Stop at once (the client went away). */
  abort(): void {
    if (this.#proc && this.#proc.exitCode === null) this.#proc.kill("SIGKILL");
  }
}

/** A whole answer in one piece: wav gets its exact sizes, raw is bare PCM, the rest go through ffmpeg. */
export async function encodeAudio(pcm: Float32Array, sampleRate: number, format: AudioFormat): Promise<Uint8Array> {
  if (format === "wav") return encodeWav(pcm, sampleRate);
  if (format === "raw") return int16Bytes(pcm).slice();
  const chunks: Uint8Array[] = [];
  const enc = new AudioEncoderStream(format, sampleRate, (c) => chunks.push(c.slice()));
  // Write in pieces so a long answer does not sit in one huge pipe write.
  for (let i = 0; i < pcm.length; i += 65536) enc.write(pcm.subarray(i, i + 65536));
  await enc.end();
  return Buffer.concat(chunks);
}

let probe: Promise<boolean> | undefined;
/** Whether ffmpeg can be started (asked once per process). */
export function ffmpegAvailable(): Promise<boolean> {
  probe ??= new Promise<boolean>((resolve) => {
    const p = spawn(ffmpegBinary(), ["-hide_banner", "-version"], { stdio: "ignore" });
    p.once("error", () => resolve(false));
    p.once("close", (code) => resolve(code === 0));
  });
  return probe;
}

/**
 * Any audio file ffmpeg can read, as a mono 16-bit WAV at its own sample rate (used for uploaded voices
 * that are not WAV already). BAD_AUDIO if ffmpeg cannot decode it.
 */
export async function transcodeToWav(bytes: Uint8Array, maxOutputBytes: number): Promise<Uint8Array> {
  const proc = spawn(ffmpegBinary(), ["-hide_banner", "-loglevel", "error", "-nostdin", "-i", "pipe:0", "-vn", "-ac", "1", "-c:a", "pcm_s16le", "-f", "wav", "pipe:1"], {
    stdio: ["pipe", "pipe", "pipe"],
  });
  const out: Buffer[] = [];
  let n = 0;
  let stderr = "";
  let tooBig = false;
  proc.stdout!.on("data", (d: Buffer) => {
    n += d.length;
    if (n > maxOutputBytes) {
      tooBig = true;
      proc.kill("SIGKILL");
      return;
    }
    out.push(d);
  });
  proc.stderr!.on("data", (d: Buffer) => (stderr = (stderr + d.toString()).slice(-1000)));
  proc.stdin!.on("error", () => undefined);
  const done = new Promise<number | null>((resolve, reject) => {
    proc.once("error", (err) => reject(missing(err)));
    proc.once("close", (code) => resolve(code));
  });
  proc.stdin!.end(bytes);
  const code = await done;
  if (tooBig) throw new GsvError("PAYLOAD_TOO_LARGE", `the decoded audio is larger than ${maxOutputBytes} bytes`);
  if (code !== 0 || n <= 44) throw new GsvError("BAD_AUDIO", `the upload is not decodable audio${stderr.trim() ? `: ${stderr.trim().split("\n").pop()}` : ""}`);
  const wav = Buffer.concat(out);
  // ffmpeg writes a streaming header to a pipe (unknown sizes); decodeWav reads such files to the end.
  return new Uint8Array(wav.buffer, wav.byteOffset, wav.byteLength);
}
