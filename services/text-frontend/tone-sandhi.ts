/**
 * Mandarin tone sandhi, a port of upstream GPT-SoVITS `text/tone_sandhi.py` (from PaddleSpeech,
 * Apache-2.0): 不 and 一 sandhi, neutral tones, third-tone sandhi within a word, and the merges of
 * jieba's words that make those rules see the right units.
 *
 * A "final" here is a whole syllable with its tone digit ("hao3", "men5") or a punctuation mark; the
 * rules only read and rewrite the last character (the tone), as upstream's do on its finals.
 */
import { jiebaWasm } from "./lazy.js";

export type Word = [word: string, pos: string];

const MUST_NEURAL = new Set(
  (
    "麻烦 麻利 鸳鸯 高粱 骨头 骆驼 马虎 首饰 馒头 馄饨 风筝 难为 队伍 阔气 闺女 门道 锄头 铺盖 铃铛 铁匠 钥匙 里脊 里头 部分 那么 道士 造化 迷糊 连累 这么 这个 运气 过去 软和 转悠 踏实 " +
    "跳蚤 跟头 趔趄 财主 豆腐 讲究 记性 记号 认识 规矩 见识 裁缝 补丁 衣裳 衣服 衙门 街坊 行李 行当 蛤蟆 蘑菇 薄荷 葫芦 葡萄 萝卜 荸荠 苗条 苗头 苍蝇 芝麻 舒服 舒坦 舌头 自在 膏药 " +
    "脾气 脑袋 脊梁 能耐 胳膊 胭脂 胡萝 胡琴 胡同 聪明 耽误 耽搁 耷拉 耳朵 老爷 老实 老婆 老头 老太 翻腾 罗嗦 罐头 编辑 结实 红火 累赘 糨糊 糊涂 精神 粮食 簸箕 篱笆 算计 算盘 答应 " +
    "笤帚 笑语 笑话 窟窿 窝囊 窗户 稳当 稀罕 称呼 秧歌 秀气 秀才 福气 祖宗 砚台 码头 石榴 石头 石匠 知识 眼睛 眯缝 眨巴 眉毛 相声 盘算 白净 痢疾 痛快 疟疾 疙瘩 疏忽 畜生 生意 甘蔗 " +
    "琵琶 琢磨 琉璃 玻璃 玫瑰 玄乎 狐狸 状元 特务 牲口 牙碜 牌楼 爽快 爱人 热闹 烧饼 烟筒 烂糊 点心 炊帚 灯笼 火候 漂亮 滑溜 溜达 温和 清楚 消息 浪头 活泼 比方 正经 欺负 模糊 槟榔 " +
    "棺材 棒槌 棉花 核桃 栅栏 柴火 架势 枕头 枇杷 机灵 本事 木头 木匠 朋友 月饼 月亮 暖和 明白 时候 新鲜 故事 收拾 收成 提防 挖苦 挑剔 指甲 指头 拾掇 拳头 拨弄 招牌 招呼 抬举 护士 " +
    "折腾 扫帚 打量 打算 打点 打扮 打听 打发 扎实 扁担 戒指 懒得 意识 意思 情形 悟性 怪物 思量 怎么 念头 念叨 快活 忙活 志气 心思 得罪 张罗 弟兄 开通 应酬 庄稼 干事 帮手 帐篷 希罕 " +
    "师父 师傅 巴结 巴掌 差事 工夫 岁数 屁股 尾巴 少爷 小气 小伙 将就 对头 对付 寡妇 家伙 客气 实在 官司 学问 学生 字号 嫁妆 媳妇 媒人 婆家 娘家 委屈 姑娘 姐夫 妯娌 妥当 妖精 奴才 " +
    "女婿 头发 太阳 大爷 大方 大意 大夫 多少 多么 外甥 壮实 地道 地方 在乎 困难 嘴巴 嘱咐 嘟囔 嘀咕 喜欢 喇嘛 喇叭 商量 唾沫 哑巴 哈欠 哆嗦 咳嗽 和尚 告诉 告示 含糊 吓唬 后头 名字 " +
    "名堂 合同 吆喝 叫唤 口袋 厚道 厉害 千斤 包袱 包涵 匀称 勤快 动静 动弹 功夫 力气 前头 刺猬 刺激 别扭 利落 利索 利害 分析 出息 凑合 凉快 冷战 冤枉 冒失 养活 关系 先生 兄弟 便宜 " +
    "使唤 佩服 作坊 体面 位置 似的 伙计 休息 什么 人家 亲戚 亲家 交情 云彩 事情 买卖 主意 丫头 丧气 两口 东西 东家 世故 不由 不在 下水 下巴 上头 上司 丈夫 丈人 一辈 那个 菩萨 父亲 " +
    "母亲 咕噜 邋遢 费用 冤家 甜头 介绍 荒唐 大人 泥鳅 幸福 熟悉 计划 扑腾 蜡烛 姥爷 照顾 喉咙 吉他 弄堂 蚂蚱 凤凰 拖沓 寒碜 糟蹋 倒腾 报复 逻辑 盘缠 喽啰 牢骚 咖喱 扫把 惦记"
  ).split(" "),
);

const MUST_NOT_NEURAL = new Set(
  (
    "男子 女子 分子 原子 量子 莲子 石子 瓜子 电子 人人 虎虎 幺幺 干嘛 学子 哈哈 数数 袅袅 局地 以下 娃哈哈 花花草草 留得 耕地 想想 熙熙 攘攘 卵子 死死 冉冉 恳恳 佼佼 吵吵 打打 考考 整整 " +
    "莘莘 落地 算子 家家户户 青青"
  ).split(" "),
);

const PUNC = "：，；。？！“”‘’':,;.?!";

/**
 * Python's str.isnumeric() for the characters that can reach the sandhi (the normalised text holds only
 * U+4E00..U+9FA5 and punctuation): the Han characters with a Unicode numeric value.
 */
const NUMERIC_HAN = new Set(Array.from("〇零一二三四五六七八九十百千万亿兆廿卅卌壹贰叁肆伍陆柒捌玖拾佰仟两"));
export function isNumericChar(ch: string): boolean {
  return /^[0-9]$/.test(ch) || (NUMERIC_HAN.has(ch) && ch !== "两");
}

const tone = (f: string) => f[f.length - 1];
const setTone = (f: string, t: string) => f.slice(0, -1) + t;
const allToneThree = (finals: string[]) => finals.every((x) => tone(x) === "3");

/** Characters of a string (code points), as Python indexes them. */
const chars = (s: string) => Array.from(s);

function splitWord(word: string): [string, string] {
  const parts = jiebaWasm().cut_for_search(word, true);
  // Python's sorted() is stable: shortest first, ties in jieba's order.
  const sorted = parts.map((w, i) => ({ w, i })).sort((a, b) => chars(a.w).length - chars(b.w).length || a.i - b.i);
  const first = sorted.length > 0 ? sorted[0].w : word;
  const wc = chars(word);
  const fc = chars(first);
  if (word.indexOf(first) === 0) return [first, wc.slice(fc.length).join("")];
  return [wc.slice(0, wc.length - fc.length).join(""), first];
}

function neuralSandhi(word: string, pos: string, finalsIn: string[]): string[] {
  let finals = finalsIn;
  const w = chars(word);
  for (let j = 1; j < w.length; j++) {
    if (w[j] === w[j - 1] && ["n", "v", "a"].includes(pos.slice(0, 1)) && !MUST_NOT_NEURAL.has(word)) finals[j] = setTone(finals[j], "5");
  }
  const geIdx = w.indexOf("个");
  const last = w[w.length - 1] ?? "";
  const n = finals.length;
  if (w.length >= 1 && "吧呢哈啊呐噻嘛吖嗨呐哦哒额滴哩哟喽啰耶喔诶".includes(last)) finals[n - 1] = setTone(finals[n - 1], "5");
  else if (w.length >= 1 && "的地得".includes(last)) finals[n - 1] = setTone(finals[n - 1], "5");
  else if (w.length === 1 && "了着过".includes(word) && ["ul", "uz", "ug"].includes(pos)) finals[n - 1] = setTone(finals[n - 1], "5");
  else if (w.length > 1 && "们子".includes(last) && ["r", "n"].includes(pos) && !MUST_NOT_NEURAL.has(word)) finals[n - 1] = setTone(finals[n - 1], "5");
  else if (w.length > 1 && "上下里".includes(last) && ["s", "l", "f"].includes(pos)) finals[n - 1] = setTone(finals[n - 1], "5");
  else if (w.length > 1 && "来去".includes(last) && "上下进出回过起开".includes(w[w.length - 2])) finals[n - 1] = setTone(finals[n - 1], "5");
  else if ((geIdx >= 1 && (isNumericChar(w[geIdx - 1]) || "几有两半多各整每做是".includes(w[geIdx - 1]))) || word === "个") {
    finals[geIdx] = setTone(finals[geIdx], "5");
  } else if (MUST_NEURAL.has(word) || MUST_NEURAL.has(w.slice(-2).join(""))) finals[n - 1] = setTone(finals[n - 1], "5");

  const [a, b] = splitWord(word);
  const la = chars(a).length;
  const lists = [finals.slice(0, la), finals.slice(la)];
  [a, b].forEach((sub, i) => {
    const sc = chars(sub);
    if (sub !== "" && (MUST_NEURAL.has(sub) || MUST_NEURAL.has(sc.slice(-2).join(""))) && lists[i].length > 0) {
      lists[i][lists[i].length - 1] = setTone(lists[i][lists[i].length - 1], "5");
    }
  });
  finals = [...lists[0], ...lists[1]];
  return finals;
}

function buSandhi(word: string, finals: string[]): string[] {
  const w = chars(word);
  if (w.length === 3 && w[1] === "不") finals[1] = setTone(finals[1], "5");
  else {
    for (let i = 0; i < w.length; i++) {
      if (w[i] === "不" && i + 1 < w.length && tone(finals[i + 1]) === "4") finals[i] = setTone(finals[i], "2");
    }
  }
  return finals;
}

function yiSandhi(word: string, finals: string[]): string[] {
  const w = chars(word);
  if (w.includes("一") && w.every((c) => c === "一" || isNumericChar(c))) return finals;
  if (w.length === 3 && w[1] === "一" && w[0] === w[2]) finals[1] = setTone(finals[1], "5");
  else if (word.startsWith("第一")) finals[1] = setTone(finals[1], "1");
  else {
    for (let i = 0; i < w.length; i++) {
      if (w[i] === "一" && i + 1 < w.length) {
        if (tone(finals[i + 1]) === "4") finals[i] = setTone(finals[i], "2");
        else if (!PUNC.includes(w[i + 1])) finals[i] = setTone(finals[i], "4");
      }
    }
  }
  return finals;
}

function threeSandhi(word: string, finalsIn: string[]): string[] {
  let finals = finalsIn;
  const n = chars(word).length;
  if (n === 2 && allToneThree(finals)) finals[0] = setTone(finals[0], "2");
  else if (n === 3) {
    const wl = splitWord(word);
    const l0 = chars(wl[0]).length;
    if (allToneThree(finals)) {
      if (l0 === 2) {
        finals[0] = setTone(finals[0], "2");
        finals[1] = setTone(finals[1], "2");
      } else if (l0 === 1) finals[1] = setTone(finals[1], "2");
    } else {
      const lists = [finals.slice(0, l0), finals.slice(l0)];
      for (let i = 0; i < 2; i++) {
        const sub = lists[i];
        if (allToneThree(sub) && sub.length === 2) sub[0] = setTone(sub[0], "2");
        else if (i === 1 && !allToneThree(sub) && tone(sub[0]) === "3" && lists[0].length > 0 && tone(lists[0][lists[0].length - 1]) === "3") {
          lists[0][lists[0].length - 1] = setTone(lists[0][lists[0].length - 1], "2");
        }
        finals = [...lists[0], ...lists[1]];
      }
    }
  } else if (n === 4) {
    const lists = [finals.slice(0, 2), finals.slice(2)];
    finals = [];
    for (const sub of lists) {
      if (allToneThree(sub)) sub[0] = setTone(sub[0], "2");
      finals.push(...sub);
    }
  }
  return finals;
}

/** Upstream ToneSandhi.modified_tone. */
export function modifiedTone(word: string, pos: string, finals: string[]): string[] {
  let f = buSandhi(word, finals);
  f = yiSandhi(word, f);
  f = neuralSandhi(word, pos, f);
  f = threeSandhi(word, f);
  return f;
}

// ---------------------------------------------------------------------------------------------------
// Merges before sandhi (pre_merge_for_modify)

function mergeBu(seg: Word[]): Word[] {
  const out: Word[] = [];
  let last = "";
  for (const [w0, pos] of seg) {
    let word = w0;
    if (last === "不") word = last + word;
    if (word !== "不") out.push([word, pos]);
    last = word;
  }
  if (last === "不") out.push([last, "d"]);
  return out;
}

function mergeYi(seg: Word[]): Word[] {
  let out: Word[] = [];
  let i = 0;
  while (i < seg.length) {
    const [word, pos] = seg[i];
    let merged = false;
    if (i - 1 >= 0 && word === "一" && i + 1 < seg.length) {
      const last = out.length > 0 ? out[out.length - 1] : seg[i - 1];
      if (last[0] === seg[i + 1][0] && last[1] === "v" && seg[i + 1][1] === "v") {
        out[out.length - 1] = [last[0] + "一" + seg[i + 1][0], last[1]];
        i += 2;
        merged = true;
      }
    }
    if (!merged) {
      out.push([word, pos]);
      i += 1;
    }
  }
  const seg2 = out;
  out = [];
  for (const [word, pos] of seg2) {
    if (out.length > 0 && out[out.length - 1][0] === "一") out[out.length - 1] = [out[out.length - 1][0] + word, out[out.length - 1][1]];
    else out.push([word, pos]);
  }
  return out;
}

function mergeReduplication(seg: Word[]): Word[] {
  const out: Word[] = [];
  for (const [word, pos] of seg) {
    if (out.length > 0 && word === out[out.length - 1][0]) out[out.length - 1] = [out[out.length - 1][0] + word, out[out.length - 1][1]];
    else out.push([word, pos]);
  }
  return out;
}

const isReduplication = (w: string) => {
  const c = chars(w);
  return c.length === 2 && c[0] === c[1];
};

function mergeThree(seg: Word[], wordFinals: (w: string) => string[], firstRule: boolean): Word[] {
  const out: Word[] = [];
  const finals = seg.map(([w]) => wordFinals(w));
  const mergeLast = seg.map(() => false);
  for (let i = 0; i < seg.length; i++) {
    const [word, pos] = seg[i];
    let cond = false;
    if (i - 1 >= 0 && !mergeLast[i - 1]) {
      const prev = finals[i - 1];
      const cur = finals[i];
      cond = firstRule
        ? allToneThree(prev) && allToneThree(cur)
        : prev.length > 0 && cur.length > 0 && tone(prev[prev.length - 1]) === "3" && tone(cur[0]) === "3";
    }
    if (cond && !isReduplication(seg[i - 1][0]) && chars(seg[i - 1][0]).length + chars(word).length <= 3) {
      out[out.length - 1] = [out[out.length - 1][0] + word, out[out.length - 1][1]];
      mergeLast[i] = true;
    } else out.push([word, pos]);
  }
  return out;
}

function mergeEr(seg: Word[]): Word[] {
  const out: Word[] = [];
  for (let i = 0; i < seg.length; i++) {
    const [word, pos] = seg[i];
    if (i - 1 >= 0 && word === "儿" && seg[i - 1][0] !== "#") out[out.length - 1] = [out[out.length - 1][0] + word, out[out.length - 1][1]];
    else out.push([word, pos]);
  }
  return out;
}

/**
 * Upstream pre_merge_for_modify. `wordFinals` gives a word's syllables read on its own (upstream calls
 * pypinyin's lazy_pinyin there, not g2pW).
 */
export function preMergeForModify(seg: Word[], wordFinals: (w: string) => string[]): Word[] {
  let s = mergeBu(seg);
  s = mergeYi(s);
  s = mergeReduplication(s);
  s = mergeThree(s, wordFinals, true);
  s = mergeThree(s, wordFinals, false);
  return mergeEr(s);
}
