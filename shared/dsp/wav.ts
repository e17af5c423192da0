/**
 * WAV (RIFF/WAVE) decoding and 16-bit PCM encoding.
 *
 * decodeWav reads PCM integer 8 (unsigned), 16, 24 and 32 bit, IEEE float 32 and 64 bit, in plain
 * WAVE_FORMAT_PCM / WAVE_FORMAT_IEEE_FLOAT or WAVE_FORMAT_EXTENSIBLE form. Chunks other than "fmt "
 * and "data" (LIST, fact, cue, …) are skipped, honouring the pad byte after odd-sized chunks. All
 * channels are mixed to mono by their mean (as upstream's `audio.mean(0)`).
 *
 * Scaling follows torchaudio.load (what upstream uses for the 32 kHz / 24 kHz reference paths): an
 * integer sample of container width b bits is divided by 2^(b−1) (8-bit: (u − 128) / 128), so integer
 * formats land in [−1, 1). Float samples are passed through unchanged, NOT clipped, as torchaudio does:
 * upstream's peak rule on the 32 kHz path (divide by min(2, peak) when peak > 1) only matters for such
 * files. Non-finite float samples are rejected.
 *
 * Every failure is a GsvError("BAD_AUDIO", detail). The parser only walks forward through the buffer
 * (every step advances at least 8 bytes), so it cannot loop.
 *
 * Streaming headers: a data chunk whose size is 0xFFFFFFFF, or 0 while the RIFF size says the file
 * ends at or before the data (what Python's `wave` writes for an empty header, as upstream's streaming
 * endpoint sends, followed by raw PCM), is read to the end of the buffer. Any other data size larger
 * than what the buffer holds is an error.
 */
import { GsvError } from "../errors.js";

export interface DecodedWav {
  sampleRate: number;
  /** Channels in the file (the samples are already mixed to mono). */
  channels: number;
  /** Mono samples. */
  samples: Float32Array;
}

const FORMAT_PCM = 0x0001;
const FORMAT_FLOAT = 0x0003;
const FORMAT_EXTENSIBLE = 0xfffe;
/** Bytes 2..15 of the KSDATAFORMAT_SUBTYPE_* GUIDs (…-0000-0010-8000-00AA00389B71). */
const GUID_TAIL = [0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x80, 0x00, 0x00, 0xaa, 0x00, 0x38, 0x9b, 0x71];

/** Highest sample rate accepted (covers every standard rate up to 768 kHz). */
export const MAX_WAV_SAMPLE_RATE = 768_000;
/** Most channels accepted. */
export const MAX_WAV_CHANNELS = 64;

function bad(detail: string): GsvError {
  return new GsvError("BAD_AUDIO", detail);
}

function fourcc(buf: Uint8Array, off: number): string {
  return String.fromCharCode(buf[off], buf[off + 1], buf[off + 2], buf[off + 3]);
}

function printable(id: string): string {
  return JSON.stringify(id);
}

interface Fmt {
  format: number; // FORMAT_PCM or FORMAT_FLOAT after resolving EXTENSIBLE
  channels: number;
  sampleRate: number;
  blockAlign: number;
  bitsPerSample: number;
}

function parseFmt(view: DataView, off: number, size: number): Fmt {
  if (size < 16) throw bad(`fmt chunk is ${size} bytes, needs at least 16`);
  let format = view.getUint16(off, true);
  const channels = view.getUint16(off + 2, true);
  const sampleRate = view.getUint32(off + 4, true);
  const blockAlign = view.getUint16(off + 12, true);
  const bitsPerSample = view.getUint16(off + 14, true);

  if (format === FORMAT_EXTENSIBLE) {
    if (size < 40) throw bad(`WAVE_FORMAT_EXTENSIBLE fmt chunk is ${size} bytes, needs 40`);
    const cbSize = view.getUint16(off + 16, true);
    if (cbSize < 22) throw bad(`WAVE_FORMAT_EXTENSIBLE extension is ${cbSize} bytes, needs 22`);
    const validBits = view.getUint16(off + 18, true);
    if (validBits > bitsPerSample) {
      throw bad(`valid bits per sample (${validBits}) exceed the container size (${bitsPerSample})`);
    }
    const g = off + 24;
    for (let i = 0; i < GUID_TAIL.length; i++) {
      if (view.getUint8(g + 2 + i) !== GUID_TAIL[i]) throw bad("unsupported WAVE_FORMAT_EXTENSIBLE sub-format GUID");
    }
    format = view.getUint16(g, true);
  }

  if (format !== FORMAT_PCM && format !== FORMAT_FLOAT) {
    throw bad(`unsupported WAV sample format 0x${format.toString(16).padStart(4, "0")} (only PCM and IEEE float)`);
  }
  if (channels === 0) throw bad("WAV declares 0 channels");
  if (channels > MAX_WAV_CHANNELS) throw bad(`WAV declares ${channels} channels (at most ${MAX_WAV_CHANNELS})`);
  if (sampleRate === 0) throw bad("WAV declares a sample rate of 0 Hz");
  if (sampleRate > MAX_WAV_SAMPLE_RATE) throw bad(`WAV sample rate ${sampleRate} Hz is above ${MAX_WAV_SAMPLE_RATE} Hz`);
  if (format === FORMAT_PCM) {
    if (bitsPerSample < 1 || bitsPerSample > 32) throw bad(`unsupported PCM bit depth ${bitsPerSample}`);
  } else if (bitsPerSample !== 32 && bitsPerSample !== 64) {
    throw bad(`unsupported IEEE float bit depth ${bitsPerSample}`);
  }
  const bytesPerSample = Math.ceil(bitsPerSample / 8);
  if (blockAlign !== bytesPerSample * channels) {
    throw bad(`WAV block align ${blockAlign} does not match ${channels} channel(s) of ${bytesPerSample} byte(s)`);
  }
  return { format, channels, sampleRate, blockAlign, bitsPerSample };
}

/** Decode a RIFF/WAVE file to mono float samples. Throws GsvError("BAD_AUDIO") on anything unreadable. */
export function decodeWav(buf: Uint8Array): DecodedWav {
  if (!(buf instanceof Uint8Array)) throw bad("audio must be bytes");
  const n = buf.length;
  if (n === 0) throw bad("audio is empty");
  if (n < 12) throw bad(`audio is ${n} bytes, too short for a RIFF/WAVE header`);
  const magic = fourcc(buf, 0);
  if (magic !== "RIFF") {
    if (magic === "RIFX") throw bad("big-endian RIFX WAV is not supported");
    if (magic === "RF64") throw bad("RF64 WAV is not supported");
    throw bad("not a WAV file (no RIFF header)");
  }
  if (fourcc(buf, 8) !== "WAVE") throw bad("RIFF file is not WAVE");
  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const riffSize = view.getUint32(4, true);

  let fmt: Fmt | null = null;
  let dataOff = -1;
  let dataLen = 0;
  let off = 12;
  while (off + 8 <= n) {
    const id = fourcc(buf, off);
    const size = view.getUint32(off + 4, true);
    const body = off + 8;
    const avail = n - body;
    if (id === "fmt ") {
      if (fmt) throw bad("WAV has two fmt chunks");
      if (size > avail) throw bad(`fmt chunk is truncated (${size} bytes declared, ${avail} present)`);
      fmt = parseFmt(view, body, size);
    } else if (id === "data") {
      if (dataOff >= 0) throw bad("WAV has two data chunks");
      const streaming =
        size === 0xffffffff || (size === 0 && avail > 0 && (riffSize === 0 || riffSize === 0xffffffff || 8 + riffSize <= body));
      if (streaming) {
        dataOff = body;
        dataLen = avail;
        break;
      }
      if (size > avail) throw bad(`data chunk is longer than the file (${size} bytes declared, ${avail} present)`);
      dataOff = body;
      dataLen = size;
    } else if (size > avail) {
      if (dataOff >= 0 && fmt) break; // trailing chunk cut short after the audio: ignore it
      throw bad(`chunk ${printable(id)} is longer than the file (${size} bytes declared, ${avail} present)`);
    }
    if (fmt && dataOff >= 0) break;
    off = body + size + (size & 1);
  }

  if (!fmt) throw bad(dataOff >= 0 ? "WAV has no fmt chunk" : "WAV has no fmt chunk and no data chunk");
  if (dataOff < 0) throw bad("WAV has no data chunk");
  const frames = Math.floor(dataLen / fmt.blockAlign);
  if (frames === 0) throw bad("WAV data chunk holds no complete sample frame");

  return { sampleRate: fmt.sampleRate, channels: fmt.channels, samples: decodeSamples(view, dataOff, frames, fmt) };
}

function decodeSamples(view: DataView, off: number, frames: number, fmt: Fmt): Float32Array {
  const { channels, blockAlign, format } = fmt;
  const bytes = blockAlign / channels;
  const out = new Float32Array(frames);
  const inv = 1 / channels;
  let read: (p: number) => number;
  if (format === FORMAT_FLOAT) {
    read = bytes === 4 ? (p) => view.getFloat32(p, true) : (p) => view.getFloat64(p, true);
  } else if (bytes === 1) {
    read = (p) => (view.getUint8(p) - 128) / 128;
  } else if (bytes === 2) {
    read = (p) => view.getInt16(p, true) / 32768;
  } else if (bytes === 3) {
    read = (p) => {
      const v = view.getUint8(p) | (view.getUint8(p + 1) << 8) | (view.getInt8(p + 2) << 16);
      return v / 8388608;
    };
  } else {
    read = (p) => view.getInt32(p, true) / 2147483648;
  }

  let p = off;
  if (channels === 1) {
    for (let t = 0; t < frames; t++, p += bytes) out[t] = read(p);
  } else {
    for (let t = 0; t < frames; t++) {
      let s = 0;
      for (let c = 0; c < channels; c++, p += bytes) s += read(p);
      out[t] = s * inv;
    }
  }
  if (format === FORMAT_FLOAT) {
    for (let t = 0; t < frames; t++) {
      if (!Number.isFinite(out[t])) throw bad(`WAV holds a non-finite sample at frame ${t}`);
    }
  }
  return out;
}

/**
 * Float to int16: clip to [−1, 1], multiply by 32767 and round half away from zero (Math.round on the
 * magnitude). Symmetric, so ±1 map to ±32767 and there is no overflow. Upstream does
 * `(audio * 32768).astype(np.int16)` (truncation, and +1.0 wraps to −32768); we deliberately differ.
 * NaN becomes 0.
 */
export function floatToInt16(pcm: Float32Array): Int16Array {
  const out = new Int16Array(pcm.length);
  for (let i = 0; i < pcm.length; i++) {
    let v = pcm[i];
    if (!(v === v)) v = 0;
    else if (v > 1) v = 1;
    else if (v < -1) v = -1;
    const s = v * 32767;
    out[i] = s < 0 ? -Math.round(-s) : Math.round(s);
  }
  return out;
}

/**
 * The 44-byte canonical header of a mono 16-bit PCM WAV with `dataBytes` of audio. `dataBytes` 0 gives
 * the streaming header upstream sends (RIFF size 36, data size 0), as Python's `wave` writes it.
 */
export function wavHeader(sampleRate: number, dataBytes: number): Uint8Array {
  if (!Number.isInteger(sampleRate) || sampleRate < 1 || sampleRate > 0x7fffffff) {
    throw new RangeError(`bad sample rate ${sampleRate}`);
  }
  if (!Number.isInteger(dataBytes) || dataBytes < 0 || dataBytes > 0xffffffff - 36) {
    throw new RangeError(`bad data size ${dataBytes}`);
  }
  const h = new Uint8Array(44);
  const v = new DataView(h.buffer);
  const ascii = (off: number, s: string) => {
    for (let i = 0; i < 4; i++) h[off + i] = s.charCodeAt(i);
  };
  ascii(0, "RIFF");
  v.setUint32(4, 36 + dataBytes, true);
  ascii(8, "WAVE");
  ascii(12, "fmt ");
  v.setUint32(16, 16, true);
  v.setUint16(20, FORMAT_PCM, true);
  v.setUint16(22, 1, true); // mono
  v.setUint32(24, sampleRate, true);
  v.setUint32(28, sampleRate * 2, true); // byte rate
  v.setUint16(32, 2, true); // block align
  v.setUint16(34, 16, true); // bits per sample
  ascii(36, "data");
  v.setUint32(40, dataBytes, true);
  return h;
}

/** Mono 16-bit PCM WAV of `pcm` (clipped, see floatToInt16). */
export function encodeWav(pcm: Float32Array, sampleRate: number): Uint8Array {
  const dataBytes = pcm.length * 2;
  const out = new Uint8Array(44 + dataBytes);
  out.set(wavHeader(sampleRate, dataBytes), 0);
  const s = floatToInt16(pcm);
  const v = new DataView(out.buffer);
  for (let i = 0; i < s.length; i++) v.setInt16(44 + 2 * i, s[i], true);
  return out;
}
