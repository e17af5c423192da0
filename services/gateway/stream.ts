/**
 * Streaming HTTP responses (`streaming_mode` 1..3 on /tts, docs/streaming.md): chunked transfer, audio
 * written as the client library puts it in order. For media_type wav the body starts with a WAV header
 * whose sizes are 0xFFFFFFFF (length unknown, as streaming WAV readers expect); raw is bare int16 PCM.
 * Headers go out with the first audio, so an error before any audio is still a JSON answer with its
 * code; an error after it cuts the connection (the caller's error path destroys the response).
 * Per-stage timing follows as a Server-Timing trailer.
 */
import type { ServerResponse } from "node:http";
import type { NatsConnection } from "nats";
import { synthesize, type SynthesisRequest, type SynthesisResult } from "../../shared/client.js";
import { floatToInt16, wavHeader } from "../../shared/dsp/index.js";

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

export async function streamAudio(res: ServerResponse, nc: NatsConnection, req: SynthesisRequest, media: "wav" | "raw", gatewayMs: number): Promise<void> {
  let started = false;
  let sampleRate = 24000;
  const start = (id: string) => {
    if (started) return;
    started = true;
    res.writeHead(200, {
      "Content-Type": media === "wav" ? "audio/wav" : "audio/raw",
      "X-Request-Id": id,
      "X-Gsv-Sample-Rate": String(sampleRate),
      "X-Gsv-Streaming-Mode": String(req.stream ?? 0),
      Trailer: "Server-Timing, X-Gsv-Tokens",
    });
    res.flushHeaders();
    if (media === "wav") res.write(streamingWavHeader(sampleRate));
  };
  const id = req.id ?? crypto.randomUUID().replaceAll("-", "");
  const result = await synthesize(nc, {
    ...req,
    id,
    onEvent: (ev) => {
      if (ev.type === "audio") sampleRate = ev.sampleRate;
      req.onEvent?.(ev);
    },
    onAudio: (pcm) => {
      start(id);
      if (!res.destroyed) res.write(new Uint8Array(floatToInt16(pcm).buffer));
      req.onAudio?.(pcm);
    },
  });
  start(result.id);
  res.addTrailers({ "Server-Timing": serverTiming(result, gatewayMs), "X-Gsv-Tokens": result.tokens.join(",") });
  res.end();
}
