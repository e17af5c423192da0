/**
 * manifest.json of a model set (docs/models.md): its schema, its types, and `loadManifest`, which
 * parses it and checks the sha256 of the graph files it names.
 */
import { createHash } from "node:crypto";
import { readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { z } from "zod";

/** The nine graphs of contract 1, in pipeline order. */
export const GRAPH_NAMES = [
  "cnhubert",
  "vq_extract",
  "ge_encoder",
  "t2s_encoder",
  "t2s_prefill",
  "t2s_step",
  "sovits_encp",
  "cfm_dit",
  "vocoder",
] as const;

export type GraphName = (typeof GRAPH_NAMES)[number];

/** Graphs a model set may have (docs/models.md): `bert_zh`, zh BERT features for the text-frontend. */
export const OPTIONAL_GRAPH_NAMES = ["bert_zh"] as const;
export type OptionalGraphName = (typeof OPTIONAL_GRAPH_NAMES)[number];
/** Any graph a service can load. */
export type AnyGraphName = GraphName | OptionalGraphName;

export const MANIFEST_FILE = "manifest.json";
export const CONTRACT_VERSION = 1;

const posInt = z.number().int().positive();

/** A graph file: a plain file name inside the set's directory (no path separators, no leading dot). */
const GraphEntrySchema = z.object({
  file: z
    .string()
    .regex(/^[A-Za-z0-9_-][A-Za-z0-9._-]*$/, "must be a plain file name inside the model set directory"),
  sha256: z.string().regex(/^[0-9a-f]{64}$/, "must be 64 lowercase hex digits"),
  bytes: z.number().int().nonnegative(),
});

/** `bert_zh`: the graph, plus its BertTokenizer vocab.txt (one token per line), checked the same way. */
const BertGraphEntrySchema = GraphEntrySchema.extend({ vocab: GraphEntrySchema });

/** The nine graphs (all required) and the optional ones; no other key. */
const GraphsSchema = z
  .object({
    ...(Object.fromEntries(GRAPH_NAMES.map((n) => [n, GraphEntrySchema])) as Record<GraphName, typeof GraphEntrySchema>),
    bert_zh: BertGraphEntrySchema.optional(),
  })
  .strict();

export const DimsSchema = z.object({
  t2s: z.object({
    layers: posInt,
    heads: posInt,
    headDim: posInt,
    hidden: posInt,
    ffn: posInt,
    vocab: posInt,
    eos: z.number().int().nonnegative(),
    phoneVocab: posInt,
    bertDim: posInt,
  }),
  ssl: z.object({ dim: posInt, sampleRate: posInt, hop: posInt, window: posInt }),
  vq: z.object({ codebook: posInt }),
  ge: z.object({ dim: posInt }),
  fea: z.object({ dim: posInt }),
  mel: z.object({
    bands: posInt,
    sampleRate: posInt,
    nFft: posInt,
    hop: posInt,
    win: posInt,
    fmin: z.number().nonnegative(),
    fmax: z.number().positive().nullable(),
    logMin: z.number(),
    logMax: z.number(),
  }),
  spec: z.object({ sampleRate: posInt, nFft: posInt, hop: posInt, win: posInt, bins: posInt, usedBins: posInt }),
  cfm: z.object({ maxFrames: posInt, maxPromptFrames: posInt, melPerToken: z.number().positive() }),
  vocoder: z.object({ upsample: posInt, sampleRate: posInt }),
});

export const LengthPolicySchema = z.object({
  tokensPerPhone: z.number().positive(),
  minTokens: z.number().int().nonnegative(),
});

export const ManifestSchema = z
  .object({
    format: z.literal("gsv-model-set"),
    contract: z.literal(CONTRACT_VERSION),
    name: z.string().min(1),
    kind: z.enum(["generated", "exported"]),
    description: z.string(),
    seed: z.number().int().nonnegative().optional(),
    symbols: z.literal("v2"),
    dims: DimsSchema,
    lengthPolicy: LengthPolicySchema.nullable(),
    graphs: GraphsSchema,
  })
  .superRefine((m, ctx) => {
    const d = m.dims.t2s;
    if (d.heads * d.headDim !== d.hidden) {
      ctx.addIssue({ code: "custom", path: ["dims", "t2s", "hidden"], message: "must equal heads × headDim" });
    }
    if (d.eos >= d.vocab) ctx.addIssue({ code: "custom", path: ["dims", "t2s", "eos"], message: "must be below vocab" });
    if (m.dims.spec.usedBins > m.dims.spec.bins) {
      ctx.addIssue({ code: "custom", path: ["dims", "spec", "usedBins"], message: "must not exceed bins" });
    }
    const files = new Set<string>();
    const named: [string[], string][] = Object.entries(m.graphs).flatMap(([name, g]) =>
      !g ? [] : [[["graphs", name, "file"], g.file] as [string[], string], ...("vocab" in g ? [[["graphs", name, "vocab", "file"], g.vocab.file] as [string[], string]] : [])],
    );
    for (const [path, file] of named) {
      if (files.has(file)) ctx.addIssue({ code: "custom", path, message: `file ${file} is named twice` });
      files.add(file);
    }
  });

export type Manifest = z.infer<typeof ManifestSchema>;
export type ModelDims = Manifest["dims"];
export type LengthPolicy = z.infer<typeof LengthPolicySchema>;
export type GraphEntry = z.infer<typeof GraphEntrySchema>;

/** A model set that cannot be used: missing or malformed manifest, missing or altered graph file. */
export class ManifestError extends Error {
  override readonly name = "ManifestError";
  /** The file at fault (manifest.json or a graph file), as a path. */
  readonly file: string;
  constructor(message: string, file: string, options?: ErrorOptions) {
    super(message, options);
    this.file = file;
  }
}

export interface LoadManifestOptions {
  /** Check the size and sha256 of the graph files (default true). */
  verify?: boolean;
  /** Verify only these graphs (default: all nine, and the optional ones the set has). */
  graphs?: readonly AnyGraphName[];
}

/** sha256 of a file, as lowercase hex. */
export function sha256File(path: string): string {
  return createHash("sha256").update(readFileSync(path)).digest("hex");
}

/** A graph's entry; throws ManifestError for an optional graph the set does not have. */
export function graphEntry(manifest: Manifest, name: AnyGraphName): GraphEntry {
  const entry = manifest.graphs[name];
  if (!entry) throw new ManifestError(`model set ${manifest.name} has no ${name} graph`, MANIFEST_FILE);
  return entry;
}

/** The path of a graph's file. */
export function graphPath(dir: string, manifest: Manifest, name: AnyGraphName): string {
  return join(dir, graphEntry(manifest, name).file);
}

/** Throws ManifestError unless the graph's file (and, for bert_zh, its vocab) exists with the size and sha256 the manifest gives. */
export function verifyGraph(dir: string, manifest: Manifest, name: AnyGraphName): void {
  const entry = graphEntry(manifest, name);
  verifyFile(dir, name, entry);
  if (name === "bert_zh" && manifest.graphs.bert_zh) verifyFile(dir, "bert_zh vocab", manifest.graphs.bert_zh.vocab);
}

function verifyFile(dir: string, name: string, entry: GraphEntry): void {
  const path = join(dir, entry.file);
  let size: number;
  try {
    size = statSync(path).size;
  } catch (err) {
    throw new ManifestError(`model set ${dir}: graph ${name} file ${entry.file} is missing (${path})`, path, { cause: err });
  }
  if (size !== entry.bytes) {
    throw new ManifestError(
      `model set ${dir}: graph ${name} file ${entry.file} has ${size} bytes, the manifest says ${entry.bytes}`,
      path,
    );
  }
  const actual = sha256File(path);
  if (actual !== entry.sha256) {
    throw new ManifestError(
      `model set ${dir}: graph ${name} file ${entry.file} fails its sha256 check (expected ${entry.sha256}, got ${actual})`,
      path,
    );
  }
}

/** Parses and validates an already-read manifest object (no file checks). */
export function parseManifest(value: unknown, source = MANIFEST_FILE): Manifest {
  const r = ManifestSchema.safeParse(value);
  if (!r.success) {
    const issues = r.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; ");
    throw new ManifestError(`${source} is not a valid model-set manifest: ${issues}`, source);
  }
  return r.data;
}

/**
 * Reads `dir/manifest.json`, validates it against the contract and, unless `verify` is false, checks
 * that every graph file exists with the size and sha256 given. Throws ManifestError naming the file.
 */
export function loadManifest(dir: string, opts: LoadManifestOptions = {}): Manifest {
  const path = join(dir, MANIFEST_FILE);
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new ManifestError(`model set ${dir}: ${MANIFEST_FILE} not found (${path})`, path, { cause: err });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    throw new ManifestError(`${path} is not valid JSON: ${(err as Error).message}`, path, { cause: err });
  }
  const manifest = parseManifest(json, path);
  if (opts.verify ?? true) {
    const optional = OPTIONAL_GRAPH_NAMES.filter((n) => manifest.graphs[n] !== undefined);
    for (const name of opts.graphs ?? [...GRAPH_NAMES, ...optional]) verifyGraph(dir, manifest, name);
  }
  return manifest;
}
