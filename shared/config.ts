import { hostname } from "node:os";
import { fromRoot } from "./paths.js";

/** Service configuration from the environment; every knob has a default that works on one machine. */
export interface Config {
  natsUrl: string;
  /** The default model set (its directory name is the set's name). */
  modelDir: string;
  /** Where the other model sets live, one directory each (shared/model-sets.ts). */
  modelsRoot: string;
  /** Model sets a stage holds loaded at most (least recently used ones unloaded when idle). */
  maxModelSets: number;
  voicesDir: string;
  port: number;
  host: string;
  /** onnxruntime worker threads per service, and intra-op threads per session. */
  ortWorkers: number;
  ortThreads: number;
  /** Requests a replica works on at once. */
  concurrency: number;
  ackWaitMs: number;
  requestTimeoutMs: number;
  maxTextChars: number;
  replica: string;
}

export function intEnv(name: string, dflt: number): number {
  const v = process.env[name];
  if (v === undefined || v === "") return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${name} must be a non-negative integer, got ${JSON.stringify(v)}`);
  return n;
}

export function loadConfig(service: string): Config {
  return {
    natsUrl: process.env.NATS_URL ?? "nats://127.0.0.1:4222",
    modelDir: process.env.GSV_MODEL_DIR ?? fromRoot("models", "tiny"),
    modelsRoot: process.env.GSV_MODELS_ROOT || fromRoot("models"),
    maxModelSets: intEnv("GSV_MAX_MODEL_SETS", 2) || 1,
    voicesDir: process.env.GSV_VOICES_DIR ?? fromRoot("voices"),
    port: intEnv("PORT", 9880),
    host: process.env.HOST ?? "127.0.0.1",
    ortWorkers: intEnv("GSV_ORT_WORKERS", 1) || 1,
    ortThreads: intEnv("GSV_ORT_THREADS", 1) || 1,
    concurrency: intEnv("GSV_CONCURRENCY", 4) || 1,
    ackWaitMs: intEnv("GSV_ACK_WAIT_MS", 10_000) || 10_000,
    requestTimeoutMs: intEnv("GSV_REQUEST_TIMEOUT_MS", 120_000) || 120_000,
    maxTextChars: intEnv("GSV_MAX_TEXT_CHARS", 5000) || 5000,
    // The host name keeps replicas apart in containers, where every service is pid 1 (tools/probe.ts relies on it).
    replica: process.env.GSV_REPLICA ?? `${service}-${hostname()}-${process.pid}`,
  };
}
