/**
 * Deployment files: docker-compose (parsed, and `docker-compose config -q` when the binary is there: CI
 * installs it), the Kubernetes manifests in infra/k8s (every document parsed, a Deployment and a KEDA
 * ScaledObject per stage whose stream and consumer are shared/subjects.ts's, probes, GPU requests, the
 * NATS StatefulSet and its configuration accepted by `nats-server -t`), the NATS configurations, and the
 * stage probe against a real stage process.
 */
import t from "tap";
import { spawnSync, execFile } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { parse, parseAllDocuments } from "yaml";
import { fromRoot } from "../shared/paths.js";
import { ServiceNames, Stages, WorkQueues } from "../shared/subjects.js";
import { natsServerBinary, SERVICE_NAMES } from "../tools/launch.js";
import { ADMIN_USER, passwordVariable, servicePermissions } from "../tools/nats-config.js";
import { startServices, withNats } from "./helpers/stack.js";

type Obj = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any
const K8S = fromRoot("infra", "k8s");
const MODEL_STAGES = ["gpt-semantic", "sovits-decoder", "vocoder"];

function k8sDocs(): { file: string; doc: Obj }[] {
  const out: { file: string; doc: Obj }[] = [];
  for (const file of readdirSync(K8S).filter((f) => f.endsWith(".yaml") && f !== "kustomization.yaml")) {
    for (const d of parseAllDocuments(readFileSync(join(K8S, file), "utf8"))) {
      if (d.errors.length) throw new Error(`${file}: ${d.errors[0].message}`);
      const doc = d.toJS() as Obj | null;
      if (doc) out.push({ file, doc });
    }
  }
  return out;
}

const envOf = (c: Obj, name: string): Obj | undefined => (c.env as Obj[] | undefined)?.find((e) => e.name === name);

/** All users' passwords, as the NATS pods get them from the gsv-nats-passwords Secret. */
function passwordEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const u of [...Object.keys(servicePermissions()), ADMIN_USER]) env[passwordVariable(u)] = "test-password";
  return env;
}

function natsConfigValid(confFile: string, env: Record<string, string> = {}): { ok: boolean; out: string } {
  const r = spawnSync(natsServerBinary(), ["-t", "-c", confFile], { env: { ...process.env, ...env }, encoding: "utf8" });
  return { ok: r.status === 0, out: `${r.stdout}${r.stderr}`.trim() };
}

t.test("k8s - every document parses, is namespaced in gsv, and kustomization lists every file", async (t) => {
  const docs = k8sDocs();
  t.ok(docs.length >= 15, `${docs.length} documents`);
  for (const { file, doc } of docs) {
    t.ok(doc.apiVersion && doc.kind && doc.metadata?.name, `${file}: ${doc.kind}/${doc.metadata?.name} has apiVersion, kind, name`);
    if (doc.kind !== "Namespace") t.equal(doc.metadata.namespace, "gsv", `${file}: ${doc.kind}/${doc.metadata.name} in namespace gsv`);
  }
  const kust = parse(readFileSync(join(K8S, "kustomization.yaml"), "utf8")) as Obj;
  const files = readdirSync(K8S).filter((f) => f.endsWith(".yaml") && f !== "kustomization.yaml");
  t.same([...kust.resources].sort(), files.sort(), "kustomization.yaml lists every manifest");
  t.same(kust.configMapGenerator[0].files, ["nats-auth.conf"], "the NATS users come from the generated nats-auth.conf");
});

t.test("k8s - a Deployment per service with probes, resources, its own NATS user; GPUs for the model stages", async (t) => {
  const docs = k8sDocs().map((d) => d.doc);
  const deployments = new Map(docs.filter((d) => d.kind === "Deployment").map((d) => [d.metadata.name as string, d]));
  t.same([...deployments.keys()].sort(), [...SERVICE_NAMES].sort(), "one Deployment per service, named as the service");
  for (const name of SERVICE_NAMES) {
    const d = deployments.get(name)!;
    t.same(d.spec.selector.matchLabels, d.spec.template.metadata.labels, `${name}: the selector matches the pod labels`);
    const [c] = d.spec.template.spec.containers as Obj[];
    t.same(c.command, ["node", `dist/services/${name}/main.js`], `${name}: runs its service`);
    t.ok(existsSync(fromRoot("services", name, "main.ts")), `${name}: that service exists`);
    t.ok(c.resources?.requests?.cpu && c.resources?.requests?.memory, `${name}: cpu and memory requests`);
    t.equal(c.resources.requests["nvidia.com/gpu"], MODEL_STAGES.includes(name) ? "1" : undefined, `${name}: ${MODEL_STAGES.includes(name) ? "requests a GPU" : "no GPU"}`);
    t.equal(c.resources.limits?.["nvidia.com/gpu"], MODEL_STAGES.includes(name) ? "1" : undefined, `${name}: GPU limit equals the request`);
    t.ok(c.readinessProbe && c.livenessProbe, `${name}: readiness and liveness probes`);
    t.equal(envOf(c, "NATS_USER")?.value, name, `${name}: connects as its own NATS user`);
    t.same(envOf(c, "NATS_PASSWORD")?.valueFrom?.secretKeyRef, { name: "gsv-nats-passwords", key: passwordVariable(name) }, `${name}: its password from the secret, under the server's variable name`);
    t.equal(envOf(c, "GSV_REPLICA")?.valueFrom?.fieldRef?.fieldPath, "metadata.name", `${name}: replica named after the pod`);
    t.same(c.envFrom, [{ configMapRef: { name: "gsv-config" } }], `${name}: shared settings from gsv-config`);
    if (name === "gateway") {
      t.equal(c.readinessProbe.httpGet?.path, "/health", "gateway: ready per GET /health");
      t.equal(envOf(c, "GSV_API_KEY")?.valueFrom?.secretKeyRef?.optional, true, "gateway: API key from an optional secret");
    } else {
      for (const p of [c.startupProbe, c.readinessProbe, c.livenessProbe]) t.same(p?.exec?.command, ["node", "dist/tools/probe.js", name], `${name}: probed by tools/probe.ts`);
      const mount = (c.volumeMounts as Obj[]).find((m) => m.name === "models");
      t.ok(mount?.readOnly, `${name}: the model volume mounted read-only`);
      t.equal((d.spec.template.spec.volumes as Obj[]).find((v) => v.name === "models")?.persistentVolumeClaim?.claimName, "gsv-models", `${name}: from the gsv-models claim`);
    }
  }
  const services = docs.filter((d) => d.kind === "Service");
  const gw = services.find((s) => s.metadata.name === "gateway");
  t.same(gw?.spec.selector, { app: "gateway" }, "a Service for the gateway");
  t.equal(gw?.spec.ports[0].targetPort, "http");
  t.ok(docs.some((d) => d.kind === "PersistentVolumeClaim" && d.metadata.name === "gsv-models"), "the model volume claim");
  const job = docs.find((d) => d.kind === "Job");
  t.same(job?.spec.template.spec.containers[0].command, ["node", "dist/tools/cli.js", "provision"], "a Job provisions the streams");
  t.equal(envOf(job!.spec.template.spec.containers[0], "NATS_USER")?.value, ADMIN_USER, "as the admin user");
});

t.test("k8s - a KEDA ScaledObject per stage on its JetStream consumer's lag", async (t) => {
  const docs = k8sDocs().map((d) => d.doc);
  const scaled = docs.filter((d) => d.kind === "ScaledObject");
  const nats = docs.find((d) => d.kind === "Service" && d.metadata.name === "nats");
  t.equal(scaled.length, Stages.length, "one per stage");
  for (const stage of Stages) {
    const so = scaled.find((s) => s.spec.scaleTargetRef.name === ServiceNames[stage]);
    t.ok(so, `${ServiceNames[stage]} is scaled`);
    if (!so) continue;
    t.equal(so.apiVersion, "keda.sh/v1alpha1");
    t.ok(so.spec.minReplicaCount >= 1 && so.spec.maxReplicaCount > so.spec.minReplicaCount, `${ServiceNames[stage]}: ${so.spec.minReplicaCount}..${so.spec.maxReplicaCount} replicas`);
    const [trigger] = so.spec.triggers as Obj[];
    t.equal(trigger.type, "nats-jetstream");
    t.equal(trigger.metadata.stream, WorkQueues[stage].stream, `${ServiceNames[stage]}: stream ${WorkQueues[stage].stream}`);
    t.equal(trigger.metadata.consumer, WorkQueues[stage].consumer, `${ServiceNames[stage]}: consumer ${WorkQueues[stage].consumer}`);
    t.equal(trigger.metadata.account, "$G", "the default account (users, no accounts)");
    t.ok(Number(trigger.metadata.lagThreshold) > 0, "a lag threshold");
    t.equal(trigger.metadata.natsServerMonitoringEndpoint, `${nats!.metadata.name}.gsv.svc.cluster.local:${(nats!.spec.ports as Obj[]).find((p) => p.name === "monitor").port}`, "the NATS Service's monitoring port");
  }
});

t.test("k8s - a 3-node NATS StatefulSet with JetStream, and clients configured for 3 replicas", async (t) => {
  const docs = k8sDocs().map((d) => d.doc);
  const sts = docs.find((d) => d.kind === "StatefulSet" && d.metadata.name === "nats")!;
  t.equal(sts.spec.replicas, 3, "3 nodes");
  const headless = docs.find((d) => d.kind === "Service" && d.metadata.name === sts.spec.serviceName);
  t.equal(headless?.spec.clusterIP, "None", "a headless Service for the routes");
  const conf = String(docs.find((d) => d.kind === "ConfigMap" && d.metadata.name === "nats-config")!.data["nats.conf"]);
  const podDns = [0, 1, 2].map((i) => `nats-${i}.${sts.spec.serviceName}.gsv.svc.cluster.local`);
  for (const host of podDns) t.ok(conf.includes(`nats://${host}:6222`), `route to ${host}`);
  t.match(conf, /jetstream\s*\{/, "JetStream on");
  const cfg = docs.find((d) => d.kind === "ConfigMap" && d.metadata.name === "gsv-config")!.data as Record<string, string>;
  t.equal(cfg.GSV_STREAM_REPLICAS, "3", "streams with 3 replicas in production");
  t.same(cfg.NATS_URL.split(","), podDns.map((h) => `nats://${h}:4222`), "clients get every node");

  // The configuration nats-server would run in the pod: the include beside it, the pod's variables set.
  const dir = mkdtempSync(join(tmpdir(), "gsv-k8s-nats-"));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  mkdirSync(join(dir, "auth"));
  writeFileSync(join(dir, "nats.conf"), conf);
  writeFileSync(join(dir, "auth", "nats-auth.conf"), readFileSync(join(K8S, "nats-auth.conf")));
  const v = natsConfigValid(join(dir, "nats.conf"), { POD_NAME: "nats-0", ...passwordEnv() });
  t.ok(v.ok, `nats-server -t accepts the Kubernetes configuration: ${v.out}`);
  const noPw = natsConfigValid(join(dir, "nats.conf"), { POD_NAME: "nats-0" });
  t.notOk(noPw.ok, "and refuses it without the passwords (they are never in the files)");
});

t.test("NATS configurations - the cluster nodes and the secure server pass nats-server -t", async (t) => {
  for (let i = 1; i <= 3; i++) {
    const file = fromRoot("infra", "nats-cluster", `nats-${i}.conf`);
    const v = natsConfigValid(file);
    t.ok(v.ok, `nats-${i}.conf: ${v.out}`);
    const conf = readFileSync(file, "utf8");
    t.match(conf, new RegExp(`^server_name: nats-${i}$`, "m"), `nats-${i}: its server name`);
    for (let k = 1; k <= 3; k++) t.ok(conf.includes(`nats://nats-${k}:6222`), `nats-${i}: route to nats-${k}`);
  }
  t.ok(natsConfigValid(fromRoot("infra", "nats-server.secure.conf"), passwordEnv()).ok, "nats-server.secure.conf with the passwords set");
});

t.test("docker-compose - one service per stage, scalable (no container names, no host ports on stages)", async (t) => {
  const compose = parse(readFileSync(fromRoot("docker-compose.yml"), "utf8")) as Obj;
  const cluster = parse(readFileSync(fromRoot("docker-compose.cluster.yml"), "utf8")) as Obj;
  t.ok(compose.services.nats, "a NATS service");
  for (const name of SERVICE_NAMES) {
    const s = compose.services[name] as Obj;
    t.ok(s, `${name} is a service`);
    t.same(s.command, ["node", `dist/services/${name}/main.js`], `${name}: runs its service`);
    t.notOk(s.container_name, `${name}: no fixed container name`);
    if (name !== "gateway") {
      t.notOk(s.ports, `${name}: no host port, so --scale ${name}=N works`);
      t.same(s.healthcheck?.test, ["CMD", "node", "dist/tools/probe.js", name], `${name}: health from tools/probe.ts`);
    }
    t.equal(cluster.services[name]?.environment?.GSV_STREAM_REPLICAS, "3", `${name}: 3 replicas with the cluster override`);
    t.equal(String(cluster.services[name]?.environment?.NATS_URL).split(",").length, 3, `${name}: every node in NATS_URL`);
  }
  for (let i = 1; i <= 3; i++) t.ok((cluster.services[`nats-${i}`]?.volumes as string[]).some((v) => v.startsWith(`./infra/nats-cluster/nats-${i}.conf:`)), `nats-${i} runs infra/nats-cluster/nats-${i}.conf`);

  const bin = spawnSync("docker-compose", ["version"], { encoding: "utf8" });
  if (bin.error) {
    t.comment("docker-compose is not installed here: `docker-compose config -q` not run (CI installs it: .ci/run)");
    return;
  }
  for (const files of [["docker-compose.yml"], ["docker-compose.yml", "docker-compose.cluster.yml"]]) {
    const r = spawnSync("docker-compose", [...files.flatMap((f) => ["-f", f]), "config", "-q"], { cwd: fromRoot(), encoding: "utf8" });
    t.equal(r.status, 0, `docker-compose ${files.join(" + ")} is valid ${r.stderr}`);
  }
  const broken = mkdtempSync(join(tmpdir(), "gsv-compose-"));
  t.teardown(() => rmSync(broken, { recursive: true, force: true }));
  writeFileSync(join(broken, "docker-compose.yml"), "services:\n  a:\n    image: x\n    ports: 12\n");
  t.not(spawnSync("docker-compose", ["config", "-q"], { cwd: broken, encoding: "utf8" }).status, 0, "and it does refuse a broken file");
});

t.test("probe - passes for this replica of a running stage, fails for another replica or an absent stage", async (t) => {
  const env = await withNats();
  const [stage] = await startServices(env.server.url, ["text-frontend"], { GSV_REPLICA: "probe-me" });
  t.teardown(async () => {
    await stage.stop();
    await env.stop();
  });
  const run = async (service: string, extra: Record<string, string>) => {
    try {
      const r = await promisify(execFile)(process.execPath, [fromRoot("dist", "tools", "probe.js"), service], { env: { ...process.env, NATS_URL: env.server.url, GSV_PROBE_TIMEOUT_MS: "1000", ...extra } });
      return { code: 0, out: r.stdout + r.stderr };
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      return { code: e.code, out: e.stdout + e.stderr };
    }
  };
  const ok = await run("text-frontend", { GSV_REPLICA: "probe-me" });
  t.equal(ok.code, 0, `this replica answers: ${ok.out.trim()}`);
  const other = await run("text-frontend", { GSV_REPLICA: "someone-else" });
  t.equal(other.code, 1, "another replica's probe fails");
  t.match(other.out, /others did: probe-me/);
  const absent = await run("vocoder", { GSV_REPLICA: "probe-me" });
  t.equal(absent.code, 1, "no vocoder running: fails");
  t.match(absent.out, /no replica of vocoder answered/);
  const down = await run("text-frontend", { GSV_REPLICA: "probe-me", NATS_URL: "nats://127.0.0.1:1" });
  t.equal(down.code, 1, "NATS unreachable: fails");
});
