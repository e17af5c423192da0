/**
 * The secure nats-server configuration, derived from shared/subjects.ts so it cannot drift from the
 * code: one user per service, each allowed to publish and subscribe only on its own subjects.
 *
 *   gsv nats-config                 print the whole single-server configuration (infra/nats-server.secure.conf)
 *   gsv nats-config --auth-only     print only the authorization block (infra/k8s/nats-auth.conf; Kubernetes
 *                                   NATS configuration includes it)
 *   gsv nats-config --out FILE      write instead of print
 *   gsv provision                   create the work queues, the voices bucket and the object store as the
 *                                   connecting user (NATS_URL, NATS_USER=admin ...), before the services start
 *
 * Passwords are not in the file: each is a nats-server variable ($GSV_NATS_PASSWORD_<USER>) that the
 * server reads from its environment. test/security.test.ts checks the committed files are what this
 * prints, runs the whole pipeline under them, and checks that a service cannot reach another's queue.
 */
import { readFileSync, writeFileSync } from "node:fs";
import { parseArgs } from "node:util";
import type { NatsConnection } from "nats";
import { loadConfig } from "../shared/config.js";
import { connectNats, defaultQueueLimits, durabilityFromEnv, ensureWorkQueue, refAudioStore, modelSelectionBucket, tokensBucket, voicesBucket } from "../shared/nats.js";
import { fromRoot } from "../shared/paths.js";
import { voiceRegistryBucket } from "../shared/voice-registry.js";
import { Buckets, PREFIX, ServiceNames, Stages, Subjects, WorkQueues, type Stage } from "../shared/subjects.js";

export type ServiceUser = (typeof ServiceNames)[Stage | "gateway"];

export interface Permissions {
  publish: string[];
  subscribe: string[];
}

/** The user every operator tool (nats CLI, `gsv` against a secured server, provisioning) connects as. */
export const ADMIN_USER = "admin";

/** The environment variable nats-server reads a user's password from (and the service's NATS_PASSWORD). */
export function passwordVariable(user: string): string {
  return `GSV_NATS_PASSWORD_${user.toUpperCase().replace(/[^A-Z0-9]/g, "_")}`;
}

const kvStream = `KV_${Buckets.voices}`;
const osStream = `OBJ_${Buckets.refAudio}`;

/** Create, inspect and update one stream (never delete or purge it). */
function manageStream(stream: string): string[] {
  return [`$JS.API.STREAM.INFO.${stream}`, `$JS.API.STREAM.CREATE.${stream}`, `$JS.API.STREAM.UPDATE.${stream}`];
}

/** Consume a stage's work queue: the durable pull consumer's next-message requests and its acks. */
function consumeQueue(stage: Stage): string[] {
  const { stream, consumer } = WorkQueues[stage];
  return [
    ...manageStream(stream),
    `$JS.API.CONSUMER.INFO.${stream}.${consumer}`,
    `$JS.API.CONSUMER.CREATE.${stream}.${consumer}`,
    `$JS.API.CONSUMER.CREATE.${stream}.${consumer}.>`,
    `$JS.API.CONSUMER.DURABLE.CREATE.${stream}.${consumer}`,
    `$JS.API.CONSUMER.MSG.NEXT.${stream}.${consumer}`,
    // ack, nak, term and in-progress (heartbeat) all go to the delivered message's ack subject
    `$JS.ACK.${stream}.${consumer}.>`,
  ];
}

/** Read the voices KV bucket (get by key); `write` adds puts. Creating the bucket is allowed: its config is fixed. */
function voicesKv(write: boolean): string[] {
  return [...manageStream(kvStream), `$JS.API.DIRECT.GET.${kvStream}.>`, `$JS.API.STREAM.MSG.GET.${kvStream}`, ...(write ? [`$KV.${Buckets.voices}.>`] : [])];
}

/** Read a stream's messages with an ordered consumer (KV key listings and watches, object chunks). */
function orderedReads(stream: string): string[] {
  return [`$JS.API.CONSUMER.CREATE.${stream}`, `$JS.API.CONSUMER.CREATE.${stream}.>`, `$JS.API.CONSUMER.DELETE.${stream}.>`, `$JS.FC.${stream}.>`];
}

/** A KV bucket read by key and by ordered consumer (listing keys, watching a key); `write` adds puts and deletes. */
function watchedKv(bucket: string, write: boolean): string[] {
  const stream = `KV_${bucket}`;
  return [...manageStream(stream), `$JS.API.DIRECT.GET.${stream}.>`, `$JS.API.STREAM.MSG.GET.${stream}`, ...orderedReads(stream), ...(write ? [`$KV.${bucket}.>`] : [])];
}

/** The voice registry (KV): the gateway lists, reads, registers and deletes voices. */
const registryKv = () => watchedKv(Buckets.voiceRegistry, true);

/** Streamed segments' tokens so far (KV): gpt-semantic writes, sovits-decoder reads and watches. */
const tokensKv = (write: boolean) => watchedKv(Buckets.tokens, write);

/** Read the reference-audio object store (meta lookup, ordered consumer over the chunks); `write` adds puts. */
function refAudioOs(write: boolean): string[] {
  return [
    ...manageStream(osStream),
    `$JS.API.DIRECT.GET.${osStream}.>`,
    `$JS.API.STREAM.MSG.GET.${osStream}`,
    ...orderedReads(osStream),
    // the ordered consumer that reads an object's chunks looks its stream up by subject
    "$JS.API.STREAM.NAMES",
    ...(write ? [`$O.${Buckets.refAudio}.>`, `$JS.API.STREAM.PURGE.${osStream}`] : []),
  ];
}

/** A stage's own subjects: its queue, its forward queue, reply events, cancellation, status, stats, discovery. */
function stagePermissions(stage: Stage, forward: Stage | undefined): Permissions {
  const name = ServiceNames[stage];
  return {
    // status: the stage's probe (tools/probe.ts) runs with the stage's credentials and asks its own status
    publish: [...consumeQueue(stage), ...(forward ? [WorkQueues[forward].subject] : []), `${PREFIX}.reply.>`, `${PREFIX}.status.${name}`],
    subscribe: [Subjects.cancelAll, `${PREFIX}.status.${name}`, `${PREFIX}.stats.${name}`],
  };
}

function merge(...ps: Partial<Permissions>[]): Permissions {
  const publish = new Set<string>();
  const subscribe = new Set<string>();
  for (const p of ps) {
    for (const s of p.publish ?? []) publish.add(s);
    for (const s of p.subscribe ?? []) subscribe.add(s);
  }
  return { publish: [...publish], subscribe: [...subscribe] };
}

/**
 * Every service user's permissions. Common to all: the JetStream API's account check, reading the work
 * queues' configuration, replies to its
 * own requests (_INBOX), the services API's discovery subjects; responses to requests it receives
 * (services endpoints, status) are allowed by allow_responses, not by a publish grant.
 */
export function servicePermissions(): Record<ServiceUser, Permissions> {
  // Reading every work queue's stream and consumer info is allowed (read-only): each service checks all
  // queues at start (ensureAllQueues) and so finds them in place without asking to change them.
  const inspectQueues = Stages.flatMap((s) => [`$JS.API.STREAM.INFO.${WorkQueues[s].stream}`, `$JS.API.CONSUMER.INFO.${WorkQueues[s].stream}.${WorkQueues[s].consumer}`]);
  const common: Permissions = { publish: ["$JS.API.INFO", ...inspectQueues], subscribe: ["_INBOX.>", "$SRV.>"] };
  const next: Record<Stage, Stage | undefined> = { text: "gpt", gpt: "sovits", sovits: "vocoder", vocoder: undefined };
  if (Stages.some((s, i) => next[s] !== Stages[i + 1])) throw new Error("the stage order changed: update next in tools/nats-config.ts");
  return {
    gateway: merge(common, {
      publish: [
        ...manageStream(WorkQueues.text.stream),
        WorkQueues.text.subject,
        Subjects.cancelAll,
        `${PREFIX}.status.*`,
        ...voicesKv(false),
        ...refAudioOs(true),
        ...registryKv(),
        // model sets: ask the stages to load one, and read, watch and write the selection
        `${PREFIX}.models.load.*`,
        `${PREFIX}.models.preload.*`,
        ...watchedKv(Buckets.modelSelection, true),
      ],
      // its own status, services-API stats and recent-requests ring (gsv top, gsv profile)
      subscribe: [`${PREFIX}.reply.>`, Subjects.status(ServiceNames.gateway), `${PREFIX}.stats.${ServiceNames.gateway}`, Subjects.recentRequests(ServiceNames.gateway)],
    }),
    "text-frontend": merge(common, stagePermissions("text", next.text), { publish: [Subjects.voicePrepare] }),
    "gpt-semantic": merge(common, stagePermissions("gpt", next.gpt), { publish: [...voicesKv(false), ...tokensKv(true)], subscribe: [Subjects.modelsLoad(ServiceNames.gpt), Subjects.modelsPreload(ServiceNames.gpt)] }),
    "sovits-decoder": merge(common, stagePermissions("sovits", next.sovits), { publish: [...voicesKv(true), ...refAudioOs(false), ...tokensKv(false)], subscribe: [Subjects.voicePrepare, Subjects.modelsLoad(ServiceNames.sovits), Subjects.modelsPreload(ServiceNames.sovits)] }),
    vocoder: merge(common, stagePermissions("vocoder", next.vocoder), { subscribe: [Subjects.vocode("*"), Subjects.modelsLoad(ServiceNames.vocoder), Subjects.modelsPreload(ServiceNames.vocoder)] }),
  };
}

function list(subjects: string[], indent: string): string {
  return `[\n${subjects.map((s) => `${indent}  ${JSON.stringify(s)}`).join("\n")}\n${indent}]`;
}

/** The authorization block: the service users, and an admin user with every permission. */
export function renderAuthConf(): string {
  const users = Object.entries(servicePermissions()).map(
    ([user, p]) => `    {
      user: ${JSON.stringify(user)}
      password: $${passwordVariable(user)}
      permissions: {
        publish: { allow: ${list(p.publish, "        ")} }
        subscribe: { allow: ${list(p.subscribe, "        ")} }
        # answer the requests it receives (services API, status), once each
        allow_responses: true
      }
    }`,
  );
  return `# Generated by \`gsv nats-config --auth-only\` from shared/subjects.ts: do not edit by hand.
# One user per service; each may publish and subscribe only on its own subjects. Passwords come from the
# server's environment (${passwordVariable("gateway")}, ...); a service connects with NATS_USER/NATS_PASSWORD.
authorization {
  users: [
    {
      user: ${JSON.stringify(ADMIN_USER)}
      password: $${passwordVariable(ADMIN_USER)}
    }
${users.join("\n")}
  ]
}
`;
}

/** The single-server configuration (infra/nats-server.conf) with the authorization block. */
export function renderSecureConf(): string {
  const base = readFileSync(fromRoot("infra", "nats-server.conf"), "utf8").replace(/^#.*\n/gm, "");
  return `# Generated by \`gsv nats-config\`: infra/nats-server.conf with per-service users. Do not edit by hand.
# Start it with every ${passwordVariable("*")} variable set (${[...Object.keys(servicePermissions()), ADMIN_USER].map(passwordVariable).join(", ")}):
#   nats-server -c infra/nats-server.secure.conf
${base.trim()}

${renderAuthConf()}`;
}

export async function natsConfigCli(argv: string[]): Promise<void> {
  const { values } = parseArgs({ args: argv, options: { "auth-only": { type: "boolean" }, out: { type: "string", short: "o" } } });
  const text = values["auth-only"] ? renderAuthConf() : renderSecureConf();
  if (values.out) writeFileSync(values.out, text);
  else process.stdout.write(text);
}

/**
 * Create every work queue and bucket with the configured durability (GSV_STREAM_REPLICAS, storage,
 * GSV_ACK_WAIT_MS). With the secure configuration services may only manage their own queue, so an
 * operator runs this once as the admin user before the services start (a Kubernetes Job does).
 */
export async function provision(nc: NatsConnection, ackWaitMs = loadConfig("provision").ackWaitMs): Promise<{ queues: string[]; buckets: string[] }> {
  const jsm = await nc.jetstreamManager();
  const d = durabilityFromEnv();
  const queues: string[] = [];
  for (const stage of Stages) {
    if (!(await ensureWorkQueue(jsm, stage, { ...defaultQueueLimits, ackWaitMs }, d))) throw new Error(`this user may not manage ${WorkQueues[stage].stream}: provision as ${ADMIN_USER}`);
    queues.push(WorkQueues[stage].stream);
  }
  await voicesBucket(nc, d);
  await refAudioStore(nc, d);
  await voiceRegistryBucket(nc);
  await tokensBucket(nc);
  await modelSelectionBucket(nc);
  return { queues, buckets: [Buckets.voices, Buckets.refAudio, Buckets.voiceRegistry, Buckets.tokens, Buckets.modelSelection] };
}

export async function provisionCli(): Promise<void> {
  const nc = await connectNats({ url: process.env.NATS_URL ?? "nats://127.0.0.1:4222", name: "gsv-provision" });
  try {
    console.log(JSON.stringify({ provisioned: await provision(nc), replicas: durabilityFromEnv().replicas }));
  } finally {
    await nc.close();
  }
}
