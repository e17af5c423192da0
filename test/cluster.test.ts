/**
 * The production topology without containers: the committed 3-node cluster configuration
 * (infra/nats-cluster) on loopback, every stream, KV bucket and object store with 3 replicas, two
 * replicas of every stage, requests under load, and one NATS node SIGKILLed mid-run. Every accepted
 * request must complete exactly once (all its audio, nothing doubled) or fail with a coded error by its
 * deadline; after the kill the two surviving nodes keep serving. Clients get all three URLs in NATS_URL.
 */
import t from "tap";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import type { NatsConnection } from "nats";
import { decode } from "../shared/codec.js";
import { synthesize, type SynthesisRequest, type SynthesisResult } from "../shared/client.js";
import { GsvError } from "../shared/errors.js";
import { connectNats, durabilityFromEnv, natsServers, refAudioStore } from "../shared/nats.js";
import { fromRoot } from "../shared/paths.js";
import { PREFIX, Stages, WorkQueues } from "../shared/subjects.js";
import { startNatsCluster, type NatsCluster } from "../tools/cluster.js";
import { startServices, type ServiceName, type ServiceProcess } from "./helpers/stack.js";

const STAGES: ServiceName[] = ["text-frontend", "gpt-semantic", "sovits-decoder", "vocoder"];
const REPLICAS_PER_STAGE = 2;
const TEXT = "One, two, three. Four, five, six. Seven, eight.";
const DEADLINE_MS = 25_000;
/** Codes a request may end with when the node it depended on dies (see docs/errors.md). */
const FAILOVER_CODES = ["DEADLINE_EXCEEDED", "STAGE_UNAVAILABLE", "OVERLOADED"];

t.test("natsServers splits a comma-separated NATS_URL", async (t) => {
  t.same(natsServers("nats://a:4222, nats://b:4222 ,nats://c:4222"), ["nats://a:4222", "nats://b:4222", "nats://c:4222"]);
  t.same(natsServers("nats://one:4222"), ["nats://one:4222"]);
  t.throws(() => natsServers(" , "), /names no server/);
});

t.test("durabilityFromEnv reads replicas and storage, and refuses bad values", async (t) => {
  t.same(durabilityFromEnv({}), { replicas: 1, queueStorage: "memory", bucketStorage: "file" });
  t.same(durabilityFromEnv({ GSV_STREAM_REPLICAS: "3", GSV_STREAM_STORAGE: "file", GSV_BUCKET_STORAGE: "memory" }), { replicas: 3, queueStorage: "file", bucketStorage: "memory" });
  t.throws(() => durabilityFromEnv({ GSV_STREAM_REPLICAS: "0" }), /GSV_STREAM_REPLICAS/);
  t.throws(() => durabilityFromEnv({ GSV_STREAM_REPLICAS: "2.5" }), /GSV_STREAM_REPLICAS/);
  t.throws(() => durabilityFromEnv({ GSV_STREAM_STORAGE: "disk" }), /GSV_STREAM_STORAGE/);
});

interface Outcome {
  id: string;
  result?: SynthesisResult;
  code?: string;
  message?: string;
  elapsedMs: number;
}

t.test("cluster - 3 nodes, R3 streams, 2 replicas per stage: a node killed under load loses and doubles nothing", async (t) => {
  const env = { GSV_STREAM_REPLICAS: "3" };
  let cluster: NatsCluster | undefined;
  let nc: NatsConnection | undefined;
  const procs: ServiceProcess[] = [];
  t.teardown(async () => {
    await Promise.all(procs.map((p) => p.stop("SIGKILL")));
    await nc?.close().catch(() => undefined);
    await cluster?.stop();
  });
  cluster = await startNatsCluster();
  t.equal(cluster.nodes.length, 3, "three nodes");
  t.equal(natsServers(cluster.url).length, 3, "NATS_URL lists every node");

  const names = STAGES.flatMap((n) => Array<ServiceName>(REPLICAS_PER_STAGE).fill(n));
  procs.push(...(await startServices(cluster.url, names, env)));
  nc = await connectNats({ url: cluster.url, name: "cluster-test" });
  const jsm = await nc.jetstreamManager();
  for (const stage of Stages) {
    const info = await jsm.streams.info(WorkQueues[stage].stream);
    t.equal(info.config.num_replicas, 3, `${info.config.name} has 3 replicas`);
    t.equal(info.cluster?.replicas?.length, 2, `${info.config.name}: a leader and two followers`);
  }

  const wav = readFileSync(fromRoot("voices", "default.wav"));
  const audioSha = createHash("sha256").update(wav).digest("hex");
  const store = await refAudioStore(nc, durabilityFromEnv(env));
  await store.putBlob({ name: audioSha }, wav);
  t.equal((await store.status()).replicas, 3, "the reference-audio store has 3 replicas");
  const request = (id: string): SynthesisRequest => ({
    id,
    text: TEXT,
    textLang: "en",
    splitMethod: "cut5",
    voice: { audioSha, promptText: readFileSync(fromRoot("voices", "default.txt"), "utf8").trim(), promptLang: "en" },
    params: { topK: 15, topP: 1, temperature: 1, repetitionPenalty: 1.35, seed: 11, speed: 1, sampleSteps: 4, fragmentInterval: 0.3 },
    timeoutMs: DEADLINE_MS,
  });

  const baseline = await synthesize(nc, request("baseline"));
  t.ok(baseline.segments > 1 && baseline.pcm.length > 0, `baseline: ${baseline.segments} segments, ${baseline.pcm.length} samples`);

  // Every reply event, counted per request and window, to report what the kill caused.
  const events = new Map<string, number>();
  const firstPlan = new Promise<void>((resolve) => {
    nc!.subscribe(`${PREFIX}.reply.>`, {
      callback: (_e, m) => {
        const ev = decode(m.data) as { type: string; seg?: number; win?: number };
        const key = `${m.subject}:${ev.type}:${ev.seg ?? ""}:${ev.win ?? ""}`;
        events.set(key, (events.get(key) ?? 0) + 1);
        if (ev.type === "plan" && m.subject.includes("load")) resolve();
      },
    });
  });

  const run = async (id: string): Promise<Outcome> => {
    const started = Date.now();
    try {
      const result = await synthesize(nc!, request(id));
      return { id, result, elapsedMs: Date.now() - started };
    } catch (err) {
      const e = err instanceof GsvError ? err : undefined;
      return { id, code: e?.code ?? "NOT_CODED", message: (err as Error).message, elapsedMs: Date.now() - started };
    }
  };

  // Load: 10 requests, one every 100 ms; the leader of the GPT stream's node dies once work is flowing.
  const N = 10;
  const running: Promise<Outcome>[] = [];
  const launching = (async () => {
    for (let i = 0; i < N; i++) {
      running.push(run(`load${i}`));
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  await firstPlan;
  const leader = (await jsm.streams.info(WorkQueues.gpt.stream)).cluster?.leader;
  const victim = cluster.nodes.find((n) => n.name === leader) ?? cluster.nodes[0];
  await victim.kill("SIGKILL");
  t.notOk(victim.alive(), `${victim.name} (leader of ${WorkQueues.gpt.stream}) was SIGKILLed mid-run`);
  await launching;
  const outcomes = await Promise.all(running);

  t.equal(outcomes.length, N, "every request was accounted for");
  const completed = outcomes.filter((o) => o.result);
  const failed = outcomes.filter((o) => !o.result);
  for (const o of completed) {
    t.same(o.result!.tokens, baseline.tokens, `${o.id}: every segment's tokens arrived, same as the baseline`);
    t.equal(o.result!.pcm.length, baseline.pcm.length, `${o.id}: the audio is complete, no window lost or doubled`);
  }
  for (const o of failed) {
    t.ok(FAILOVER_CODES.includes(o.code!), `${o.id}: failed with a clear code (${o.code}: ${o.message})`);
    t.ok(o.elapsedMs <= DEADLINE_MS + 5000, `${o.id}: settled by its deadline (${o.elapsedMs} ms), not hung`);
  }
  let doubled = 0;
  for (const n of events.values()) if (n > 1) doubled++;
  t.comment(`under load with ${victim.name} killed: ${completed.length} completed, ${failed.length} failed (${failed.map((o) => o.code).join(", ") || "none"}); ${doubled} reply events were delivered more than once (redelivery) and were dropped by the client`);

  // The two surviving nodes keep the R3 streams available: fresh requests all complete.
  const after = await Promise.all(Array.from({ length: 3 }, (_, i) => run(`after${i}`)));
  for (const o of after) {
    t.ok(o.result, `${o.id}: completes on the surviving nodes${o.result ? "" : ` (${o.code}: ${o.message})`}`);
    if (o.result) t.equal(o.result.pcm.length, baseline.pcm.length, `${o.id}: complete audio`);
  }

  // Nothing is stranded: every work queue drains (completed work acked, failed work terminated).
  const until = Date.now() + 15_000;
  let pending = -1;
  while (Date.now() < until) {
    pending = 0;
    try {
      for (const stage of Stages) {
        const info = await jsm.consumers.info(WorkQueues[stage].stream, WorkQueues[stage].consumer);
        pending += info.num_pending + info.num_ack_pending;
      }
    } catch {
      pending = -1; // a consumer leader is still being elected
    }
    if (pending === 0) break;
    await new Promise((r) => setTimeout(r, 250));
  }
  t.equal(pending, 0, "every work queue drained");
});
