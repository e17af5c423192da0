/**
 * Registered voices: a name for a reference recording and its transcript, usable as OpenAI's `voice`
 * and as api_v2's `ref_audio_path: "voice:<id>"`. The audio lives in the JetStream Object Store
 * `tts_ref_audio` under its sha256 (the name every stage already reads reference audio by); the
 * metadata is one JSON entry per voice in the KV bucket `tts_voice_registry`, keyed by the voice id.
 *
 * Any NATS client can register a voice without the gateway: put the WAV in the object store under its
 * sha256 hex digest, then put a `VoiceEntry` (JSON) under the id in the KV bucket. docs/api.md shows how.
 */
import { createHash } from "node:crypto";
import { StorageType, type KV, type NatsConnection, type ObjectStore } from "nats";
import { z } from "zod";
import { GsvError } from "./errors.js";
import { Buckets } from "./subjects.js";

export const VOICE_ID = /^[A-Za-z0-9_-]{1,64}$/;

export const VoiceEntry = z.object({
  id: z.string().regex(VOICE_ID, "id must be 1-64 characters of [A-Za-z0-9_-]"),
  name: z.string().max(200).default(""),
  audioSha: z.string().regex(/^[0-9a-f]{64}$/, "audioSha must be a sha256 hex digest"),
  promptText: z.string().min(1, "promptText is required (v3 has no reference-free mode)").max(1000),
  promptLang: z.string().min(1).max(16),
  seconds: z.number().nonnegative().optional(),
  sampleRate: z.number().int().positive().optional(),
  createdAt: z.string().optional(),
});
export type VoiceEntry = z.infer<typeof VoiceEntry>;

export async function voiceRegistryBucket(nc: NatsConnection): Promise<KV> {
  return nc.jetstream().views.kv(Buckets.voiceRegistry, { history: 1, storage: StorageType.File });
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

export class VoiceRegistry {
  readonly kv: KV;
  readonly audio: ObjectStore;

  constructor(kv: KV, audio: ObjectStore) {
    this.kv = kv;
    this.audio = audio;
  }

  /** The entry, or undefined if no voice has this id. A malformed entry (a NATS client's mistake) is BAD_REQUEST. */
  async get(id: string): Promise<VoiceEntry | undefined> {
    if (!VOICE_ID.test(id)) return undefined;
    const e = await this.kv.get(id);
    if (!e || e.operation !== "PUT" || e.value.length === 0) return undefined;
    let json: unknown;
    try {
      json = JSON.parse(new TextDecoder().decode(e.value));
    } catch {
      throw new GsvError("BAD_REQUEST", `the registry entry of voice ${id} is not JSON`);
    }
    const parsed = VoiceEntry.safeParse(json);
    if (!parsed.success) throw new GsvError("BAD_REQUEST", `the registry entry of voice ${id} is malformed: ${parsed.error.issues[0]?.message}`);
    return parsed.data;
  }

  async require(id: string): Promise<VoiceEntry> {
    const v = await this.get(id);
    if (!v) throw new GsvError("NOT_FOUND", `voice ${JSON.stringify(id)} is not registered (GET /voices lists the registered voices)`);
    return v;
  }

  async list(): Promise<VoiceEntry[]> {
    const out: VoiceEntry[] = [];
    const keys = await this.kv.keys();
    for await (const k of keys) {
      try {
        const v = await this.get(k);
        if (v) out.push(v);
      } catch {
        // a malformed entry is skipped in listings
      }
    }
    return out.sort((a, b) => a.id.localeCompare(b.id));
  }

  /** Store the audio (content-addressed) and create the entry; ALREADY_EXISTS if the id is taken. */
  async create(entry: VoiceEntry, wav: Uint8Array): Promise<VoiceEntry> {
    const v = VoiceEntry.parse(entry);
    if (sha256Hex(wav) !== v.audioSha) throw new GsvError("INTERNAL", "audioSha does not match the audio");
    await this.putAudio(v.audioSha, wav);
    try {
      await this.kv.create(v.id, new TextEncoder().encode(JSON.stringify(v)));
    } catch (err) {
      if (await this.get(v.id)) throw new GsvError("ALREADY_EXISTS", `voice ${JSON.stringify(v.id)} already exists (DELETE /voices/${v.id} first)`);
      throw err;
    }
    return v;
  }

  async putAudio(sha: string, bytes: Uint8Array): Promise<void> {
    const info = await this.audio.info(sha);
    if (!info) await this.audio.putBlob({ name: sha }, bytes);
  }

  /**
   * Remove the entry; the audio object goes too unless another registered voice uses the same
   * recording. Prepared voices cached by content hash stay (they are keyed by audio, not by id).
   */
  async delete(id: string): Promise<VoiceEntry> {
    const v = await this.require(id);
    await this.kv.delete(id);
    const others = (await this.list()).some((o) => o.audioSha === v.audioSha);
    if (!others) await this.audio.delete(v.audioSha).catch(() => undefined);
    return v;
  }
}
