/**
 * Security: the per-service NATS users (infra/nats-server.secure.conf, generated from shared/subjects.ts)
 * and the gateway's API key. The whole pipeline runs with each service as its own user and no
 * permission violation; a service user cannot publish into another stage's queue or read the replies;
 * the gateway wants the key on every route but /health.
 */
import t from "tap";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import type { IncomingMessage } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, type NatsConnection } from "nats";
import { natsAuthFromEnv } from "../shared/nats.js";
import { fromRoot } from "../shared/paths.js";
import { PREFIX, ServiceNames, Stages, WorkQueues } from "../shared/subjects.js";
import { checkApiKey, presentedKey } from "../services/gateway/auth.js";
import { ADMIN_USER, passwordVariable, provision, renderAuthConf, renderSecureConf, servicePermissions } from "../tools/nats-config.js";
import { startNatsServer, startService, type NatsServer, type ServiceProcess } from "../tools/launch.js";
import { TEST_ENV } from "./helpers/stack.js";

const req = (headers: Record<string, string>) => ({ headers }) as unknown as IncomingMessage;

t.test("the committed secure configurations are what `gsv nats-config` generates", async (t) => {
  t.equal(readFileSync(fromRoot("infra", "nats-server.secure.conf"), "utf8"), renderSecureConf(), "infra/nats-server.secure.conf is up to date (regenerate: npx gsv nats-config -o infra/nats-server.secure.conf)");
  t.equal(readFileSync(fromRoot("infra", "k8s", "nats-auth.conf"), "utf8"), renderAuthConf(), "infra/k8s/nats-auth.conf is up to date (regenerate: npx gsv nats-config --auth-only -o infra/k8s/nats-auth.conf)");
});

t.test("each service may publish only into its own next queue", async (t) => {
  const perms = servicePermissions();
  t.same(Object.keys(perms).sort(), Object.values(ServiceNames).sort(), "one user per service");
  const workSubjects = Stages.map((s) => WorkQueues[s].subject);
  const expected: Record<string, string | undefined> = { gateway: WorkQueues.text.subject, "text-frontend": WorkQueues.gpt.subject, "gpt-semantic": WorkQueues.sovits.subject, "sovits-decoder": WorkQueues.vocoder.subject, vocoder: undefined };
  for (const [user, p] of Object.entries(perms)) {
    t.same(
      p.publish.filter((s) => workSubjects.includes(s)),
      expected[user] ? [expected[user]] : [],
      `${user} publishes work only to ${expected[user] ?? "no queue"}`,
    );
    t.notOk(p.publish.some((s) => s === ">" || s.endsWith(".*.>") || s === `${PREFIX}.>`), `${user}: no catch-all publish grant`);
    t.notOk(p.publish.some((s) => /STREAM\.DELETE|CONSUMER\.DELETE\.TTS_/.test(s)), `${user}: may not delete a work queue`);
    t.equal(p.subscribe.includes(`${PREFIX}.reply.>`), user === "gateway", `${user} ${user === "gateway" ? "reads" : "cannot read"} reply events`);
  }
  for (const stage of Stages) {
    const user = ServiceNames[stage];
    const { stream, consumer } = WorkQueues[stage];
    t.ok(perms[user].publish.includes(`$JS.API.CONSUMER.MSG.NEXT.${stream}.${consumer}`), `${user} pulls from its own queue`);
    for (const other of Stages.filter((s) => s !== stage))
      t.notOk(perms[user].publish.some((s) => s.includes(`.${WorkQueues[other].stream}.`) && s.includes("MSG.NEXT")), `${user} cannot pull from ${WorkQueues[other].stream}`);
  }
});

t.test("credentials come from the environment", async (t) => {
  t.same(natsAuthFromEnv({}), {}, "none: anonymous");
  t.same(natsAuthFromEnv({ NATS_USER: "vocoder", NATS_PASSWORD: "pw" }), { user: "vocoder", pass: "pw" });
  t.same(natsAuthFromEnv({ NATS_TOKEN: "tok", NATS_USER: "x", NATS_PASSWORD: "y" }), { token: "tok" }, "a token wins over a user");
  t.throws(() => natsAuthFromEnv({ NATS_USER: "vocoder" }), /NATS_PASSWORD/);
  const dir = mkdtempSync(join(tmpdir(), "gsv-creds-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, "x.creds"), "not a creds file");
  t.type(natsAuthFromEnv({ NATS_CREDS: join(dir, "x.creds") }).authenticator, "function", "a creds file becomes an authenticator");
  t.throws(() => natsAuthFromEnv({ NATS_CREDS: join(dir, "missing.creds") }), /ENOENT/);
});

t.test("the API-key check", async (t) => {
  t.doesNotThrow(() => checkApiKey(req({}), "/tts", undefined), "no key configured: open");
  t.doesNotThrow(() => checkApiKey(req({}), "/tts", ""), "an empty key is no key");
  t.doesNotThrow(() => checkApiKey(req({}), "/health", "k1"), "/health is public");
  t.throws(() => checkApiKey(req({}), "/tts", "k1"), { code: "UNAUTHORIZED", message: /needs an API key/ });
  t.throws(() => checkApiKey(req({ authorization: "Bearer k2" }), "/tts", "k1"), { code: "UNAUTHORIZED", message: /not valid/ });
  t.throws(() => checkApiKey(req({ authorization: "Basic azE6" }), "/tts", "k1"), { code: "UNAUTHORIZED" }, "another scheme is not a key");
  t.throws(() => checkApiKey(req({ "x-api-key": "k" }), "/tts", "k1"), { code: "UNAUTHORIZED" }, "a prefix of the key is refused");
  t.doesNotThrow(() => checkApiKey(req({ authorization: "Bearer k1" }), "/tts", "k1"));
  t.doesNotThrow(() => checkApiKey(req({ authorization: "bearer   k1 " }), "/nope", "k1"), "scheme case and spaces do not matter");
  t.doesNotThrow(() => checkApiKey(req({ "x-api-key": "k1" }), "/tts", "k1"));
  t.equal(presentedKey(req({ authorization: "Bearer a", "x-api-key": "b" })), "a", "Authorization first");
});

/** Wait for the first error a callback subscription reports (a permissions violation), or undefined. */
function subscriptionError(nc: NatsConnection, subject: string, ms: number): Promise<Error | undefined> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(undefined), ms);
    nc.subscribe(subject, {
      callback: (err) => {
        if (err) {
          clearTimeout(timer);
          resolve(err);
        }
      },
    });
  });
}

t.test("secure NATS - the pipeline runs with a user per service; a service cannot reach another's queue", async (t) => {
  const passwords: Record<string, string> = {};
  for (const user of [...Object.values(ServiceNames), ADMIN_USER]) passwords[passwordVariable(user)] = "p" + randomBytes(12).toString("hex"); // nats-server reads a value that starts like a number (e.g. "9e9f…") as a number
  const apiKey = randomBytes(16).toString("hex");
  let server: NatsServer | undefined;
  const procs: ServiceProcess[] = [];
  const conns: NatsConnection[] = [];
  t.teardown(async () => {
    await Promise.all(procs.map((p) => p.stop()));
    await Promise.all(conns.map((c) => c.close().catch(() => undefined)));
    await server?.stop();
  });
  server = await startNatsServer({ config: readFileSync(fromRoot("infra", "nats-server.secure.conf"), "utf8"), env: passwords });
  const as = (user: string) => ({ ...TEST_ENV, NATS_URL: server!.url, PORT: "0", NATS_USER: user, NATS_PASSWORD: passwords[passwordVariable(user)] });

  await t.rejects(connect({ servers: server.url }), { code: "AUTHORIZATION_VIOLATION" }, "anonymous clients are refused");
  await t.rejects(connect({ servers: server.url, user: "vocoder", pass: "wrong" }), { code: "AUTHORIZATION_VIOLATION" }, "a wrong password is refused");

  // The operator provisions the queues and buckets as admin; services then only check them.
  const admin = await connect({ servers: server.url, user: ADMIN_USER, pass: passwords[passwordVariable(ADMIN_USER)] });
  conns.push(admin);
  t.same((await provision(admin, Number(TEST_ENV.GSV_ACK_WAIT_MS))).queues, Stages.map((s) => WorkQueues[s].stream), "provisioned every queue as admin");
  procs.push(...(await Promise.all(Stages.map((s) => startService(ServiceNames[s], as(ServiceNames[s]))))));
  const gateway = await startService("gateway", { ...as("gateway"), GSV_API_KEY: apiKey });
  procs.push(gateway);
  const url = String(gateway.ready.url);

  const health = await fetch(`${url}/health`);
  t.equal(health.status, 200, "/health answers without a key");
  const h = (await health.json()) as { replicas: Record<string, number> };
  for (const s of Stages) t.equal(h.replicas[ServiceNames[s]], 1, `${ServiceNames[s]} answers status as its own user`);

  const body = JSON.stringify({ text: "Hello there. How are you?", text_lang: "en", prompt_lang: "en", sample_steps: 4, seed: 3 });
  const post = (headers: Record<string, string>) => fetch(`${url}/tts`, { method: "POST", body, headers: { "Content-Type": "application/json", ...headers } });
  const noKey = await post({});
  t.equal(noKey.status, 401, "no key: 401");
  t.equal(((await noKey.json()) as { code: string }).code, "UNAUTHORIZED");
  const badKey = await post({ Authorization: "Bearer nope" });
  t.equal(badKey.status, 401, "a wrong key: 401");
  t.equal(((await badKey.json()) as { code: string }).code, "UNAUTHORIZED");
  t.equal((await fetch(`${url}/nowhere`)).status, 401, "unknown routes need the key too");

  const ok = await post({ Authorization: `Bearer ${apiKey}` });
  t.equal(ok.status, 200, `the pipeline answers with the key (${ok.status === 200 ? "audio" : await ok.clone().text()})`);
  const wav = new Uint8Array(await ok.arrayBuffer());
  t.equal(Buffer.from(wav.subarray(0, 4)).toString("latin1"), "RIFF", "a WAV");
  t.ok(wav.length > 44 + 1000, `with audio (${wav.length} bytes)`);
  const ok2 = await fetch(`${url}/tts?text=${encodeURIComponent("Good morning.")}&text_lang=en&prompt_lang=en&sample_steps=4`, { headers: { "X-API-Key": apiKey } });
  t.equal(ok2.status, 200, "X-API-Key works too");
  await ok2.arrayBuffer();
  // Switching model sets: the gateway asks the stages to load the set and writes the selection KV.
  for (const which of ["gpt", "sovits"]) {
    const sw = await fetch(`${url}/set_${which}_weights?weights_path=tiny`, { headers: { "X-API-Key": apiKey } });
    t.equal(sw.status, 200, `/set_${which}_weights as the gateway's user (${sw.status === 200 ? "ok" : await sw.clone().text()})`);
  }
  const ok3 = await post({ Authorization: `Bearer ${apiKey}` });
  t.equal(ok3.status, 200, "requests carry the selection through every stage");
  await ok3.arrayBuffer();
  const violations = server.log().split("\n").filter((l) => /Violation/i.test(l)).map((l) => l.replace(/^.*?([A-Z][a-z]+) Violation - User "([^"]*)", Subject "([^"]*)".*$/, "$1 $2 $3"));
  t.same(violations, [], "the pipeline ran without a single permissions violation");

  // A service user trying to reach beyond its own subjects.
  const jsm = await admin.jetstreamManager();
  const lastSeq = async (stage: (typeof Stages)[number]) => (await jsm.streams.info(WorkQueues[stage].stream)).state.last_seq;
  const before = { sovits: await lastSeq("sovits"), vocoder: await lastSeq("vocoder") };

  const tf = await connect({ servers: server.url, user: "text-frontend", pass: passwords[passwordVariable("text-frontend")] });
  conns.push(tf);
  await t.rejects(tf.jetstream().publish(WorkQueues.vocoder.subject, new Uint8Array([1])), { code: "PERMISSIONS_VIOLATION" }, "text-frontend cannot queue work for the vocoder");
  const statusErr = (async () => {
    for await (const s of tf.status()) if (s.type === "error" && String(s.data).includes("PERMISSIONS_VIOLATION")) return true;
    return false;
  })();
  tf.publish(WorkQueues.sovits.subject, new Uint8Array([1]));
  t.ok(await Promise.race([statusErr, new Promise((r) => setTimeout(() => r(false), 3000))]), "a plain publish into sovits-decoder's queue is a permissions violation");
  const subErr = await subscriptionError(tf, `${PREFIX}.reply.>`, 3000);
  t.match(subErr?.message ?? "", /permissions violation/i, "text-frontend cannot listen to reply events");
  await t.rejects(tf.request(`$JS.API.CONSUMER.MSG.NEXT.${WorkQueues.vocoder.stream}.${WorkQueues.vocoder.consumer}`, new Uint8Array(), { timeout: 2000 }), { code: "PERMISSIONS_VIOLATION" }, "text-frontend cannot pull vocoder work");
  await t.rejects(tf.request(`$JS.API.STREAM.DELETE.${WorkQueues.text.stream}`, new Uint8Array(), { timeout: 2000 }), { code: "PERMISSIONS_VIOLATION" }, "text-frontend cannot delete even its own queue");

  const voc = await connect({ servers: server.url, user: "vocoder", pass: passwords[passwordVariable("vocoder")] });
  conns.push(voc);
  await t.rejects(voc.jetstream().publish(WorkQueues.text.subject, new Uint8Array([1])), { code: "PERMISSIONS_VIOLATION" }, "the vocoder cannot inject requests");
  t.same({ sovits: await lastSeq("sovits"), vocoder: await lastSeq("vocoder") }, before, "nothing reached the other stages' queues");
  t.match(server.log(), /Violation/i, "the server logged the violations");
});
