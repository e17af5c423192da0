/**
 * Several model sets at run time (docs/decisions.md, "Model sets switch per request"):
 *
 * - a set is a directory with manifest.json under the models root (GSV_MODELS_ROOT, default models/),
 *   named by its directory name; GSV_MODEL_DIR is the default set (named by its own directory name);
 * - work messages name the sets they run on (`models: { gpt, sovits }`), absent = the stage's default;
 * - each stage holds the sets it serves in a ModelSetCache: loaded on first use or on a load request,
 *   at most GSV_MAX_MODEL_SETS at once, the least recently used one unloaded only when no job uses it.
 */
import { existsSync } from "node:fs";
import { basename, isAbsolute, join, relative, resolve, sep } from "node:path";
import { z } from "zod";
import { GsvError } from "./errors.js";
import { MANIFEST_FILE, ManifestError, type Manifest } from "./manifest.js";

/** A set's name: a plain directory name (no separators, no leading dot), short enough for a header. */
export const ModelSetName = z.string().regex(/^[A-Za-z0-9_][A-Za-z0-9._-]{0,63}$/, "a model set name is a plain directory name ([A-Za-z0-9._-], no leading dot)");

/** The sets a request runs on: the GPT set drives gpt-semantic, the SoVITS set sovits-decoder (VQ, voice prep, CFM) and the vocoder. */
export const ModelSelection = z.object({ gpt: ModelSetName, sovits: ModelSetName });
export type ModelSelection = z.infer<typeof ModelSelection>;

/** A selection given by a program (GsvClient's option): BAD_PARAMETER unless both names are set names. */
export function parseSelection(v: unknown): ModelSelection {
  const r = ModelSelection.safeParse(v);
  if (!r.success) throw new GsvError("BAD_PARAMETER", `models: ${r.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; ")}`);
  return r.data;
}

/** Request on Subjects.modelsLoad(service): load this set (absent: the default) and describe it. */
export const ModelsLoadRequest = z.object({ set: ModelSetName.optional() });

/** What the sets must agree on to run together: the stage's answer to a load request. */
export const ModelSetInfo = z.object({
  name: z.string(),
  /** sha256 of the manifest's graph entries: two names of the same files give the same sha. */
  sha: z.string(),
  vocab: z.number().int(),
  eos: z.number().int(),
  codebook: z.number().int(),
  phoneVocab: z.number().int(),
  bertDim: z.number().int(),
  /** The names this replica holds loaded now. */
  loaded: z.array(z.string()),
});
export type ModelSetInfo = z.infer<typeof ModelSetInfo>;

export const ModelsLoadReply = z.union([
  ModelSetInfo.extend({ ok: z.literal(true) }),
  z.object({ ok: z.literal(false), code: z.string(), message: z.string() }),
]);

/** The figures of a manifest that a load reply carries. */
export function setInfo(name: string, sha: string, m: Manifest, loaded: string[]): ModelSetInfo {
  const t = m.dims.t2s;
  return { name, sha, vocab: t.vocab, eos: t.eos, codebook: m.dims.vq.codebook, phoneVocab: t.phoneVocab, bertDim: t.bertDim, loaded };
}

/**
 * Throws INCOMPATIBLE_MODEL_SETS unless a GPT set and a SoVITS set can run together: the GPT's semantic
 * vocabulary is the SoVITS codebook plus EOS (prompt tokens come from the SoVITS set's VQ and feed the
 * GPT; the GPT's tokens feed the SoVITS decoder), and both read the same phone table.
 */
export function checkCompatible(gpt: ModelSetInfo, sovits: ModelSetInfo): void {
  const why: string[] = [];
  if (gpt.vocab !== sovits.codebook + 1 || gpt.eos !== sovits.codebook) {
    why.push(`the GPT's semantic vocabulary is ${gpt.vocab} (EOS ${gpt.eos}), the SoVITS codebook has ${sovits.codebook} entries (needs vocab ${sovits.codebook + 1}, EOS ${sovits.codebook})`);
  }
  if (gpt.phoneVocab !== sovits.phoneVocab) why.push(`phone tables differ (${gpt.phoneVocab} vs ${sovits.phoneVocab})`);
  if (why.length) throw new GsvError("INCOMPATIBLE_MODEL_SETS", `GPT set ${gpt.name} and SoVITS set ${sovits.name} do not fit together: ${why.join("; ")}`);
}

/** The name of the default set (GSV_MODEL_DIR's directory name). */
export function defaultSetName(modelDir: string): string {
  return basename(resolve(modelDir));
}

/**
 * An api_v2 `weights_path` as a set name. Accepted: a set name; a path, relative to the models root or
 * absolute, to a set's directory, its manifest.json or any file inside it; "models/<set>/…" (the root's
 * own directory name first, as paths from the repository are written). The path is resolved without the
 * file system (no links followed) and must stay inside the models root: anything else is BAD_PARAMETER.
 */
export function resolveWeightsPath(spec: string, modelsRoot: string): string {
  const shown = JSON.stringify(spec);
  const s = spec.trim().replaceAll("\\", "/");
  if (!s || s.includes("\0")) throw new GsvError("BAD_PARAMETER", `weights_path ${shown} is not a model set`);
  const root = resolve(modelsRoot);
  const rootName = basename(root);
  const parts = s.split("/").filter((p) => p !== "" && p !== ".");
  const rel = !isAbsolute(s) && parts.length > 1 && parts[0] === rootName && !existsSync(join(root, rootName)) ? parts.slice(1).join("/") : s;
  const abs = isAbsolute(rel) ? resolve(rel) : resolve(root, rel);
  const inside = relative(root, abs);
  if (inside === "" || inside === ".." || inside.startsWith(`..${sep}`) || isAbsolute(inside)) {
    throw new GsvError("BAD_PARAMETER", `weights_path ${shown} is outside the models root; name a model set (a directory under it)`);
  }
  const name = inside.split(sep)[0];
  if (!ModelSetName.safeParse(name).success) throw new GsvError("UNKNOWN_MODEL_SET", `weights_path ${shown}: ${JSON.stringify(name)} is not a model set name`);
  return name;
}

/** The directory of a named set: the default set's own directory, else <root>/<name> with a manifest.json. */
export function setDir(name: string, o: { modelDir: string; modelsRoot: string }): string {
  if (name === defaultSetName(o.modelDir)) return o.modelDir;
  if (!ModelSetName.safeParse(name).success) throw new GsvError("UNKNOWN_MODEL_SET", `${JSON.stringify(name)} is not a model set name`);
  const dir = join(resolve(o.modelsRoot), name);
  // The message names no server path: it goes back to HTTP clients.
  if (!existsSync(join(dir, MANIFEST_FILE))) throw new GsvError("UNKNOWN_MODEL_SET", `no model set ${JSON.stringify(name)} in the models root (no ${name}/${MANIFEST_FILE})`);
  return dir;
}

/**
 * A stage's model-set hooks for StageRunner (`modelSets`): load requests answered from the stage's cache,
 * the names it holds, its load counts. `describe` gives a loaded set's manifest and graph sha.
 */
export function stageModelSets<T>(sets: ModelSetCache<T>, describe: (set: T) => { sha: string; manifest: Manifest }): {
  load(name?: string): Promise<ModelSetInfo>;
  names(): string[];
  counts: Record<string, number>;
} {
  return {
    async load(name) {
      const lease = await sets.acquire(name);
      lease.release();
      const d = describe(lease.value);
      return setInfo(lease.name, d.sha, d.manifest, sets.names);
    },
    names: () => sets.names,
    counts: sets.counts,
  };
}

/** A set in use by one job: `release` when the job is done with it (the set may be unloaded after). */
export interface Lease<T> {
  name: string;
  value: T;
  release(): void;
}

interface Entry<T> {
  name: string;
  value: Promise<T>;
  loaded: boolean;
  users: number;
  lastUsed: number;
}

export interface ModelSetCacheOptions<T> {
  /** Sets held at most; more only while every one of them is in use. */
  max: number;
  modelDir: string;
  modelsRoot: string;
  load(name: string, dir: string): Promise<T>;
  unload(value: T): Promise<void>;
}

/** The sets a stage holds: lazily loaded, single flight per name, least recently used unloaded when idle. */
export class ModelSetCache<T> {
  readonly #o: ModelSetCacheOptions<T>;
  readonly #entries = new Map<string, Entry<T>>();
  #tick = 0;
  /** Sets loaded and unloaded since the start (metrics). */
  readonly counts = { loads: 0, unloads: 0, failures: 0 };
  readonly defaultName: string;

  constructor(o: ModelSetCacheOptions<T>) {
    this.#o = o;
    this.defaultName = defaultSetName(o.modelDir);
  }

  /** Names of the sets loaded (or loading) now, most recently used first. */
  get names(): string[] {
    return [...this.#entries.values()].sort((a, b) => b.lastUsed - a.lastUsed).map((e) => e.name);
  }

  /** The sets loaded now, without touching their recency (status, metrics). */
  async loaded(): Promise<[string, T][]> {
    const out: [string, T][] = [];
    for (const e of [...this.#entries.values()]) if (e.loaded) out.push([e.name, await e.value]);
    return out;
  }

  get size(): number {
    return this.#entries.size;
  }

  /** The set for a job (absent name: the default); UNKNOWN_MODEL_SET or MODEL_ERROR when it cannot be loaded. */
  async acquire(name?: string): Promise<Lease<T>> {
    const n = name ?? this.defaultName;
    let e = this.#entries.get(n);
    if (!e) {
      const dir = setDir(n, this.#o); // throws UNKNOWN_MODEL_SET before anything is held
      const entry: Entry<T> = { name: n, users: 0, lastUsed: ++this.#tick, loaded: false, value: Promise.resolve(undefined as T) };
      entry.value = this.#o.load(n, dir).then(
        (v) => {
          entry.loaded = true;
          this.counts.loads++;
          return v;
        },
        (err: unknown) => {
          this.counts.failures++;
          if (this.#entries.get(n) === entry) this.#entries.delete(n);
          throw loadError(n, err);
        },
      );
      entry.value.catch(() => undefined);
      this.#entries.set(n, entry);
      e = entry;
    }
    const entry = e;
    entry.users++;
    entry.lastUsed = ++this.#tick;
    let value: T;
    try {
      value = await entry.value;
    } catch (err) {
      entry.users--;
      throw err;
    }
    this.#evict();
    let released = false;
    return {
      name: n,
      value,
      release: () => {
        if (released) return;
        released = true;
        entry.users--;
        entry.lastUsed = ++this.#tick;
        this.#evict();
      },
    };
  }

  /** Unload idle sets, least recently used first, until at most `max` are held. */
  #evict(): void {
    while (this.#entries.size > this.#o.max) {
      let victim: Entry<T> | undefined;
      for (const e of this.#entries.values()) if (e.loaded && e.users === 0 && (!victim || e.lastUsed < victim.lastUsed)) victim = e;
      if (!victim) return; // every set is in use: the excess goes when one is released
      this.#entries.delete(victim.name);
      this.counts.unloads++;
      void victim.value.then((v) => this.#o.unload(v)).catch(() => undefined);
    }
  }

  async close(): Promise<void> {
    const all = [...this.#entries.values()];
    this.#entries.clear();
    await Promise.all(all.map((e) => e.value.then((v) => this.#o.unload(v)).catch(() => undefined)));
  }
}

function loadError(name: string, err: unknown): GsvError {
  if (err instanceof GsvError) return err;
  if (err instanceof ManifestError) return new GsvError("MODEL_ERROR", `model set ${name} cannot be loaded: ${err.message}`, { cause: err });
  return new GsvError("MODEL_ERROR", `model set ${name} cannot be loaded: ${(err as Error)?.message ?? String(err)}`, { cause: err });
}
