import type { KV } from "nats";
import { decodeAs, encode } from "./codec.js";
import { GsvError } from "./errors.js";
import { PreparedVoice } from "./schemas.js";

/** Prepared voices from the shared KV bucket, with a small in-process LRU in front of it. */
export class VoiceStore {
  #kv: KV;
  #lru = new Map<string, PreparedVoice>();
  #max: number;

  constructor(kv: KV, maxEntries = 64) {
    this.#kv = kv;
    this.#max = maxEntries;
  }

  async get(key: string): Promise<PreparedVoice | undefined> {
    const hit = this.#lru.get(key);
    if (hit) {
      this.#lru.delete(key);
      this.#lru.set(key, hit);
      return hit;
    }
    const entry = await this.#kv.get(key);
    if (!entry || entry.operation !== "PUT" || entry.value.length === 0) return undefined;
    const voice = decodeAs(PreparedVoice, entry.value);
    this.#remember(key, voice);
    return voice;
  }

  async require(key: string): Promise<PreparedVoice> {
    const v = await this.get(key);
    if (!v) throw new GsvError("NOT_FOUND", `voice ${key} is not prepared (was the voices bucket purged?)`);
    return v;
  }

  async put(key: string, voice: PreparedVoice): Promise<void> {
    await this.#kv.put(key, encode(voice));
    this.#remember(key, voice);
  }

  #remember(key: string, voice: PreparedVoice): void {
    this.#lru.set(key, voice);
    if (this.#lru.size > this.#max) this.#lru.delete(this.#lru.keys().next().value!);
  }
}
