/**
 * Graceful drain: a stage replica that gets SIGTERM while it holds work of a request finishes that work
 * (the request completes with the same audio as an undisturbed run of the same seed), takes no new work
 * (a request sent during the drain is served by the replacement replica), and exits with status 0.
 */
import { hostname } from "node:os";
import t from "tap";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { decode } from "../shared/codec.js";
import { synthesize, type SynthesisRequest } from "../shared/client.js";
import { refAudioStore } from "../shared/nats.js";
import { fromRoot } from "../shared/paths.js";
import { Subjects, WorkQueues, type Stage } from "../shared/subjects.js";
import { startServices, withNats, type ServiceName, type ServiceProcess } from "./helpers/stack.js";

const STAGES: [ServiceName, Stage][] = [
  ["text-frontend", "text"],
  ["gpt-semantic", "gpt"],
  ["sovits-decoder", "sovits"],
  ["vocoder", "vocoder"],
];
const TEXT = "One, two, three. Four, five, six. Seven, eight, nine. Ten, eleven, twelve.";

t.test("drain - SIGTERM mid-request: in-flight work finishes, new work goes elsewhere, exit 0", async (t) => {
  const env = await withNats();
  const procs = new Map<ServiceName, ServiceProcess>();
  for (const p of await startServices(env.server.url, STAGES.map(([n]) => n))) procs.set(p.name, p);
  t.teardown(async () => {
    await Promise.all([...procs.values()].map((p) => p.stop()));
    await env.stop();
  });
  const wav = readFileSync(fromRoot("voices", "default.wav"));
  const audioSha = createHash("sha256").update(wav).digest("hex");
  await (await refAudioStore(env.nc)).putBlob({ name: audioSha }, wav);
  const request = (id: string, seed: number): SynthesisRequest => ({
    id,
    text: TEXT,
    textLang: "en",
    splitMethod: "cut5",
    voice: { audioSha, promptText: readFileSync(fromRoot("voices", "default.txt"), "utf8").trim(), promptLang: "en" },
    params: { topK: 15, topP: 1, temperature: 1, repetitionPenalty: 1.35, seed, speed: 1, sampleSteps: 4, fragmentInterval: 0.3 },
    timeoutMs: 60_000,
  });
  /** Which replica did each unit of `stage` for request `id` (from the timings on its reply events). */
  const replicasOf = (id: string, stage: Stage) => {
    const seen = new Set<string>();
    const units = new Map<string, Set<string>>(); // unit (seg[:win]) → replicas that did it
    const sub = env.nc.subscribe(Subjects.reply(id), {
      callback: (_e, m) => {
        const ev = decode(m.data) as { timings?: { stage: string; replica: string; seg: number; win?: number }[] };
        for (const tm of ev.timings ?? []) {
          if (tm.stage !== stage) continue;
          seen.add(tm.replica);
          const unit = `${tm.seg}:${tm.win ?? ""}`;
          units.set(unit, (units.get(unit) ?? new Set()).add(tm.replica));
        }
      },
    });
    return { seen, redone: () => [...units].filter(([, r]) => r.size > 1).map(([u]) => u), stop: () => sub.unsubscribe() };
  };
  const jsm = await env.nc.jetstreamManager();
  const baseline = await synthesize(env.nc, request("baseline", 5));

  for (const [name, stage] of STAGES.filter(([n]) => !process.env.GSV_DRAIN_ONLY || n === process.env.GSV_DRAIN_ONLY)) {
    const tag = name.replace("-", "");
    const a = procs.get(name)!;
    const aReplica = `${name}-${hostname()}-${a.proc.pid}`; // shared/config.ts: service-host-pid
    const r1Replicas = replicasOf(`drain${tag}`, stage);
    let r1Done = false;
    const r1 = synthesize(env.nc, request(`drain${tag}`, 5)).finally(() => (r1Done = true));
    // SIGTERM once the replica holds an unacked message of the request.
    let held = false;
    while (!held && !r1Done) {
      held = (await jsm.consumers.info(WorkQueues[stage].stream, WorkQueues[stage].consumer)).num_ack_pending > 0;
      if (!held) await new Promise((r) => setTimeout(r, 2));
    }
    t.ok(held, `${name}: SIGTERM while it holds work of the request`);
    const exited = a.stop("SIGTERM");
    const [b] = await startServices(env.server.url, [name]);
    procs.set(name, b);
    const r2Replicas = replicasOf(`during${tag}`, stage);
    const r2 = synthesize(env.nc, request(`during${tag}`, 6));
    const [res1, res2, code] = await Promise.all([r1.catch((e: Error) => Promise.reject(new Error(`${name}: the in-flight request failed: ${e.message}`))), r2.catch((e: Error) => Promise.reject(new Error(`${name}: the request sent during the drain failed: ${e.message}`))), exited]);
    r1Replicas.stop();
    r2Replicas.stop();
    t.equal(code, 0, `${name}: the drained replica exited with 0`);
    t.same(res1.tokens, baseline.tokens, `${name}: the in-flight request has the undisturbed tokens`);
    t.equal(res1.pcm.length, baseline.pcm.length, `${name}: and the same length`);
    let diff = 0;
    for (let i = 0; i < res1.pcm.length; i++) diff = Math.max(diff, Math.abs(res1.pcm[i] - baseline.pcm[i]));
    t.ok(diff < 1e-4, `${name}: and the same audio (max diff ${diff})`);
    t.ok(r1Replicas.seen.has(aReplica), `${name}: the draining replica finished work of the in-flight request (${[...r1Replicas.seen]})`);
    t.same(r1Replicas.redone(), [], `${name}: no unit of the request was done by both replicas (nothing the draining one held was redone)`);
    t.ok(res2.pcm.length > 0, `${name}: the request sent during the drain completed`);
    t.notOk(r2Replicas.seen.has(aReplica), `${name}: the draining replica took no new work (${[...r2Replicas.seen]})`);
  }
});
