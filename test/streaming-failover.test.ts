/**
 * Streamed segments keep no state in a stage: killing gpt-semantic or sovits-decoder after the first
 * streamed audio, and starting a replacement, gives the same audio as an undisturbed run (the window
 * chain resumes from the redelivered job; duplicates are dropped). Real nats-server, SIGKILL.
 */
import t from "tap";
import { readFileSync } from "node:fs";
import { GsvClient, type SpeakRequest } from "../shared/client.js";
import { fromRoot } from "../shared/paths.js";
import { startServices, withNats, type ServiceName, type ServiceProcess } from "./helpers/stack.js";

const STAGES: ServiceName[] = ["text-frontend", "gpt-semantic", "sovits-decoder", "vocoder"];
const TEXT = Array.from({ length: 40 }, (_, i) => ["kill", "the", "replica", "now"][i % 4]).join(" ");

t.test("streaming failover - a killed gpt-semantic or sovits-decoder mid-stream changes nothing in the audio", async (t) => {
  const env = await withNats();
  const procs = new Map<ServiceName, ServiceProcess>();
  for (const p of await startServices(env.server.url, STAGES)) procs.set(p.name, p);
  t.teardown(async () => {
    await Promise.all([...procs.values()].map((p) => p.stop()));
    await env.stop();
  });
  const client = new GsvClient(env.nc, { timeoutMs: 90_000 });
  const audioSha = await client.putReferenceAudio(readFileSync(fromRoot("voices", "default.wav")));
  const req = (id: string): SpeakRequest => ({
    id,
    text: TEXT,
    splitMethod: "cut0",
    voice: { audioSha, promptText: readFileSync(fromRoot("voices", "default.txt"), "utf8").trim(), promptLang: "en" },
    params: { seed: 13, sampleSteps: 8 },
    stream: 3,
  });
  const baseline = await client.synthesize(req("baseline"));

  for (const victim of ["sovits-decoder", "gpt-semantic"] as const) {
    const s = client.stream(req(`kill${victim.replace("-", "")}`));
    let killed = false;
    for await (const _ of s) {
      if (killed) continue;
      killed = true;
      t.equal(await procs.get(victim)!.stop("SIGKILL"), null, `${victim} killed after the first audio`);
      const [replacement] = await startServices(env.server.url, [victim]);
      procs.set(victim, replacement);
    }
    const r = await s.result;
    t.same(r.tokens, baseline.tokens, `${victim}: the same tokens`);
    t.equal(r.pcm.length, baseline.pcm.length, `${victim}: the same length`);
    t.same(Buffer.from(r.pcm.buffer).equals(Buffer.from(baseline.pcm.buffer)), true, `${victim}: the same samples`);
  }
});
