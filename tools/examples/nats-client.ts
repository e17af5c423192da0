/**
 * Publishing a request from another program: speak a text over NATS with the typed client, no HTTP.
 *
 *   NATS_URL=nats://127.0.0.1:4222 node dist/tools/examples/nats-client.js "Hello there." out.wav
 *
 * Needs a running pipeline on that NATS server (`npm start` prints its NATS URL). The audio streams in
 * as it is synthesised; the WAV is written at the end.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { connect } from "nats";
import { GsvClient } from "../../shared/client.js";
import { encodeWav } from "../../shared/dsp/index.js";
import { fromRoot } from "../../shared/paths.js";

const [text = "Hello from another program.", out = "nats-client.wav"] = process.argv.slice(2);
const nc = await connect({ servers: process.env.NATS_URL ?? "nats://127.0.0.1:4222" });
try {
  const client = new GsvClient(nc);
  // The reference voice goes to the JetStream object store once; requests name it by its sha256.
  const audioSha = await client.putReferenceAudio(readFileSync(fromRoot("voices", "default.wav")));
  const voice = { audioSha, promptText: readFileSync(fromRoot("voices", "default.txt"), "utf8").trim(), promptLang: "en" };

  const pieces: Float32Array[] = [];
  const stream = client.stream({ text, textLang: "en", voice, params: { seed: 42, sampleSteps: 8 }, stream: 3 });
  for await (const chunk of stream) {
    pieces.push(chunk.pcm); // play it here instead, as it arrives
  }
  const result = await stream.result;
  writeFileSync(out, encodeWav(result.pcm, result.sampleRate));
  console.log(JSON.stringify({ out, seconds: result.pcm.length / result.sampleRate, chunks: pieces.length, firstAudioMs: result.firstAudioMs, totalMs: result.totalMs }));
} finally {
  await nc.close();
}
