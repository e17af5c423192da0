import { readFileSync } from "node:fs";
import {
  AckPolicy,
  connect,
  credsAuthenticator,
  DeliverPolicy,
  DiscardPolicy,
  RetentionPolicy,
  StorageType,
  nanos,
  type ConnectionOptions,
  type JetStreamClient,
  type JetStreamManager,
  type PubAck,
  type MsgHdrs,
  type KV,
  type NatsConnection,
  type ObjectStore,
} from "nats";
import { Buckets, WorkQueues, type Stage } from "./subjects.js";

export interface NatsOptions {
  url: string;
  name: string;
}

/** NATS_URL may list several servers, comma-separated (the nodes of a cluster): the client fails over between them. */
export function natsServers(url: string): string[] {
  const servers = url
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  if (servers.length === 0) throw new Error(`NATS_URL names no server: ${JSON.stringify(url)}`);
  return servers;
}

/**
 * Credentials from the environment, first match wins: NATS_CREDS (a .creds file: JWT + nkey seed),
 * NATS_TOKEN, or NATS_USER with NATS_PASSWORD (per-service users, see infra/nats-server.secure.conf).
 */
export function natsAuthFromEnv(env: NodeJS.ProcessEnv = process.env): Pick<ConnectionOptions, "authenticator" | "token" | "user" | "pass"> {
  if (env.NATS_CREDS) return { authenticator: credsAuthenticator(readFileSync(env.NATS_CREDS)) };
  if (env.NATS_TOKEN) return { token: env.NATS_TOKEN };
  if (env.NATS_USER) {
    if (env.NATS_PASSWORD === undefined) throw new Error("NATS_USER is set but NATS_PASSWORD is not");
    return { user: env.NATS_USER, pass: env.NATS_PASSWORD };
  }
  return {};
}

export async function connectNats(opts: NatsOptions): Promise<NatsConnection> {
  return connect({
    servers: natsServers(opts.url),
    ...natsAuthFromEnv(),
    name: opts.name,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 250,
    pingInterval: 10_000,
  });
}

export interface QueueLimits {
  /** How long a replica may hold a message without acking or signalling progress before redelivery. */
  ackWaitMs: number;
  /** Deliveries before a message is given up (a poison message must not loop forever). */
  maxDeliver: number;
  /** Messages a stream holds before publishers are refused (admission control). */
  maxMsgs: number;
}

export const defaultQueueLimits: QueueLimits = { ackWaitMs: 10_000, maxDeliver: 5, maxMsgs: 10_000 };

/** How streams, KV buckets and object stores are kept: replicas (1 on one server, 3 on a production cluster) and storage. */
export interface Durability {
  replicas: number;
  /** Work queues: memory is fastest; file survives a restart of every node. */
  queueStorage: StorageType;
  /** Voices KV and reference-audio object store: caches worth keeping, file by default. */
  bucketStorage: StorageType;
}

function storageEnv(env: NodeJS.ProcessEnv, name: string, dflt: StorageType): StorageType {
  const v = env[name];
  if (v === undefined || v === "") return dflt;
  if (v === "memory") return StorageType.Memory;
  if (v === "file") return StorageType.File;
  throw new Error(`${name} must be "memory" or "file", got ${JSON.stringify(v)}`);
}

/** GSV_STREAM_REPLICAS (1-5, default 1), GSV_STREAM_STORAGE (memory|file, default memory), GSV_BUCKET_STORAGE (memory|file, default file). */
export function durabilityFromEnv(env: NodeJS.ProcessEnv = process.env): Durability {
  const r = env.GSV_STREAM_REPLICAS;
  const replicas = r === undefined || r === "" ? 1 : Number(r);
  if (!Number.isInteger(replicas) || replicas < 1 || replicas > 5) throw new Error(`GSV_STREAM_REPLICAS must be an integer from 1 to 5, got ${JSON.stringify(r)}`);
  return {
    replicas,
    queueStorage: storageEnv(env, "GSV_STREAM_STORAGE", StorageType.Memory),
    bucketStorage: storageEnv(env, "GSV_BUCKET_STORAGE", StorageType.File),
  };
}

/**
 * JetStream API calls time out or find no responder while a cluster elects leaders (a node started or
 * died); retry those for up to `totalMs` with backoff instead of failing the service's start.
 */
export async function retryTransient<T>(fn: () => Promise<T>, totalMs = 30_000): Promise<T> {
  const until = Date.now() + totalMs;
  for (let wait = 200; ; wait = Math.min(wait * 2, 2000)) {
    try {
      return await fn();
    } catch (err) {
      const e = err as { code?: string; message?: string };
      const transient = e.code === "TIMEOUT" || e.code === "503" || /timeout|no responders|leader/i.test(e.message ?? "");
      if (!transient || Date.now() + wait > until) throw err;
      await new Promise((r) => setTimeout(r, wait));
    }
  }
}

/**
 * Publish one unit of work into a stage's queue, deduplicated by `msgID`. While a cluster elects a new
 * stream leader (a node died) JetStream answers 503 or nothing; such failures are retried until
 * `deadline` (a retried message cannot be stored twice: the stream drops a repeated msgID). A full
 * queue is not retried.
 */
export async function publishWork(js: JetStreamClient, subject: string, data: Uint8Array, msgID: string, deadline: number, headers?: MsgHdrs): Promise<PubAck> {
  for (let wait = 100; ; wait = Math.min(wait * 2, 1000)) {
    try {
      return await js.publish(subject, data, { msgID, headers, timeout: Math.max(500, Math.min(5000, deadline - Date.now())) });
    } catch (err) {
      const e = err as { code?: string; message?: string };
      const transient = e.code === "503" || e.code === "TIMEOUT" || /no responders|timeout/i.test(e.message ?? "");
      if (!transient || Date.now() + wait >= deadline) throw err;
      await new Promise((r) => setTimeout(r, wait));
    }
  }
}

function isNotFound(err: unknown): boolean {
  return /not found/i.test((err as Error)?.message ?? "");
}

/** A permissions violation (the secure configuration lets each service manage only its own streams). */
function isPermissionError(err: unknown): boolean {
  return /permissions violation/i.test((err as Error)?.message ?? "") || (err as { code?: string })?.code === "PERMISSIONS_VIOLATION";
}

/**
 * Create (or update) a stage's work-queue stream and its durable pull consumer. Idempotent.
 * Returns false when this connection's user may not manage the stream (secure configuration: each
 * service manages its own queue; another service's queue is left to that service).
 */
export async function ensureWorkQueue(jsm: JetStreamManager, stage: Stage, limits: QueueLimits = defaultQueueLimits, d: Durability = durabilityFromEnv()): Promise<boolean> {
  try {
    await retryTransient(() => ensureWorkQueueOrThrow(jsm, stage, limits, d));
    return true;
  } catch (err) {
    if (isPermissionError(err)) return false;
    throw err;
  }
}

async function ensureWorkQueueOrThrow(jsm: JetStreamManager, stage: Stage, limits: QueueLimits, d: Durability): Promise<void> {
  const q = WorkQueues[stage];
  const streamCfg = {
    name: q.stream,
    subjects: [q.subject],
    retention: RetentionPolicy.Workqueue,
    storage: d.queueStorage,
    num_replicas: d.replicas,
    discard: DiscardPolicy.New,
    max_msgs: limits.maxMsgs,
    max_msg_size: 4 * 1024 * 1024,
    duplicate_window: nanos(120_000),
  };
  let exists = false;
  let same = false;
  try {
    const info = await jsm.streams.info(q.stream);
    exists = true;
    const c = info.config;
    same =
      c.storage === streamCfg.storage &&
      c.num_replicas === streamCfg.num_replicas &&
      c.max_msgs === streamCfg.max_msgs &&
      c.max_msg_size === streamCfg.max_msg_size &&
      c.duplicate_window === streamCfg.duplicate_window &&
      c.discard === streamCfg.discard &&
      c.subjects.length === 1 &&
      c.subjects[0] === q.subject;
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
  // An unchanged stream is not updated: in a cluster every update is a proposal to the meta leader.
  if (!exists) await jsm.streams.add(streamCfg);
  else if (!same) await jsm.streams.update(q.stream, streamCfg);
  const consumerCfg = {
    durable_name: q.consumer,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: nanos(limits.ackWaitMs),
    max_deliver: limits.maxDeliver,
    max_ack_pending: -1,
  };
  let consumer: { ack_wait: number; max_deliver: number } | undefined;
  try {
    consumer = (await jsm.consumers.info(q.stream, q.consumer)).config as { ack_wait: number; max_deliver: number };
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
  if (!consumer) await jsm.consumers.add(q.stream, consumerCfg);
  else if (consumer.ack_wait !== consumerCfg.ack_wait || consumer.max_deliver !== consumerCfg.max_deliver)
    await jsm.consumers.update(q.stream, q.consumer, { ack_wait: consumerCfg.ack_wait, max_deliver: consumerCfg.max_deliver });
}

export async function ensureAllQueues(nc: NatsConnection, limits: QueueLimits = defaultQueueLimits): Promise<void> {
  const jsm = await nc.jetstreamManager();
  for (const stage of Object.keys(WorkQueues) as Stage[]) await ensureWorkQueue(jsm, stage, limits);
}

export async function voicesBucket(nc: NatsConnection, d: Durability = durabilityFromEnv()): Promise<KV> {
  return retryTransient(() => nc.jetstream().views.kv(Buckets.voices, { history: 1, storage: d.bucketStorage, replicas: d.replicas, maxBucketSize: 512 * 1024 * 1024 }));
}

export async function refAudioStore(nc: NatsConnection, d: Durability = durabilityFromEnv()): Promise<ObjectStore> {
  return retryTransient(() => nc.jetstream().views.os(Buckets.refAudio, { storage: d.bucketStorage, replicas: d.replicas }));
}

/** Tokens so far of streamed segments: memory, one value per key, gone after 10 minutes. */
export async function tokensBucket(nc: NatsConnection): Promise<KV> {
  return nc.jetstream().views.kv(Buckets.tokens, { history: 1, storage: StorageType.Memory, ttl: 10 * 60_000, maxBucketSize: 256 * 1024 * 1024 });
}

/** The model sets new requests run on (key `current`), written by /set_*_weights, watched by every gateway. */
export async function modelSelectionBucket(nc: NatsConnection): Promise<KV> {
  return retryTransient(() => nc.jetstream().views.kv(Buckets.modelSelection, { history: 1, storage: StorageType.File }));
}
