import {
  AckPolicy,
  connect,
  DeliverPolicy,
  DiscardPolicy,
  RetentionPolicy,
  StorageType,
  nanos,
  type JetStreamManager,
  type KV,
  type NatsConnection,
  type ObjectStore,
} from "nats";
import { Buckets, WorkQueues, type Stage } from "./subjects.js";

export interface NatsOptions {
  url: string;
  name: string;
}

export async function connectNats(opts: NatsOptions): Promise<NatsConnection> {
  return connect({
    servers: opts.url,
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

/** Create (or update) a stage's work-queue stream and its durable pull consumer. Idempotent. */
export async function ensureWorkQueue(jsm: JetStreamManager, stage: Stage, limits: QueueLimits = defaultQueueLimits): Promise<void> {
  const q = WorkQueues[stage];
  const streamCfg = {
    name: q.stream,
    subjects: [q.subject],
    retention: RetentionPolicy.Workqueue,
    storage: StorageType.Memory,
    discard: DiscardPolicy.New,
    max_msgs: limits.maxMsgs,
    max_msg_size: 4 * 1024 * 1024,
    duplicate_window: nanos(120_000),
  };
  try {
    await jsm.streams.info(q.stream);
    await jsm.streams.update(q.stream, streamCfg);
  } catch {
    await jsm.streams.add(streamCfg);
  }
  const consumerCfg = {
    durable_name: q.consumer,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: nanos(limits.ackWaitMs),
    max_deliver: limits.maxDeliver,
    max_ack_pending: -1,
  };
  try {
    await jsm.consumers.info(q.stream, q.consumer);
    await jsm.consumers.update(q.stream, q.consumer, { ack_wait: consumerCfg.ack_wait, max_deliver: consumerCfg.max_deliver });
  } catch {
    await jsm.consumers.add(q.stream, consumerCfg);
  }
}

export async function ensureAllQueues(nc: NatsConnection, limits: QueueLimits = defaultQueueLimits): Promise<void> {
  const jsm = await nc.jetstreamManager();
  for (const stage of Object.keys(WorkQueues) as Stage[]) await ensureWorkQueue(jsm, stage, limits);
}

export async function voicesBucket(nc: NatsConnection): Promise<KV> {
  return nc.jetstream().views.kv(Buckets.voices, { history: 1, storage: StorageType.File, maxBucketSize: 512 * 1024 * 1024 });
}

export async function refAudioStore(nc: NatsConnection): Promise<ObjectStore> {
  return nc.jetstream().views.os(Buckets.refAudio, { storage: StorageType.File });
}

/** Tokens so far of streamed segments: memory, one value per key, gone after 10 minutes. */
export async function tokensBucket(nc: NatsConnection): Promise<KV> {
  return nc.jetstream().views.kv(Buckets.tokens, { history: 1, storage: StorageType.Memory, ttl: 10 * 60_000, maxBucketSize: 256 * 1024 * 1024 });
}
