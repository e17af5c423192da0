/**
 * The language packages are loaded on first use, not at import: jieba's WebAssembly module and
 * dictionary, pinyin-pro's dictionaries and to-jyutping's data take seconds and tens of MB, which a
 * replica that only ever reads English should not pay (and the service's start should not wait for).
 * All three have CommonJS builds, so a synchronous require keeps the frontend's API synchronous.
 */
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);

let jieba: typeof import("jieba-wasm") | undefined;
let pinyinPro: typeof import("pinyin-pro") | undefined;
let toJyutping: typeof import("to-jyutping") | undefined;

export function jiebaWasm(): typeof import("jieba-wasm") {
  return (jieba ??= require("jieba-wasm") as typeof import("jieba-wasm"));
}

export function pinyinProModule(): typeof import("pinyin-pro") {
  return (pinyinPro ??= require("pinyin-pro") as typeof import("pinyin-pro"));
}

export function toJyutpingModule(): typeof import("to-jyutping") {
  return (toJyutping ??= require("to-jyutping") as typeof import("to-jyutping"));
}
