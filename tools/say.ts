/**
 * `gsv say`: speak a text to a WAV (or raw PCM) file or to stdout.
 *
 * Without --url it talks to the pipeline over NATS with the typed client (shared/client.ts): on a
 * private pipeline it starts (or on NATS_URL / --nats), so it sees the plan and every window and draws
 * a progress bar on stderr (segments done / total, seconds of audio so far). With --url it uses the
 * HTTP gateway's streaming response instead (progress: seconds of audio).
 *
 * The audio always travels window by window (streaming_mode 1 decodes exactly the non-streaming
 * windows, so the output is the same); --stream [--mode 2|3] asks for earlier audio and writes it as it
 * arrives: to a file with the WAV header completed at the end, to stdout (-o -) with a WAV header of
 * unknown length, or bare int16 PCM with --format raw.
 */
import { closeSync, openSync, readFileSync, writeSync } from "node:fs";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { connect } from "nats";
import { GsvClient, type SynthesisResult } from "../shared/client.js";
import { ModelSelection } from "../shared/model-sets.js";
import { floatToInt16, wavHeader } from "../shared/dsp/index.js";
import { fromRoot } from "../shared/paths.js";
import type { ReplyEvent } from "../shared/schemas.js";
import type { StreamMode } from "../shared/streaming.js";
import { startStack, type Stack } from "./launch.js";

const PAUSE = new Int32Array(new SharedArrayBuffer(4));

/** Where the audio goes: a file (header completed at the end) or stdout (header of unknown length). */
class AudioSink {
  #fd: number;
  #toStdout: boolean;
  #bytes = 0;
  #headerWritten = false;
  #buffered: Uint8Array[] = [];
  constructor(
    out: string,
    readonly format: "wav" | "raw",
    readonly incremental: boolean,
  ) {
    this.#toStdout = out === "-";
    this.#fd = this.#toStdout ? 1 : openSync(out, "w");
  }

  #write(b: Uint8Array): void {
    let off = 0;
    while (off < b.length) {
      try {
        off += writeSync(this.#fd, b, off, b.length - off);
      } catch (err) {
        // A pipe on stdout may be non-blocking (its reader set it so, or Node did): when the reader is
        // slower than we are, the write fails with EAGAIN instead of waiting. Wait a little and go on.
        if ((err as NodeJS.ErrnoException).code !== "EAGAIN") throw err;
        Atomics.wait(PAUSE, 0, 0, 5);
      }
    }
  }

  write(pcm: Float32Array, sampleRate: number): void {
    const data = new Uint8Array(floatToInt16(pcm).buffer);
    this.#bytes += data.length;
    if (!this.incremental) {
      this.#buffered.push(data);
      return;
    }
    if (!this.#headerWritten && this.format === "wav") {
      const h = wavHeader(sampleRate, 0);
      if (this.#toStdout) {
        const v = new DataView(h.buffer);
        v.setUint32(4, 0xffffffff, true);
        v.setUint32(40, 0xffffffff, true);
      }
      this.#write(h);
    }
    this.#headerWritten = true;
    this.#write(data);
  }

  /** Complete the output: the buffered audio, or the final sizes in a file's WAV header. */
  end(sampleRate: number): number {
    if (!this.incremental || !this.#headerWritten) {
      if (this.format === "wav") this.#write(wavHeader(sampleRate, this.#bytes));
      for (const b of this.#buffered) this.#write(b);
    } else if (this.format === "wav" && !this.#toStdout) {
      writeSync(this.#fd, wavHeader(sampleRate, this.#bytes), 0, 44, 0);
    }
    if (!this.#toStdout) closeSync(this.#fd);
    return this.#bytes / 2 / sampleRate;
  }
}

class Progress {
  #segments = 0;
  #done = 0;
  #samples = 0;
  #sampleRate = 24000;
  #lastLine = "";
  #finished = new Set<number>();
  #lastSecond = 0;
  readonly #tty = process.stderr.isTTY === true;
  constructor(readonly enabled: boolean) {}

  event(ev: ReplyEvent): void {
    if (ev.type === "plan") this.#segments = ev.segments;
    else if (ev.type === "audio") {
      this.#sampleRate = ev.sampleRate;
      if (ev.last && !this.#finished.has(ev.seg)) {
        this.#finished.add(ev.seg);
        this.#done++;
        this.draw(true);
      }
    }
  }
  audio(samples: number): void {
    this.#samples += samples;
    // Without a plan (HTTP), a line per second of audio where the bar cannot redraw itself.
    const sec = Math.floor(this.#samples / this.#sampleRate);
    this.draw(this.#segments === 0 && sec > this.#lastSecond);
    this.#lastSecond = sec;
  }
  draw(force: boolean): void {
    if (!this.enabled) return;
    const total = this.#segments;
    const width = 24;
    const fill = total ? Math.round((width * this.#done) / total) : 0;
    const segs = total ? `${this.#done}/${total} segments` : "";
    const line = `[${"#".repeat(fill)}${".".repeat(width - fill)}] ${segs}${segs ? ", " : ""}${(this.#samples / this.#sampleRate).toFixed(1)} s audio`;
    if (this.#tty) process.stderr.write(`\r${line}`);
    else if (force && line !== this.#lastLine) {
      process.stderr.write(line + "\n");
      this.#lastLine = line; // the last line written, so that finish() writes the final total once
    }
  }
  finish(): void {
    if (!this.enabled) return;
    // The last audio is handed over after the last segment's event: show the final total once more.
    this.draw(true);
    if (this.#tty) process.stderr.write("\n");
  }
}

export async function say(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      out: { type: "string", short: "o", default: "out.wav" },
      lang: { type: "string", default: "en" },
      split: { type: "string", default: "cut5" },
      ref: { type: "string" },
      "prompt-text": { type: "string" },
      "prompt-lang": { type: "string" },
      seed: { type: "string" },
      steps: { type: "string" },
      speed: { type: "string" },
      url: { type: "string" },
      nats: { type: "string" },
      stream: { type: "boolean", default: false },
      mode: { type: "string" },
      format: { type: "string" },
      quiet: { type: "boolean", short: "q", default: false },
      "model-set": { type: "string" },
    },
  });
  // --model-set NAME (both halves) or GPT/SOVITS: the sets this request runs on (NATS path only).
  let models: ModelSelection | undefined;
  if (values["model-set"] !== undefined) {
    const [gpt, sovits = gpt] = values["model-set"].split("/");
    const r = ModelSelection.safeParse({ gpt, sovits });
    if (!r.success) throw new Error(`--model-set must be NAME or GPT/SOVITS (model set names), got ${JSON.stringify(values["model-set"])}`);
    if (values.url) throw new Error("--model-set needs the NATS path (without --url); over HTTP switch sets with /set_gpt_weights and /set_sovits_weights");
    models = r.data;
  }
  const text = positionals.join(" ");
  if (!text.trim()) throw new Error('nothing to say: gsv say "Hello world." -o hello.wav');
  const out = values.out!;
  const format = (values.format ?? (out !== "-" && out.endsWith(".raw") ? "raw" : "wav")) as "wav" | "raw";
  if (format !== "wav" && format !== "raw") throw new Error(`--format must be wav or raw, got ${values.format}`);
  const mode = (values.stream ? Number(values.mode ?? 2) : 1) as StreamMode;
  if (![1, 2, 3].includes(mode)) throw new Error(`--mode must be 2 or 3 (or 1: the non-streaming windows), got ${values.mode}`);
  const log = (s: string) => {
    if (!values.quiet) process.stderr.write(s + "\n");
  };
  const sink = new AudioSink(out, format, values.stream!);
  const progress = new Progress(!values.quiet);

  if (values.url) {
    // HTTP: the gateway's streaming response.
    const body: Record<string, unknown> = { text, text_lang: values.lang, prompt_lang: values["prompt-lang"] ?? values.lang, text_split_method: values.split, streaming_mode: mode, media_type: "raw" };
    if (values.ref) body.ref_audio_path = values.ref;
    if (values["prompt-text"]) body.prompt_text = values["prompt-text"];
    if (values.seed) body.seed = Number(values.seed);
    if (values.steps) body.sample_steps = Number(values.steps);
    if (values.speed) body.speed_factor = Number(values.speed);
    // a gateway started with GSV_API_KEY wants it: send ours when set
    const auth: Record<string, string> = process.env.GSV_API_KEY ? { authorization: `Bearer ${process.env.GSV_API_KEY}` } : {};
    const res = await fetch(`${values.url}/tts`, { method: "POST", headers: { "content-type": "application/json", ...auth }, body: JSON.stringify(body) });
    if (!res.ok || !res.body) throw new Error(`${res.status}: ${await res.text()}`);
    const rate = Number(res.headers.get("x-gsv-sample-rate") ?? 24000);
    let carry: Uint8Array = new Uint8Array(0);
    for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
      const all = new Uint8Array(carry.length + chunk.length);
      all.set(carry);
      all.set(chunk, carry.length);
      const even = all.length & ~1;
      const ints = new Int16Array(all.slice(0, even).buffer);
      carry = all.slice(even);
      sink.write(Float32Array.from(ints, (v) => v / 32767), rate);
      progress.audio(ints.length);
    }
    progress.finish();
    const seconds = sink.end(rate);
    log(`wrote ${out === "-" ? "stdout" : out} (${seconds.toFixed(2)} s of audio)`);
    return;
  }

  let stack: Stack | undefined;
  const natsUrl = values.nats ?? process.env.NATS_URL;
  try {
    if (!natsUrl) stack = await startStack({});
    const nc = await connect({ servers: natsUrl ?? stack!.natsUrl });
    try {
      const client = new GsvClient(nc, models ? { models } : {});
      const refPath = values.ref ? resolve(values.ref) : fromRoot("voices", "default.wav");
      const promptText = values["prompt-text"] ?? readFileSync(refPath.replace(/\.[^./\\]+$/, "") + ".txt", "utf8").trim();
      const audioSha = await client.putReferenceAudio(readFileSync(refPath));
      const params: Record<string, number> = {};
      if (values.seed) params.seed = Number(values.seed);
      if (values.steps) params.sampleSteps = Number(values.steps);
      if (values.speed) params.speed = Number(values.speed);
      let sampleRate = 24000;
      const s = client.stream({
        text,
        textLang: values.lang,
        splitMethod: values.split as "cut5",
        voice: { audioSha, promptText, promptLang: values["prompt-lang"] ?? values.lang! },
        params,
        stream: mode,
        onEvent: (ev) => {
          progress.event(ev);
          if (ev.type === "audio") sampleRate = ev.sampleRate;
        },
      });
      for await (const chunk of s) {
        sink.write(chunk.pcm, chunk.sampleRate);
        progress.audio(chunk.pcm.length);
      }
      const r: SynthesisResult = await s.result;
      progress.finish();
      const seconds = sink.end(sampleRate);
      log(`wrote ${out === "-" ? "stdout" : out} (${seconds.toFixed(2)} s of audio, ${r.segments} segments, tokens ${r.tokens.join(",")}, first audio after ${r.firstAudioMs} ms of ${r.totalMs} ms)`);
      log(`timing: ${r.stages.map((st) => `${st.stage} ${st.computeMs} ms compute, ${st.queueMs} ms queued`).join("; ")}`);
    } finally {
      await nc.close();
    }
  } finally {
    await stack?.stop();
  }
}
