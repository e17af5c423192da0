/**
 * Language segmentation of mixed text, after upstream GPT-SoVITS `text/LangSegmenter/langsegmenter.py`
 * and the language-mode branches of `TextPreprocessor.get_phones_and_bert`.
 *
 * Upstream splits with split_lang (script runs, then fastText language identification per run). Here
 * the runs come from the scripts alone: Latin letters -> en, kana -> ja, hangul -> ko, Han -> zh (ja
 * when the sentence also has kana and no character only Chinese writes, which is what the fastText
 * model says for such sentences), digits ->
 * "digit", letters of any other script -> "x". Punctuation, spaces and symbols join the run before
 * them. Upstream's own steps then run unchanged: full_en relabelling, default language for all_* modes,
 * the digit heuristics, "x" given to a neighbour, adjacent runs of one language merged.
 */

export interface LangRun {
  lang: string;
  text: string;
}

const LATIN = /[A-Za-z\u00C0-\u024F]/;
const KANA = /[\u3041-\u3096\u3099\u309A\u30A1-\u30FA\u30FC\u31F0-\u31FF\uFF66-\uFF9D]/;
const HANGUL = /[\u1100-\u11FF\u3130-\u318F\uAC00-\uD7AF]/;
const HAN = /[\p{Script=Han}\u3005\u3007]/u;
const DIGIT = /[0-9\uFF10-\uFF19]/;
const LETTER = /\p{L}/u;
/** Marks that end a sentence for the kana-in-sentence test. */
const SENTENCE_END = /[。！？!?\n]/;
/**
 * Han characters that Japanese does not write (simplified forms, Chinese function words): a sentence
 * with one of them is Chinese even when it holds kana ("你也喜欢まいご吗"), and only its kana are ja.
 */
const CHINESE_ONLY = new Set(Array.from("你吗呢们这么什吧没说个欢还她他它啊哪谁很都给让从为时对过边样们么么哦嘛呀咱俺您喔哈该两现应题问实经长无关开发头见门东车书买卖马鸟鱼"));

function classOf(ch: string): string {
  if (LATIN.test(ch)) return "en";
  if (KANA.test(ch)) return "ja";
  if (HANGUL.test(ch)) return "ko";
  if (HAN.test(ch)) return "zh";
  if (DIGIT.test(ch)) return "digit";
  if (LETTER.test(ch)) return "x";
  return "";
}

/** Upstream full_en: has a Latin letter and only ASCII, general/CJK punctuation and full-width forms. */
export function fullEn(text: string): boolean {
  return /[A-Za-z]/.test(text) && /^[A-Za-z0-9\s\u0020-\u007E\u2000-\u206F\u3000-\u303F\uFF00-\uFFEF]+$/.test(text);
}

function mergeLang(list: LangRun[], item: LangRun): void {
  if (list.length > 0 && list[list.length - 1].lang === item.lang) list[list.length - 1].text += item.text;
  else list.push({ ...item });
}

/** Script runs (what split_lang gives upstream, with its language identification replaced by scripts). */
export function scriptRuns(text: string): LangRun[] {
  const cps = Array.from(text);
  // Sentences that contain kana read their Han characters as Japanese.
  const hanLang: string[] = new Array(cps.length).fill("zh");
  let start = 0;
  for (let i = 0; i <= cps.length; i++) {
    if (i === cps.length || SENTENCE_END.test(cps[i])) {
      let kana = false;
      let chinese = false;
      for (let k = start; k < i; k++) {
        if (KANA.test(cps[k])) kana = true;
        if (CHINESE_ONLY.has(cps[k])) chinese = true;
      }
      if (kana && !chinese) for (let k = start; k < i; k++) hanLang[k] = "ja";
      start = i + 1;
    }
  }
  const runs: LangRun[] = [];
  let cur: LangRun | undefined;
  cps.forEach((ch, i) => {
    let cls = classOf(ch);
    if (cls === "zh") cls = hanLang[i];
    // An apostrophe or hyphen inside a Latin word stays in it.
    if (cls === "") {
      if (cur) cur.text += ch;
      else cur = { lang: "", text: ch };
      return;
    }
    if (cur && (cur.lang === cls || cur.lang === "")) {
      cur.text += ch;
      cur.lang = cls;
      return;
    }
    if (cur) runs.push(cur);
    cur = { lang: cls, text: ch };
  });
  if (cur) runs.push(cur);
  // Runs of Latin words separated by spaces/punctuation only are one run already; a text of only
  // punctuation has lang "" and becomes "x".
  return runs.map((r) => (r.lang === "" ? { ...r, lang: "x" } : r));
}

/** Upstream LangSegmenter.getTexts(text, default_lang). */
export function getTexts(text: string, defaultLang = ""): LangRun[] {
  let list: LangRun[] = [];
  let haveNum = false;
  for (const item0 of scriptRuns(text)) {
    const item = { ...item0 };
    if (item.lang === "digit") {
      if (defaultLang !== "") item.lang = defaultLang;
      else haveNum = true;
      mergeLang(list, item);
      continue;
    }
    if (fullEn(item.text)) {
      item.lang = "en";
      mergeLang(list, item);
      continue;
    }
    if (defaultLang !== "") {
      item.lang = defaultLang;
      mergeLang(list, item);
      continue;
    }
    mergeLang(list, item);
  }
  if (haveNum) {
    const temp = list;
    list = [];
    temp.forEach((item0, i) => {
      const item = { ...item0 };
      if (item.lang === "digit") {
        const prev = list.length > 0 ? list[list.length - 1] : undefined;
        const next = i < temp.length - 1 ? temp[i + 1] : undefined;
        const ends = [",", ".", "!", "?", "，", "。", "！", "？"];
        if (defaultLang) item.lang = defaultLang;
        else if (prev && !next) item.lang = prev.lang;
        else if (!prev && next) item.lang = temp[1].lang;
        else if (prev && next) {
          if (prev.lang === next.lang) item.lang = prev.lang;
          else if (ends.includes(prev.text[prev.text.length - 1])) item.lang = next.lang;
          else if (ends.includes(next.text[0])) item.lang = prev.lang;
          else if (["。", "."].includes(item.text[item.text.length - 1])) item.lang = prev.lang;
          else if (Array.from(prev.text).length >= Array.from(next.text).length) item.lang = prev.lang;
          else item.lang = next.lang;
        } else item.lang = "zh";
      }
      mergeLang(list, item);
    });
  }
  // "x" (unknown) takes the language before it, or after it, or zh.
  const temp = list;
  list = [];
  for (const item0 of temp) {
    const item = { ...item0 };
    if (item.lang === "x") {
      if (list.length > 0) item.lang = list[list.length - 1].lang;
      else if (temp.length > 1) item.lang = temp[1].lang;
      else item.lang = "zh";
    }
    mergeLang(list, item);
  }
  // A leading digit run that took "x"/"digit" from a neighbour that was itself relabelled: resolve.
  return list.map((r) => (r.lang === "digit" || r.lang === "x" ? { ...r, lang: "zh" } : r));
}

/** Upstream get_phones_and_bert's language-mode branches: the runs to clean, each with its language. */
export function segmentLanguages(text: string, mode: string): LangRun[] {
  switch (mode) {
    case "all_zh":
      return getTexts(text, "zh");
    case "all_yue":
      return getTexts(text, "zh").map((r) => (r.lang === "zh" ? { ...r, lang: "yue" } : r));
    case "all_ja":
      return getTexts(text, "ja");
    case "all_ko":
      return getTexts(text, "ko");
    case "en":
      return [{ lang: "en", text }];
    case "auto":
      return getTexts(text);
    case "auto_yue":
      return getTexts(text).map((r) => (r.lang === "zh" ? { ...r, lang: "yue" } : r));
    default: {
      // zh / ja / ko / yue: English runs stay English, every other run takes the mode's language.
      const out: LangRun[] = [];
      for (const r of getTexts(text)) {
        const last = out.length > 0 ? out[out.length - 1] : undefined;
        if (last && (r.lang === "en") === (last.lang === "en")) {
          last.text += r.text;
          continue;
        }
        out.push({ lang: r.lang === "en" ? "en" : mode, text: r.text });
      }
      return out;
    }
  }
}
