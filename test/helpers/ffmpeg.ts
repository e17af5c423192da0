/** Test helpers: read encoded audio back with the real ffprobe/ffmpeg (an independent decoder). */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface Probe {
  codec: string;
  sampleRate: number;
  channels: number;
  formatName: string;
}

function withFile<T>(bytes: Uint8Array, fn: (path: string) => T): T {
  const dir = mkdtempSync(join(tmpdir(), "gsv-audio-"));
  const path = join(dir, "audio.bin");
  writeFileSync(path, bytes);
  try {
    return fn(path);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export function ffprobe(bytes: Uint8Array): Probe {
  return withFile(bytes, (path) => {
    const r = spawnSync("ffprobe", ["-v", "error", "-show_entries", "stream=codec_name,sample_rate,channels:format=format_name", "-of", "json", path], { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`ffprobe failed: ${r.stderr}`);
    const j = JSON.parse(r.stdout) as { streams: { codec_name: string; sample_rate: string; channels: number }[]; format: { format_name: string } };
    const s = j.streams[0];
    return { codec: s.codec_name, sampleRate: Number(s.sample_rate), channels: s.channels, formatName: j.format.format_name };
  });
}

/** Decode to mono float32 at the stream's own rate (what a player would hear). */
export function ffmpegDecode(bytes: Uint8Array, inputArgs: string[] = []): Float32Array {
  return withFile(bytes, (path) => {
    const r = spawnSync("ffmpeg", ["-v", "error", ...inputArgs, "-i", path, "-ac", "1", "-f", "f32le", "pipe:1"], { maxBuffer: 256 * 1024 * 1024 });
    if (r.status !== 0) throw new Error(`ffmpeg decode failed: ${r.stderr.toString()}`);
    const b = r.stdout as Buffer;
    return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
  });
}

/** Encode a WAV with the real ffmpeg into another container (for upload tests). */
export function ffmpegEncode(wav: Uint8Array, args: string[]): Uint8Array {
  return withFile(wav, (path) => {
    const r = spawnSync("ffmpeg", ["-v", "error", "-i", path, ...args, "pipe:1"], { maxBuffer: 64 * 1024 * 1024 });
    if (r.status !== 0) throw new Error(`ffmpeg encode failed: ${r.stderr.toString()}`);
    return new Uint8Array(r.stdout as Buffer);
  });
}

export function rms(x: Float32Array): number {
  let s = 0;
  for (const v of x) s += v * v;
  return Math.sqrt(s / Math.max(1, x.length));
}

/**
 * A tone's frequency from its upward crossings, with hysteresis (from below -h to above +h, h a tenth
 * of the peak) so codec noise near zero and silent padding at the ends do not count: (crossings - 1)
 * periods between the first and the last crossing.
 */
export function zeroCrossingHz(x: Float32Array, sampleRate: number): number {
  let peak = 0;
  for (const v of x) peak = Math.max(peak, Math.abs(v));
  const h = 0.1 * peak;
  const at: number[] = [];
  let low = false;
  for (let i = 0; i < x.length; i++) {
    if (x[i] < -h) low = true;
    else if (low && x[i] > h) {
      at.push(i);
      low = false;
    }
  }
  if (at.length < 2) return 0;
  return ((at.length - 1) * sampleRate) / (at[at.length - 1] - at[0]);
}
