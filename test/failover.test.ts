/**
 * Killing a service mid-request never hangs the request: with a replacement it completes (JetStream
 * redelivers the unacked work), without one it fails with DEADLINE_EXCEEDED by its deadline; once the
 * service is back, new requests succeed. Real nats-server, real processes, SIGKILL.
 */
import t from "tap";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { decode } from "../shared/codec.js";
import { synthesize, type SynthesisRequest } from "../shared/client.js";
import { GsvError } from "../shared/errors.js";
import { refAudioStore } from "../shared/nats.js";
import { fromRoot } from "../shared/paths.js";
import { Subjects } from "../shared/subjects.js";
import { startServices, withNats, type ServiceName, type ServiceProcess } from "./helpers/stack.js";

const STAGES: ServiceName[] = ["text-frontend", "gpt-semantic", "sovits-decoder", "vocoder"];
/** When to kill each stage: while it holds work of the request (text-frontend: right after the request is queued). */
const TRIGGER: Record<ServiceName, "plan" | "audio" | undefined> = { "text-frontend": undefined, "gpt-semantic": "plan", "sovits-decoder": "audio", vocoder: "audio", gateway: undefined };
const TEXT = "One, two, three. Four, five, six. Seven, eight, nine. Ten, eleven, twelve. Thirteen, fourteen.";

async function setup() {
  const env = await withNats();
  const procs = new Map<ServiceName, ServiceProcess>();
  for (const p of await startServices(env.server.url, STAGES)) procs.set(p.name, p);
  const wav = readFileSync(fromRoot("voices", "default.wav"));
  const audioSha = createHash("sha256").update(wav).digest("hex");
  await (await refAudioStore(env.nc)).putBlob({ name: audioSha }, wav);
  const request = (id: string, timeoutMs: number): SynthesisRequest => ({
    id,
    text: TEXT,
    textLang: "en",
    splitMethod: "cut5",
    voice: { audioSha, promptText: readFileSync(fromRoot("voices", "default.txt"), "utf8").trim(), promptLang: "en" },
    params: { topK: 15, topP: 1, temperature: 1, repetitionPenalty: 1.35, seed: 5, speed: 1, sampleSteps: 8, fragmentInterval: 0.3 },
    timeoutMs,
  });
  /** Resolves when the request's first event of `type` is seen on its reply subject. */
  const when = (id: string, type: "plan" | "audio") =>
    new Promise<void>((resolve) => {
      const sub = env.nc.subscribe(Subjects.reply(id), {
        callback: (_e, m) => {
          if ((decode(m.data) as { type: string }).type === type) {
            sub.unsubscribe();
            resolve();
          }
        },
      });
    });
  return {
    ...env,
    procs,
    request,
    when,
    async stopAll() {
      await Promise.all([...procs.values()].map((p) => p.stop()));
      await env.stop();
    },
  };
}

t.test("failover - a request completes when a killed stage is replaced", async (t) => {
  const s = await setup();
  t.teardown(() => s.stopAll());
  const baseline = await synthesize(s.nc, s.request("baseline", 60_000));
  t.ok(baseline.pcm.length > 0);

  for (const victim of STAGES) {
    const id = `replace${victim.replace("-", "")}`;
    const trigger = TRIGGER[victim] ? s.when(id, TRIGGER[victim]) : Promise.resolve();
    const result = synthesize(s.nc, s.request(id, 60_000));
    await trigger;
    const code = await s.procs.get(victim)!.stop("SIGKILL");
    t.equal(code, null, `${victim} was killed mid-request`);
    const [replacement] = await startServices(s.server.url, [victim]);
    s.procs.set(victim, replacement);
    const r = await result;
    t.equal(r.segments, baseline.segments, `${victim}: every segment arrived`);
    t.same(r.tokens, baseline.tokens, `${victim}: same tokens as the undisturbed run (same seed)`);
    t.equal(r.pcm.length, baseline.pcm.length, `${victim}: same length`);
    let diff = 0;
    for (let i = 0; i < r.pcm.length; i++) diff = Math.max(diff, Math.abs(r.pcm[i] - baseline.pcm[i]));
    t.ok(diff < 1e-4, `${victim}: the redelivered work gives the same audio (max diff ${diff})`);
  }
});

t.test("failover - without a replacement the request fails by its deadline; then new requests succeed", async (t) => {
  const s = await setup();
  t.teardown(() => s.stopAll());
  for (const victim of STAGES) {
    const id = `gone${victim.replace("-", "")}`;
    const trigger = TRIGGER[victim] ? s.when(id, TRIGGER[victim]) : Promise.resolve();
    const started = Date.now();
    const result = synthesize(s.nc, s.request(id, 5000));
    // On a loaded machine the deadline can come before the trigger: then the request has failed already.
    await Promise.race([trigger, result.catch(() => undefined)]);
    await s.procs.get(victim)!.stop("SIGKILL");
    try {
      await result;
      t.fail(`${victim}: the request should fail`);
    } catch (err) {
      t.ok(err instanceof GsvError, `${victim}: a coded error`);
      t.equal((err as GsvError).code, "DEADLINE_EXCEEDED", `${victim}: ${(err as Error).message}`);
    }
    const elapsed = Date.now() - started;
    t.ok(elapsed >= 4900 && elapsed < 8000, `${victim}: failed at its deadline (${elapsed} ms), not hung`);

    const [back] = await startServices(s.server.url, [victim]);
    s.procs.set(victim, back);
    const r = await synthesize(s.nc, s.request(`back${victim.replace("-", "")}`, 60_000));
    t.ok(r.pcm.length > 0, `${victim}: a new request succeeds once the service is back`);
    t.equal(r.tokens.length, r.segments);
  }
});
