/**
 * The gateway's side of model sets (shared/model-sets.ts): which sets new requests run on, and the
 * switch that /set_gpt_weights and /set_sovits_weights make.
 *
 * The selection lives in a KV key (Buckets.modelSelection, key `current`) that every gateway watches, so
 * all gateways admit new requests with the same sets. A switch first asks the stages to load the new set
 * (one replica of each stage answers: the others load it on first use) and checks that it fits the other
 * half of the selection; only then is the key written. Requests carry their sets' names in every work
 * message, so those admitted before the switch finish on their old sets.
 */
import { readdir } from "node:fs/promises";
import { existsSync } from "node:fs";
import { join } from "node:path";
import type { KV, NatsConnection } from "nats";
import { decode, encode } from "../../shared/codec.js";
import { GsvError, isErrorCode } from "../../shared/errors.js";
import { log } from "../../shared/log.js";
import { MANIFEST_FILE } from "../../shared/manifest.js";
import { checkCompatible, ModelSelection, ModelSetName, ModelsLoadReply, resolveWeightsPath, type ModelSetInfo } from "../../shared/model-sets.js";
import { modelSelectionBucket } from "../../shared/nats.js";
import { ServiceNames, Subjects } from "../../shared/subjects.js";

const KEY = "current";
/** A stage loading a set reads and checks every graph file: allow it time. */
const LOAD_TIMEOUT_MS = 120_000;
/** JetStream's answer to a write whose expected last revision is not the key's (another writer came first). */
const WRONG_LAST_SEQUENCE = 10071;
const MAX_SWITCH_ATTEMPTS = 5;
/** A set named per request (OpenAI `model`) is loaded and checked once in this long, not per request. */
const REQUEST_SET_TTL_MS = 30_000;

export class ModelSelector {
  readonly #nc: NatsConnection;
  readonly #root: string;
  #kv: KV | undefined;
  #current: ModelSelection | undefined;
  #stopWatch: (() => void) | undefined;
  /** Switches on this gateway run one at a time. */
  #chain: Promise<unknown> = Promise.resolve();
  /** forRequest: sets loaded and checked lately (only successes; names of existing sets, so bounded). */
  readonly #checked = new Map<string, { sel: ModelSelection; at: number }>();

  constructor(nc: NatsConnection, modelsRoot: string) {
    this.#nc = nc;
    this.#root = modelsRoot;
  }

  /** Read the stored selection and follow its changes (a switch made through any gateway). */
  async start(): Promise<this> {
    const kv = (this.#kv = await modelSelectionBucket(this.#nc));
    let initialized!: () => void;
    const first = new Promise<void>((resolve) => (initialized = resolve));
    // the watch delivers the stored value (if any) first, then calls initializedFn
    const w = await kv.watch({ key: KEY, initializedFn: () => initialized() });
    this.#stopWatch = () => w.stop();
    void (async () => {
      for await (const e of w) {
        if (e.operation === "PUT") {
          const r = ModelSelection.safeParse(decode(e.value));
          if (r.success) this.#current = r.data;
          else log.warn("gateway: ignoring a malformed model selection in KV");
        } else this.#current = undefined;
      }
    })().catch((err) => log.warn(`gateway: the model selection watch ended: ${(err as Error).message}`));
    await first;
    return this;
  }

  stop(): void {
    this.#stopWatch?.();
  }

  /** The sets new requests run on; undefined: nothing was switched, every stage uses its default. */
  get current(): ModelSelection | undefined {
    return this.#current;
  }

  /** Ask one replica of a stage to load a set (absent: its default) and describe it. */
  async load(service: string, set?: string): Promise<ModelSetInfo> {
    let data: Uint8Array;
    try {
      data = (await this.#nc.request(Subjects.modelsLoad(service), encode(set ? { set } : {}), { timeout: LOAD_TIMEOUT_MS })).data;
    } catch (err) {
      throw new GsvError("STAGE_UNAVAILABLE", `no ${service} replica answered the model-set load: ${(err as Error).message}`);
    }
    const r = ModelsLoadReply.safeParse(decode(data));
    if (!r.success) throw new GsvError("INTERNAL", `${service} gave a malformed model-set answer`);
    if (!r.data.ok) throw new GsvError(isErrorCode(r.data.code) ? r.data.code : "INTERNAL", `${service}: ${r.data.message}`);
    return r.data;
  }

  /** Load a GPT set and a SoVITS set (with its vocoder) in the stages and check that they fit together. */
  async validate(gpt: string | undefined, sovits: string | undefined): Promise<ModelSelection> {
    const [g, s] = await Promise.all([this.load(ServiceNames.gpt, gpt), this.load(ServiceNames.sovits, sovits), this.load(ServiceNames.vocoder, sovits)]);
    checkCompatible(g, s);
    return { gpt: g.name, sovits: s.name };
  }

  /** /set_gpt_weights, /set_sovits_weights: make `weightsPath` the GPT or SoVITS set of new requests. */
  switchTo(which: "gpt" | "sovits", weightsPath: string): Promise<ModelSelection> {
    const run = async () => {
      const name = resolveWeightsPath(weightsPath, this.#root);
      const kv = this.#kv ?? (await modelSelectionBucket(this.#nc));
      // Compare and set on the stored selection: a switch of the other half made meanwhile through
      // another gateway is built upon (validated again with it), never overwritten.
      for (let attempt = 1; ; attempt++) {
        const entry = await kv.get(KEY);
        const stored = entry?.operation === "PUT" ? ModelSelection.safeParse(decode(entry.value)) : undefined;
        const cur = stored?.success ? stored.data : undefined;
        const sel = await this.validate(which === "gpt" ? name : cur?.gpt, which === "sovits" ? name : cur?.sovits);
        try {
          if (entry) await kv.update(KEY, encode(sel), entry.revision);
          else await kv.create(KEY, encode(sel));
        } catch (err) {
          const code = (err as { api_error?: { err_code?: number } }).api_error?.err_code;
          if (code === WRONG_LAST_SEQUENCE && attempt < MAX_SWITCH_ATTEMPTS) continue;
          if (code === WRONG_LAST_SEQUENCE) throw new GsvError("STAGE_UNAVAILABLE", "the model selection kept changing under this switch; try again");
          throw err;
        }
        this.#current = sel; // at once on this gateway; the watch brings it to the others
        log.info("gateway: model sets switched", { ...sel });
        // One replica of each stage has loaded the set; the others load it now rather than on their first request.
        for (const service of which === "gpt" ? [ServiceNames.gpt] : [ServiceNames.sovits, ServiceNames.vocoder])
          this.#nc.publish(Subjects.modelsPreload(service), encode({ set: name }));
        return sel;
      }
    };
    const p = this.#chain.then(run, run);
    this.#chain = p.catch(() => undefined);
    return p;
  }

  /** A set named per request (OpenAI `model`): both halves from that one set, loaded and checked. */
  async forRequest(name: string): Promise<ModelSelection> {
    if (!ModelSetName.safeParse(name).success) throw new GsvError("BAD_PARAMETER", `model: ${JSON.stringify(name)} is not a model set name`);
    // Asking three stages to load the set costs three NATS round trips; once checked, a set is trusted for
    // a while (a stage that unloaded it meanwhile loads it again on the request's first work message).
    const hit = this.#checked.get(name);
    if (hit && Date.now() - hit.at < REQUEST_SET_TTL_MS) return hit.sel;
    const sel = await this.validate(name, name);
    this.#checked.set(name, { sel, at: Date.now() });
    return sel;
  }

  /** Sets present under the models root (directories with a manifest.json), by name. */
  async available(): Promise<string[]> {
    const names = await readdir(this.#root).catch(() => [] as string[]);
    return names.filter((n) => ModelSetName.safeParse(n).success && existsSync(join(this.#root, n, MANIFEST_FILE))).sort();
  }
}
