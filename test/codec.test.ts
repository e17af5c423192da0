import t from "tap";
import { decode, decodeAs, encode, peekRouting } from "../shared/codec.js";
import { GsvError } from "../shared/errors.js";
import { GptJob, TtsParams, VocoderJob } from "../shared/schemas.js";

t.test("codec - typed arrays survive a round trip bit for bit", async (t) => {
  const f = new Float32Array([0, -1.5, 3.25, Number.NaN, Infinity, 1e-30]);
  const i = new Int32Array([0, -1, 2147483647, -2147483648]);
  const big = new BigInt64Array([0n, -5n, 9007199254740993n]);
  const out = decode(encode({ f, i, big, nested: { f } })) as { f: Float32Array; i: Int32Array; big: BigInt64Array; nested: { f: Float32Array } };
  t.ok(out.f instanceof Float32Array, "Float32Array stays a Float32Array");
  t.same(new Uint8Array(out.f.buffer, out.f.byteOffset, out.f.byteLength), new Uint8Array(f.buffer), "same bytes, NaN and Infinity included");
  t.ok(out.i instanceof Int32Array);
  t.same(Array.from(out.i), Array.from(i));
  t.ok(out.big instanceof BigInt64Array);
  t.same(Array.from(out.big), Array.from(big));
  t.same(Array.from(out.nested.f), Array.from(out.f).map((v) => (Number.isNaN(v) ? v : v)));
});

t.test("codec - a large window (466 mel frames) round trips and stays under 1 MB", async (t) => {
  const mel = new Float32Array(100 * 466).map((_, k) => Math.sin(k));
  const job = { id: "r1", reply: "x", deadline: 1, enqueuedAt: 0, timings: [], seg: 0, segCount: 1, win: 0, last: true, mel, frames: 466, overlap: 0, tail: 0, tokens: 10, fragmentInterval: 0.3 };
  const bytes = encode(job);
  t.ok(bytes.length < 1024 * 1024, `encoded size ${bytes.length}`);
  const back = decodeAs(VocoderJob, bytes);
  t.equal(back.mel.length, mel.length);
  t.equal(back.mel[1234], mel[1234]);
});

t.test("codec - malformed messages are MALFORMED_MESSAGE naming the field", async (t) => {
  t.throws(() => decodeAs(VocoderJob, new Uint8Array([0xc1])), { code: "MALFORMED_MESSAGE" });
  const bad = encode({ id: "r1", reply: "x", deadline: 1, enqueuedAt: 0, seg: 0, segCount: 1, win: 0, last: true, mel: [1, 2, 3], frames: 1, overlap: 0, tail: 0, tokens: 1, fragmentInterval: 0 });
  try {
    decodeAs(VocoderJob, bad);
    t.fail("should throw");
  } catch (e) {
    t.ok(e instanceof GsvError && e.code === "MALFORMED_MESSAGE");
    t.match((e as Error).message, /mel/);
  }
  t.same(peekRouting(bad), { id: "r1", reply: "x" }, "routing fields are still readable to report the error");
  t.same(peekRouting(new Uint8Array([1, 2, 3])), {});
});

t.test("schemas - api_v2 defaults and coercion of query strings", async (t) => {
  const p = TtsParams.parse({ text: "hi", text_lang: "EN" });
  t.equal(p.text_lang, "en");
  t.equal(p.top_k, 15);
  t.equal(p.top_p, 1);
  t.equal(p.temperature, 1);
  t.equal(p.text_split_method, "cut5");
  t.equal(p.repetition_penalty, 1.35);
  t.equal(p.sample_steps, 32);
  t.equal(p.seed, -1);
  t.equal(p.media_type, "wav");
  t.equal(p.speed_factor, 1);
  const q = TtsParams.parse({ text: "hi", text_lang: "en", top_k: "5", temperature: "0.7", streaming_mode: "false", seed: "42" });
  t.equal(q.top_k, 5);
  t.equal(q.temperature, 0.7);
  t.equal(q.seed, 42);
  for (const bad of [{ top_k: 0 }, { top_p: 0 }, { top_p: 1.5 }, { temperature: 0 }, { sample_steps: 0 }, { speed_factor: 10 }, { media_type: "mp3" }, { text_split_method: "cut9" }, { streaming_mode: 4 }, { streaming_mode: "yes" }, { seed: 1.5 }]) {
    t.notOk(TtsParams.safeParse({ text: "hi", text_lang: "en", ...bad }).success, `rejects ${JSON.stringify(bad)}`);
  }
  t.notOk(TtsParams.safeParse({ text_lang: "en" }).success, "text is required");
});

t.test("voiceKey: only keys the KV client accepts pass the schema (fuzz: ../secret/secret.wav gave INTERNAL)", async (t) => {
  const key = GptJob.shape.voiceKey;
  for (const ok of ["tiny.0123abcd", "a/b=c_d-e.f"]) t.ok(key.safeParse(ok).success, `${ok} accepted`);
  for (const bad of ["../secret/secret.wav", ".hidden", "trailing.", "a..b", "sp ace", "a*b", ""]) t.notOk(key.safeParse(bad).success, `${JSON.stringify(bad)} refused`);
});
