/**
 * The v2 phone symbol table (732 symbols) that GPT-SoVITS v2, v2Pro, v3 and v4 share. A phone's id is its
 * index in the list. The list lives in symbols_v2.json next to this file's source; tools/derive-symbols.md
 * says how it was derived from upstream's `text/symbols2.py`.
 *
 * tsc does not copy the JSON into dist/, so it is read from the repository root (shared/paths.ts), which
 * works the same from the sources and from dist/.
 */
import { readFileSync } from "node:fs";
import { fromRoot } from "../../shared/paths.js";

function loadSymbols(): readonly string[] {
  const file = fromRoot("services", "text-frontend", "symbols_v2.json");
  const parsed: unknown = JSON.parse(readFileSync(file, "utf8"));
  if (!Array.isArray(parsed) || !parsed.every((s) => typeof s === "string")) {
    throw new Error(`${file}: expected a JSON array of strings`);
  }
  if (new Set(parsed).size !== parsed.length) throw new Error(`${file}: duplicate symbols`);
  return Object.freeze(parsed as string[]);
}

/** All symbols, in id order. */
export const SYMBOLS: readonly string[] = loadSymbols();

/** Number of symbols (the model's phoneme vocabulary size, 732 for v2 symbols). */
export const SYMBOL_COUNT = SYMBOLS.length;

const ID_OF: ReadonlyMap<string, number> = new Map(SYMBOLS.map((s, i) => [s, i]));

function requireId(s: string): number {
  const id = ID_OF.get(s);
  if (id === undefined) throw new Error(`symbol table lacks ${JSON.stringify(s)}`);
  return id;
}

/** Id of "UNK", which every phone outside the table maps to (upstream `clean_text` does the same). */
export const UNK_ID = requireId("UNK");
/** Id of the padding symbol "_". */
export const PAD_ID = requireId("_");

/** True when `s` is a symbol of the table. */
export function hasSymbol(s: string): boolean {
  return ID_OF.has(s);
}

/** The id of one phone symbol; a phone outside the table gets the UNK id. */
export function symbolId(s: string): number {
  return ID_OF.get(s) ?? UNK_ID;
}

/** The ids of a phone sequence (unknown phones become UNK). */
export function phonesToIds(phones: readonly string[]): number[] {
  const ids = new Array<number>(phones.length);
  for (let i = 0; i < phones.length; i++) ids[i] = ID_OF.get(phones[i]) ?? UNK_ID;
  return ids;
}
