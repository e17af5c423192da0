/**
 * Streaming HTTP responses (`streaming_mode` 1..3 on /tts, docs/streaming.md): chunked transfer, audio
 * written as the client library puts it in order. For media_type wav the body starts with a WAV header
 * whose sizes are 0xFFFFFFFF (length unknown, as streaming WAV readers expect); raw is bare int16 PCM.
 * Headers go out with the first audio, so an error before any audio is still a JSON answer with its
 * code; an error after it cuts the connection (the caller's error path destroys the response).
 * Per-stage timing follows as a Server-Timing trailer.
 */
import type { ServerResponse } from "node:http";
import type { SynthesisResult } from "../../shared/client.js";
import { floatToInt16, wavHeader } from "../../shared/dsp/index.js";
import { AudioEncoderStream, FORMATS, type AudioFormat } from "./audio-encode.js";

/** A WAV header for a stream of unknown length: RIFF and data sizes 0xFFFFFFFF. */
export function streamingWavHeader(sampleRate: number): Uint8Array {
  const h = wavHeader(sampleRate, 0);
  const v = new DataView(h.buffer, h.byteOffset, h.byteLength);
  v.setUint32(4, 0xffffffff, true);
  v.setUint32(40, 0xffffffff, true);
  return h;
}

export function serverTiming(r: SynthesisResult, gatewayMs: number): string {
  return [`gateway;dur=${gatewayMs}`, ...r.stages.flatMap((s) => [`${s.stage};dur=${s.computeMs};desc="compute x${s.units}"`, `${s.stage}-queue;dur=${s.queueMs}`]), `total;dur=${r.totalMs}`].join(", ");
}

/**
 * Answer with audio as it comes. `run` starts the synthesis with the given ordered-PCM callback (the
 * gateway's admission, tracing and cancellation apply as for any request). wav: a streaming WAV header
 * then int16 PCM; raw: int16 PCM; compressed formats: ffmpeg's output as it is produced.
 */
export async function streamAudio(
  res: ServerResponse,
  run: (onAudio: (pcm: Float32Array, sampleRate: number) => void) => Promise<SynthesisResult>,
  media: AudioFormat,
  mode: number,
  gatewayMs: number,
  headers: Record<string, string> = {},
): Promise<void> {
  let started = false;
  let enc: AudioEncoderStream | undefined;
  const send = (chunk: Uint8Array) => {
    if (!res.destroyed) res.write(chunk);
  };
  const start = (sampleRate: number) => {
    if (started) return;
    started = true;
    res.writeHead(200, {
      ...headers,
      "Content-Type": FORMATS[media].contentType,
      "X-Gsv-Sample-Rate": String(sampleRate),
      "X-Gsv-Streaming-Mode": String(mode),
      Trailer: "Server-Timing, X-Gsv-Tokens",
    });
    res.flushHeaders();
    if (media === "wav") send(streamingWavHeader(sampleRate));
    else if (media !== "raw") enc = new AudioEncoderStream(media, sampleRate, send);
  };
  const write = (pcm: Float32Array) => {
    if (enc) enc.write(pcm);
    else send(new Uint8Array(floatToInt16(pcm).buffer));
  };
  try {
    const result = await run((pcm, sampleRate) => {
      start(sampleRate);
      write(pcm);
    });
    start(result.sampleRate);
    await enc?.end();
    res.addTrailers({ "Server-Timing": serverTiming(result, gatewayMs), "X-Gsv-Tokens": result.tokens.join(",") });
    res.end();
  } catch (err) {
    enc?.abort();
    throw err;
  }
}
