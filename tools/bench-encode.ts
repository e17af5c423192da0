/**
 * Encoder cost per format: median wall time of encodeAudio for 10 s of 24 kHz audio (5 runs after a
 * warm-up), and the encoded size. `node dist/tools/bench-encode.js`. See docs/audio-formats.md.
 */
import { AUDIO_FORMATS, encodeAudio } from "../services/gateway/audio-encode.js";

const sr = 24000;
const pcm = Float32Array.from({ length: sr * 10 }, (_, i) => 0.3 * Math.sin(i / 7) + 0.05 * Math.sin(i / 3.1));
for (const f of AUDIO_FORMATS) {
  await encodeAudio(pcm, sr, f);
  const times: number[] = [];
  let bytes = 0;
  for (let k = 0; k < 5; k++) {
    const t0 = performance.now();
    bytes = (await encodeAudio(pcm, sr, f)).length;
    times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  console.log(`${f.padEnd(5)} median ${times[2].toFixed(1).padStart(7)} ms   ${(bytes / 1024).toFixed(0).padStart(4)} KiB per 10 s`);
}
