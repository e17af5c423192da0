/**
 * Model sets at run time (shared/model-sets.ts, docs/api.md): /set_gpt_weights and /set_sovits_weights
 * switch the sets of new requests while requests in flight finish on their old sets; sets named per
 * request (GsvClient, OpenAI `model`) never share a batch; bad names and paths are clear 400s; a stage
 * holds at most GSV_MAX_MODEL_SETS sets. Real nats-server, real services, generated tiny sets.
 */
import t from "tap";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { spawn } from "node:child_process";
import { join } from "node:path";
import { connect, type NatsConnection } from "nats";
import { GsvClient } from "../shared/client.js";
import { decode } from "../shared/codec.js";
import { floatToInt16 } from "../shared/dsp/index.js";
import { fromRoot } from "../shared/paths.js";
import { sha256Hex } from "../shared/voice-registry.js";
import { ModelSetCache, resolveWeightsPath, type ModelSelection } from "../shared/model-sets.js";
import { generateModelSet } from "../tools/gen-models.js";
import { startStack, type Stack } from "../tools/launch.js";
import { TEST_ENV, startService } from "./helpers/stack.js";

const root = mkdtempSync(join(tmpdir(), "gsv-models-"));
// Set "tiny" (A): the bundled set, the stages' default. "b" and "d": other seeds, same dims.
symlinkSync(realpathSync(fromRoot("models", "tiny")), join(root, "tiny"));
// "c": b's graphs with a manifest that declares another codebook, so it does not fit a GPT of vocab 1025.
mkdirSync(join(root, "c"));
// "empty": a directory without a manifest.
mkdirSync(join(root, "empty"));

let stack: Stack;
let nc: NatsConnection;
let url: string;
t.before(async () => {
  await generateModelSet({ out: join(root, "b"), preset: "tiny", seed: 7 });
  await generateModelSet({ out: join(root, "d"), preset: "tiny", seed: 8 });
  const mb = JSON.parse(readFileSync(join(root, "b", "manifest.json"), "utf8"));
  for (const g of Object.values(mb.graphs) as { file: string }[]) copyFileSync(join(root, "b", g.file), join(root, "c", g.file));
  mb.dims.vq.codebook = 512;
  writeFileSync(join(root, "c", "manifest.json"), JSON.stringify(mb));
  stack = await startStack({
    env: { ...TEST_ENV, GSV_MODELS_ROOT: root, GSV_MODEL_DIR: join(root, "tiny"), GSV_MAX_MODEL_SETS: "2", GSV_GPT_STEP_DELAY_MS: "5" },
  });
  url = stack.gatewayUrl;
  nc = await connect({ servers: stack.natsUrl });
});
t.teardown(async () => {
  await nc?.close();
  await stack?.stop();
  rmSync(root, { recursive: true, force: true });
});

interface Answer {
  status: number;
  headers: Headers;
  data: Uint8Array;
  json: { code: string; message: string; model_set?: string; models?: ModelSelection };
}
async function call(path: string, init?: RequestInit): Promise<Answer> {
  const res = await fetch(url + path, init);
  const data = new Uint8Array(await res.arrayBuffer());
  let json = { code: "", message: "" } as Answer["json"];
  if (res.headers.get("content-type")?.startsWith("application/json")) json = JSON.parse(new TextDecoder().decode(data));
  return { status: res.status, headers: res.headers, data, json };
}
const setWeights = (which: "gpt" | "sovits", path: string) => call(`/set_${which}_weights?weights_path=${encodeURIComponent(path)}`);
const TEXT = "Switching sets. Old requests stay. New ones move.";
const body = { text: TEXT, text_lang: "en", ref_audio_path: "default.wav", seed: 5, sample_steps: 2, media_type: "raw" };
const tts = (extra: Record<string, unknown> = {}) => call("/tts", { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ ...body, ...extra }) });
const same = (a: Uint8Array, b: Uint8Array) => Buffer.from(a).equals(Buffer.from(b));
/** The standard request through another gateway: raw bytes. */
async function call2(base: string): Promise<Uint8Array> {
  const res = await fetch(`${base}/tts`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  if (res.status !== 200) throw new Error(`${res.status} ${await res.text()}`);
  return new Uint8Array(await res.arrayBuffer());
}

/** The same request straight over NATS on the given sets (no gateway, no selection): raw int16 bytes. */
async function direct(models: ModelSelection | undefined): Promise<Uint8Array> {
  const client = new GsvClient(nc, models ? { models } : {});
  const wav = readFileSync(fromRoot("voices", "default.wav"));
  const audioSha = await client.putReferenceAudio(wav);
  const r = await client.synthesize({
    text: TEXT,
    textLang: "en",
    voice: { audioSha, promptText: readFileSync(fromRoot("voices", "default.txt"), "utf8").trim(), promptLang: "en" },
    params: { seed: 5, sampleSteps: 2 },
  });
  t.equal(audioSha, sha256Hex(wav));
  return new Uint8Array(floatToInt16(r.pcm).buffer);
}

/** One long segment (cut0): hundreds of tokens at GSV_GPT_STEP_DELAY_MS each, so a request stays in flight for seconds. */
const LONG = Array.from({ length: 40 }, (_, i) => ["models", "switch", "while", "speaking"][i % 4]).join(" ");

/** A long streamed request whose headers (sent with its first audio) have arrived: it is in flight. */
async function startStreamed(extra: Record<string, unknown> = {}): Promise<{ headers: Headers; rest: Promise<Uint8Array> }> {
  const res = await fetch(`${url}/tts`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ ...body, text: LONG, text_split_method: "cut0", streaming_mode: 2, ...extra }) });
  if (res.status !== 200) throw new Error(`streamed request: ${res.status} ${await res.text()}`);
  return { headers: res.headers, rest: res.arrayBuffer().then((b) => new Uint8Array(b)) };
}

/** Requests the gateway has in flight now (its gsv_gateway_inflight gauge). */
async function gatewayInflight(): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text();
  return Number(/^gsv_gateway_inflight (\d+)/m.exec(text)?.[1] ?? -1);
}

interface StageStatus {
  modelSets: { loaded: string[]; count: number; loads: number; unloads: number };
}
async function stageSets(service: string): Promise<StageStatus["modelSets"]> {
  const m = await nc.request(`tts.v1.status.${service}`, new Uint8Array(), { timeout: 5000 });
  return (decode(m.data) as StageStatus).modelSets;
}

let alone: { a: Uint8Array; b: Uint8Array; bGptOnly: Uint8Array; aStreamed: Uint8Array; bGptOnlyStreamed?: Uint8Array };

t.test("runs straight on each set: sets give different audio, the default set is the one without a name", async (t) => {
  const a = await direct(undefined);
  t.ok(same(a, await direct({ gpt: "tiny", sovits: "tiny" })), "naming the default set is the default");
  const b = await direct({ gpt: "b", sovits: "b" });
  const bGptOnly = await direct({ gpt: "b", sovits: "tiny" });
  t.notOk(same(a, b), "set b sounds different from set a");
  t.notOk(same(a, bGptOnly), "b's GPT alone changes the audio");
  const http = await tts();
  t.equal(http.status, 200);
  t.ok(same(http.data, a), "before any switch the gateway runs on the default set");
  const s = await startStreamed();
  t.match(s.headers.get("x-request-id"), /^[0-9a-f]{32}$/, "the streamed answer carries X-Request-Id");
  alone = { a, b, bGptOnly, aStreamed: await s.rest };
});

t.test("/set_gpt_weights: new requests run on the new GPT set; a request in flight finishes on the old one", async (t) => {
  const inflight = await startStreamed();
  const sw = await setWeights("gpt", "b");
  t.equal(sw.status, 200, sw.json.message);
  t.ok((await gatewayInflight()) >= 1, "the earlier request was still in flight when the switch answered");
  t.same(sw.json.models, { gpt: "b", sovits: "tiny" }, "the answer names the selection");
  t.ok(same(await inflight.rest, alone.aStreamed), "the request admitted before the switch equals its undisturbed run on set a");
  const after = await tts();
  t.equal(after.status, 200);
  t.ok(same(after.data, alone.bGptOnly), "a new request equals a run started directly on GPT b + SoVITS tiny");
  t.notOk(same(after.data, alone.a), "and differs from set a's");
  alone.bGptOnlyStreamed = await (await startStreamed()).rest;
});

t.test("/set_sovits_weights: the same for the SoVITS half (voice prep, CFM, vocoder)", async (t) => {
  const before = await startStreamed();
  const sw = await setWeights("sovits", join(root, "b", "manifest.json"));
  t.equal(sw.status, 200, sw.json.message);
  t.ok((await gatewayInflight()) >= 1, "the earlier request was still in flight when the switch answered");
  t.same(sw.json.models, { gpt: "b", sovits: "b" }, "a path to the set's manifest names the set");
  t.ok(same(await before.rest, alone.bGptOnlyStreamed!), "the request in flight across the switch equals its undisturbed run on gpt b + sovits tiny");
  t.notOk(same(alone.bGptOnlyStreamed!, alone.aStreamed), "(which differs from set a's)");
  const after = await tts();
  t.ok(same(after.data, alone.b), "a new request equals a run started directly on set b");
});

t.test("bad weights_path values are 400s with a code, and serving goes on unchanged", async (t) => {
  for (const [path, code] of [
    ["nope", "UNKNOWN_MODEL_SET"],
    ["../../etc", "BAD_PARAMETER"],
    ["b/../../..", "BAD_PARAMETER"],
    ["/etc/passwd", "BAD_PARAMETER"],
    ["empty", "UNKNOWN_MODEL_SET"],
    ["GPT_weights_v3/x-e15.ckpt", "UNKNOWN_MODEL_SET"],
  ] as const) {
    for (const which of ["gpt", "sovits"] as const) {
      const r = await setWeights(which, path);
      t.equal(r.status, 400, `${which} ${path}`);
      t.equal(r.json.code, code, `${which} ${path}: ${r.json.message}`);
      t.ok(r.json.message && (r.json as { Exception?: string }).Exception, "upstream's error shape (message, Exception)");
    }
  }
  const c = await setWeights("sovits", "c");
  t.equal(c.status, 400);
  t.equal(c.json.code, "INCOMPATIBLE_MODEL_SETS", c.json.message);
  t.match(c.json.message, /codebook/);
  const none = await call("/set_gpt_weights");
  t.equal(none.status, 400, "no weights_path");
  const after = await tts();
  t.equal(after.status, 200);
  t.ok(same(after.data, alone.b), "the selection is still set b");
});

t.test("requests on different sets in flight at once each equal their alone-runs (batches never mix sets)", async (t) => {
  const [a, b, ab] = await Promise.all([direct({ gpt: "tiny", sovits: "tiny" }), direct({ gpt: "b", sovits: "b" }), direct({ gpt: "b", sovits: "tiny" })]);
  t.ok(same(a, alone.a), "set a");
  t.ok(same(b, alone.b), "set b");
  t.ok(same(ab, alone.bGptOnly), "gpt b + sovits a");
  const unknown = await new GsvClient(nc, { models: { gpt: "nope", sovits: "tiny" }, timeoutMs: 30_000 })
    .synthesize({ text: "x.", voice: { audioSha: sha256Hex(readFileSync(fromRoot("voices", "default.wav"))), promptText: "hi", promptLang: "en" } })
    .then(() => "ok", (e: { code?: string }) => e.code);
  t.equal(unknown, "UNKNOWN_MODEL_SET", "a request naming an unknown set fails alone, with a code");
  t.throws(() => new GsvClient(nc, { models: { gpt: "../x", sovits: "b" } }), { code: "BAD_PARAMETER" }, "a set name that is a path is refused by the client");
});

t.test("gsv say --model-set runs on the named sets", async (t) => {
  const out = join(root, "say.raw");
  const code = await new Promise<number | null>((resolve) => {
    const p = spawn(process.execPath, [fromRoot("dist", "tools", "cli.js"), "say", TEXT, "--nats", stack.natsUrl, "--model-set", "b", "--seed", "5", "--steps", "2", "--format", "raw", "-o", out, "-q"], { stdio: "ignore", env: { ...process.env, ...TEST_ENV } });
    p.once("exit", resolve);
  });
  t.equal(code, 0);
  t.ok(same(readFileSync(out), alone.b), "the same audio as the client on set b");
  const bad = await new Promise<number | null>((resolve) => spawn(process.execPath, [fromRoot("dist", "tools", "cli.js"), "say", "x", "--nats", stack.natsUrl, "--model-set", "../x", "-o", out, "-q"], { stdio: "ignore" }).once("exit", resolve));
  t.not(bad, 0, "a malformed --model-set is refused");
});

t.test("OpenAI `model` may name a set; /v1/models lists the sets", async (t) => {
  const list = (await (await fetch(`${url}/v1/models`)).json()) as { data: { id: string }[] };
  const ids = list.data.map((m) => m.id);
  for (const id of ["gpt-sovits-v3", "tiny", "b", "c", "d"]) t.ok(ids.includes(id), id);
  t.notOk(ids.includes("empty"), "a directory without a manifest is not listed");
  const speech = (model: string) => fetch(`${url}/v1/audio/speech`, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ model, input: TEXT, voice: "default", response_format: "pcm", seed: 5, sample_steps: 2, text_lang: "en" }) });
  // The stages are asked to load a set named per request once, not on every request.
  const loads = nc.subscribe("tts.v1.models.load.>");
  let seen = 0;
  void (async () => {
    for await (const _ of loads) seen++;
  })();
  const r = await speech("tiny");
  t.equal(r.status, 200);
  t.ok(same(new Uint8Array(await r.arrayBuffer()), alone.a), "model=tiny runs on set tiny whatever the selection");
  await nc.flush();
  t.equal(seen, 3, "the first request asked gpt, sovits and vocoder to load the set");
  const again = await speech("tiny");
  t.ok(same(new Uint8Array(await again.arrayBuffer()), alone.a), "and the second one runs on it too");
  await nc.flush();
  t.equal(seen, 3, "without asking again");
  loads.unsubscribe();
  const bad = await speech("nope");
  t.equal(bad.status, 400);
  t.equal(((await bad.json()) as { error: { code: string } }).error.code, "BAD_PARAMETER");
});

/** Starts another gateway on the same NATS and models root (stopped with the test); its URL. */
async function secondGateway(t: { teardown(fn: () => unknown): void }): Promise<string> {
  const gw2 = await startService("gateway", { ...TEST_ENV, NATS_URL: stack.natsUrl, PORT: "0", GSV_MODELS_ROOT: root, GSV_MODEL_DIR: join(root, "tiny") });
  t.teardown(() => gw2.stop());
  return String(gw2.ready.url);
}

/** The model selection a gateway's /health reports. */
const health = async (u: string) => ((await (await fetch(`${u}/health`)).json()) as { models: ModelSelection | null }).models;

t.test("every gateway follows the selection: one started later reads it, one running sees the switch", async (t) => {
  const url2 = await secondGateway(t);
  t.same(await health(url2), { gpt: "b", sovits: "b" }, "a gateway started after the switch reads the stored selection");
  const r2 = await call2(url2);
  t.ok(same(r2, alone.b), "and runs new requests on it");
  t.equal((await setWeights("gpt", "tiny")).status, 200);
  t.equal((await setWeights("sovits", "tiny")).status, 200);
  // The other gateway learns of the switch through its KV watch: wait for it (bounded), then check its requests.
  let seen: ModelSelection | null = null;
  const switched = (m: ModelSelection | null) => m?.gpt === "tiny" && m?.sovits === "tiny";
  for (let i = 0; i < 200 && !switched(seen); i++) {
    seen = await health(url2);
    if (!switched(seen)) await new Promise((r) => setTimeout(r, 25));
  }
  t.same(seen, { gpt: "tiny", sovits: "tiny" }, "the running gateway saw the switch made through the other one");
  t.ok(same(await call2(url2), alone.a), "and its new requests run on the new selection");
  t.equal((await setWeights("gpt", "b")).status, 200, "(back to b for the tests that follow)");
  t.equal((await setWeights("sovits", "b")).status, 200);
});

t.test("switches of the two halves through two gateways at once both take effect (no lost update)", async (t) => {
  const url2 = await secondGateway(t);
  const set2 = (which: "gpt" | "sovits", name: string) => fetch(`${url2}/set_${which}_weights?weights_path=${name}`).then((r) => r.status);
  // Each round: the GPT half through one gateway and the SoVITS half through the other, started together.
  // Both gateways start from the same stored selection; a write that ignored the other's would undo it.
  for (const [from, to] of [["b", "d"], ["d", "b"], ["b", "d"], ["d", "b"]]) {
    t.same(await health(url), { gpt: from, sovits: from }, `round ${from} -> ${to}: starts from ${from}/${from}`);
    const [s1, s2] = await Promise.all([setWeights("gpt", to).then((r) => r.status), set2("sovits", to)]);
    t.same([s1, s2], [200, 200], "both switches answered 200");
    // The gateways learn of each other's writes through their KV watch: wait (bounded) for both halves.
    const settled = async (u: string) => {
      let seen: ModelSelection | null = null;
      for (let i = 0; i < 200; i++) {
        seen = await health(u);
        if (seen?.gpt === to && seen?.sovits === to) break;
        await new Promise((r) => setTimeout(r, 25));
      }
      return seen;
    };
    if (!t.same(await settled(url2), { gpt: to, sovits: to }, "the second gateway admits with both halves")) break;
    if (!t.same(await settled(url), { gpt: to, sovits: to }, "and so does the first")) break;
  }
});

t.test("after a switch every replica of the stage loads the set, not only the one that answered", async (t) => {
  const env = { ...TEST_ENV, NATS_URL: stack.natsUrl, GSV_MODELS_ROOT: root, GSV_MODEL_DIR: join(root, "tiny"), GSV_MAX_MODEL_SETS: "2" };
  const extra = await startService("gpt-semantic", env);
  t.teardown(() => extra.stop());
  // Every replica answers its status subject: collect the answers for a while.
  const replicas = async () => {
    const out = new Map<string, string[]>();
    for await (const m of await nc.requestMany("tts.v1.status.gpt-semantic", new Uint8Array(), { maxWait: 1000 })) {
      const st = decode(m.data) as StageStatus & { replica: string };
      out.set(st.replica, st.modelSets?.loaded ?? []);
    }
    return out;
  };
  t.equal((await replicas()).size, 2, "two gpt-semantic replicas answer");
  t.equal((await setWeights("gpt", "d")).status, 200);
  let seen = new Map<string, string[]>();
  for (let i = 0; i < 40; i++) {
    seen = await replicas();
    if (seen.size === 2 && [...seen.values()].every((l) => l.includes("d"))) break;
  }
  t.same([...seen.values()].map((l) => l.includes("d")), [true, true], `both replicas hold set d (${[...seen.entries()].map(([r, l]) => `${r}: ${l.join(",")}`).join("; ")})`);
  t.equal((await setWeights("gpt", "b")).status, 200, "(back to b for the tests that follow)");
});

t.test("switching back and forth keeps at most GSV_MAX_MODEL_SETS sets loaded in every stage", async (t) => {
  for (const [gpt, sovits] of [["d", "d"], ["tiny", "tiny"], ["b", "b"], ["d", "d"], ["tiny", "tiny"]]) {
    t.equal((await setWeights("gpt", gpt)).status, 200, `gpt ${gpt}`);
    t.equal((await setWeights("sovits", sovits)).status, 200, `sovits ${sovits}`);
    const r = await tts({ text: "Back and forth." });
    t.equal(r.status, 200);
    for (const service of ["gpt-semantic", "sovits-decoder", "vocoder"]) {
      const s = await stageSets(service);
      t.ok(s.count <= 2, `${service} holds ${s.count} sets (${s.loaded.join(", ")}) after switching to ${gpt}/${sovits}`);
      t.ok(s.loaded.includes(service === "gpt-semantic" ? gpt : sovits), `${service} holds the selected set`);
    }
  }
  for (const service of ["gpt-semantic", "sovits-decoder", "vocoder"]) {
    const s = await stageSets(service);
    t.ok(s.unloads >= 2, `${service} unloaded idle sets (${s.unloads})`);
  }
  const back = await tts();
  t.ok(same(back.data, alone.a), "back on set a, the audio is set a's again");
});

t.test("resolveWeightsPath: names, paths inside the root, nothing outside it", async (t) => {
  for (const [spec, name] of [["b", "b"], ["b/", "b"], ["b/manifest.json", "b"], ["./b/t2s_step.onnx", "b"], [join(root, "b"), "b"], [join(root, "b", "manifest.json"), "b"], ["b\\manifest.json", "b"]] as const) {
    t.equal(resolveWeightsPath(spec, root), name, spec);
  }
  const rootName = root.split("/").pop()!;
  t.equal(resolveWeightsPath(`${rootName}/b/manifest.json`, root), "b", "the root's own name first");
  for (const spec of ["", "  ", ".", "..", "../x", "b/../..", "/", "/etc", `${root}/../x`, "a\0b"]) {
    t.throws(() => resolveWeightsPath(spec, root), { code: "BAD_PARAMETER" }, JSON.stringify(spec));
  }
  t.throws(() => resolveWeightsPath(".hidden", root), { code: "UNKNOWN_MODEL_SET" }, "a dot directory is not a set");
});

t.test("ModelSetCache: lazy, single flight, least recently used unloaded only when idle", async (t) => {
  const events: string[] = [];
  const cache = new ModelSetCache<string>({
    max: 2,
    modelDir: join(root, "tiny"),
    modelsRoot: root,
    async load(name) {
      events.push(`load ${name}`);
      if (name === "c") throw new Error("broken graphs");
      return name.toUpperCase();
    },
    async unload(v) {
      events.push(`unload ${v}`);
    },
  });
  const [x, y] = await Promise.all([cache.acquire(), cache.acquire("tiny")]);
  t.equal(x.value, "TINY");
  t.same(events, ["load tiny"], "one load for two concurrent first uses");
  const b = await cache.acquire("b");
  const d = await cache.acquire("d"); // three held, all in use: none can go
  t.equal(cache.size, 3, "a set in use is never unloaded");
  x.release();
  y.release();
  await new Promise((r) => setImmediate(r));
  t.same(cache.names.sort(), ["b", "d"], "the idle set went once released");
  t.ok(events.includes("unload TINY"));
  b.release();
  d.release();
  await t.rejects(cache.acquire("nope"), { code: "UNKNOWN_MODEL_SET" });
  await t.rejects(cache.acquire("c"), { code: "MODEL_ERROR" }, "a set that fails to load fails that acquire only");
  t.same(cache.names.sort(), ["b", "d"], "and is not held");
  t.equal(cache.counts.failures, 1);
  await cache.acquire("tiny").then((l) => l.release());
  t.ok(cache.size <= 2);
  await cache.close();
  t.equal(cache.size, 0);
});
