/**
 * `gsv say` as a user runs it: spawned, against a real pipeline (five processes, nats-server), with a
 * text of several sentences. Progress on stderr, audio to stdout or to a file, streamed or not.
 */
import t from "tap";
import { spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "nats";
import { GsvClient } from "../shared/client.js";
import { decodeWav, floatToInt16 } from "../shared/dsp/index.js";
import { fromRoot } from "../shared/paths.js";
import { startStack, type Stack } from "../tools/launch.js";
import { TEST_ENV } from "./helpers/stack.js";

const TEXT = "The first sentence is short. The second one is a little longer than the first. A third follows it. Then a fourth, to make a paragraph. And a fifth to end it.";
let stack: Stack;
let nc: NatsConnection;
const dir = mkdtempSync(join(tmpdir(), "gsv-cli-"));
t.before(async () => {
  stack = await startStack({ env: TEST_ENV });
  nc = await connect({ servers: stack.natsUrl });
});
t.teardown(async () => {
  await nc?.close();
  await stack?.stop();
  rmSync(dir, { recursive: true, force: true });
});

function gsv(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: Buffer; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [fromRoot("dist", "tools", "cli.js"), ...args], { env: { ...process.env, ...TEST_ENV, ...env } });
    const out: Buffer[] = [];
    let err = "";
    p.stdout.on("data", (d: Buffer) => out.push(d));
    p.stderr.on("data", (d: Buffer) => (err += d));
    p.on("exit", (code) => resolve({ code, stdout: Buffer.concat(out), stderr: err }));
  });
}

async function reference(stream: 1 | 2 | 3): Promise<Int16Array> {
  const c = new GsvClient(nc);
  const audioSha = await c.putReferenceAudio(readFileSync(fromRoot("voices", "default.wav")));
  const voice = { audioSha, promptText: readFileSync(fromRoot("voices", "default.txt"), "utf8").trim(), promptLang: "en" };
  return floatToInt16((await c.synthesize({ text: TEXT, voice, params: { seed: 8, sampleSteps: 4 }, stream })).pcm);
}

const same = (a: Int16Array, b: Int16Array) => a.length === b.length && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

t.test("cli - say --stream -o - writes a WAV of unknown length to stdout as it arrives, with progress on stderr", async (t) => {
  const r = await gsv(["say", TEXT, "-o", "-", "--stream", "--mode", "3", "--seed", "8", "--steps", "4", "--nats", stack.natsUrl]);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stdout.readUInt32LE(40), 0xffffffff, "the data size is unknown");
  const wav = decodeWav(new Uint8Array(r.stdout));
  const ints = Int16Array.from(wav.samples, (v) => Math.round(v * 32768));
  t.ok(same(ints, await reference(3)), "the audio equals the same request through the client library");
  const lines = r.stderr.split("\n").filter((l) => l.startsWith("["));
  const segs = Number(/(\d+) segments/.exec(r.stderr.match(/wrote stdout \(.*\)/)![0])![1]);
  t.ok(segs >= 4, `${segs} segments`);
  // One line per segment done, and one more with the final audio total when it changed after the last one.
  t.ok(lines.length === segs || lines.length === segs + 1, `one progress line per segment done, plus the final total (${lines.length} lines)`);
  const total = Number(/([\d.]+) s audio/.exec(lines[lines.length - 1])![1]);
  t.equal(total, Number((wav.samples.length / wav.sampleRate).toFixed(1)), "the last line shows all the audio written");
  t.match(lines[lines.length - 1], new RegExp(`\\[#{24}\\] ${segs}/${segs} segments, [\\d.]+ s audio`), "the bar ends full");
  const seconds = lines.map((l) => Number(/([\d.]+) s audio/.exec(l)![1]));
  t.ok(seconds.every((s, i) => i === 0 || s >= seconds[i - 1]), "audio seconds only grow");
});

t.test("cli - say -o file.wav (the non-streaming windows) and --stream to a file complete the WAV header", async (t) => {
  const a = join(dir, "a.wav");
  const r = await gsv(["say", TEXT, "-o", a, "--seed", "8", "--steps", "4", "--nats", stack.natsUrl, "-q"]);
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stderr, "", "-q prints nothing");
  const bytes = readFileSync(a);
  t.equal(bytes.readUInt32LE(40), bytes.length - 44, "the data size is in the header");
  const http = await fetch(`${stack.gatewayUrl}/tts`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ text: TEXT, text_lang: "en", seed: 8, sample_steps: 4 }) });
  t.same(Buffer.from(await http.arrayBuffer()).equals(bytes), true, "byte-identical to the gateway's non-streamed WAV");

  const b = join(dir, "b.wav");
  const s = await gsv(["say", TEXT, "-o", b, "--stream", "--seed", "8", "--steps", "4", "--nats", stack.natsUrl, "-q"]);
  t.equal(s.code, 0, s.stderr);
  const streamed = readFileSync(b);
  t.equal(streamed.readUInt32LE(40), streamed.length - 44, "streamed to a file: the header is completed at the end");
  t.equal(streamed.readUInt32LE(4), streamed.length - 8);
  t.ok(same(new Int16Array(streamed.buffer, streamed.byteOffset + 44, (streamed.length - 44) / 2), await reference(2)), "--stream is mode 2");
});

t.test("cli - say -o - into a non-blocking pipe whose reader is slow still writes all the audio", async (t) => {
  // A pipe on stdout can be non-blocking (Node makes it so once anything touches process.stdout, as this
  // preload does; so can the reading side): a write into the full pipe then fails with EAGAIN, where it
  // used to end the CLI with that error (seen in CI under load). The reader here waits 5 s before reading.
  const preload = join(dir, "touch-stdout.cjs");
  writeFileSync(preload, "process.stdout;\n");
  const p = spawn(process.execPath, ["-r", preload, fromRoot("dist", "tools", "cli.js"), "say", TEXT, "-o", "-", "--format", "raw", "--stream", "--mode", "3", "--seed", "8", "--steps", "4", "--nats", stack.natsUrl], { env: { ...process.env, ...TEST_ENV } });
  const out: Buffer[] = [];
  let err = "";
  p.stderr.on("data", (d: Buffer) => (err += d));
  p.stdout.pause();
  const resume = setTimeout(() => {
    p.stdout.on("data", (d: Buffer) => out.push(d));
    p.stdout.resume();
  }, 5000);
  const code = await new Promise<number | null>((resolve) => p.on("close", resolve));
  clearTimeout(resume);
  t.equal(code, 0, err.slice(-300));
  const bytes = Buffer.concat(out);
  t.ok(same(new Int16Array(bytes.buffer, bytes.byteOffset, bytes.length / 2), await reference(3)), `all the audio arrived (${bytes.length} bytes)`);
});

t.test("cli - say --url streams raw PCM over HTTP", async (t) => {
  const r = await gsv(["say", TEXT, "-o", "-", "--format", "raw", "--stream", "--mode", "3", "--seed", "8", "--steps", "4", "--url", stack.gatewayUrl]);
  t.equal(r.code, 0, r.stderr);
  const ints = new Int16Array(r.stdout.buffer, r.stdout.byteOffset, r.stdout.length / 2);
  t.ok(same(ints, await reference(3)), "bare int16 samples of the same audio");
  t.match(r.stderr, /s audio/, "progress in seconds of audio");
});

t.test("cli - say with nothing to say, or a bad mode, fails with a message", async (t) => {
  const a = await gsv(["say", "  ", "--nats", stack.natsUrl]);
  t.equal(a.code, 1);
  t.match(a.stderr, /nothing to say/);
  const b = await gsv(["say", "Hi.", "--stream", "--mode", "9", "--nats", stack.natsUrl, "-o", join(dir, "x.wav")]);
  t.equal(b.code, 1);
  t.match(b.stderr, /--mode must be/);
});
