/**
 * npm run bench:frontend [-- --seconds 3] [-- --out bench-out]
 *
 * Text frontend throughput: sentences per second on one core (one thread, the way one text-frontend
 * replica runs its G2P) for each language mode, over a fixed corpus of ordinary sentences (numbers,
 * punctuation, a few polyphones). Each language is warmed up first; the one-off cost of loading its
 * dictionaries is reported separately. Writes bench-out/frontend.json.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { textToSegments } from "../services/text-frontend/frontend.js";

const { values } = parseArgs({ options: { seconds: { type: "string", default: "3" }, out: { type: "string", default: "bench-out" } } });
const seconds = Number(values.seconds);

const CORPUS: Record<string, string[]> = {
  zh: [
    "今天天气很好，我们一起去公园散步吧。",
    "这家银行的利率是百分之三点五，比去年高了一点。",
    "会议将在2024年3月15日下午2:30开始，请大家准时参加。",
    "他还没还我那本书，我觉得有点不好意思再问他。",
    "随着人工智能技术的快速发展，语音合成已经在很多领域得到了广泛应用。",
    "小明买了3个苹果和两斤香蕉，一共花了12.5元。",
    "长江是中国最长的河流，全长约6300公里。",
    "请拨打电话13812345678联系我们的客服人员。",
  ],
  en: [
    "The quick brown fox jumps over the lazy dog.",
    "On March 5th, 2024, the company reported revenue of $3.2 million.",
    "Dr. Smith will see you at 10:30 in room 204.",
    "She sells sea shells by the sea shore, and the shells she sells are surely sea shells.",
    "It was the best of times, it was the worst of times.",
    "Please read the record before you record the new song.",
    "About 45% of the 1,200 participants answered the survey online.",
    "A journey of a thousand miles begins with a single step.",
  ],
  ja: [
    "今日はとても良い天気ですね。",
    "東京駅から新幹線で大阪に行きました。",
    "私は毎朝コーヒーを飲んでから会社に行きます。",
    "この本はとても面白かったので、友達にも勧めました。",
    "明日の会議は午後三時から始まる予定です。",
    "日本語の勉強は難しいですが、楽しいです。",
    "駅の近くに新しいレストランができました。",
    "ありがとうございます、また来てくださいね。",
  ],
  ko: [
    "안녕하세요, 만나서 반갑습니다.",
    "오늘 날씨가 정말 좋네요.",
    "저는 한국어를 공부하고 있습니다.",
    "내일 아침에 학교에 가야 해요.",
    "이 책은 아주 재미있었어요.",
    "우리는 같이 점심을 먹었습니다.",
    "서울역에서 기차를 타고 부산에 갔어요.",
    "감사합니다, 다음에 또 만나요.",
  ],
  yue: [
    "我哋今日去飲茶，好唔好呀？",
    "佢話聽日會落雨，記得帶遮。",
    "呢間餐廳啲嘢食好好味。",
    "你食咗飯未呀？",
    "我住喺香港已經十幾年喇。",
    "唔該你幫我攞嗰本書過嚟。",
    "今日嘅天氣好熱，我哋去游水啦。",
    "佢買咗三個蘋果同兩隻橙。",
  ],
  auto: [
    "我今天用ChatGPT写了一封email。",
    "这个API的response time大概是200毫秒。",
    "今日はいい天気ですね。Let's go outside.",
    "Hello，你好，안녕하세요。",
    "我最喜欢的电影是Inception。",
    "東京タワーに行きましょう！It is beautiful.",
    "他在Google工作了5年。",
    "The meeting is at 3点，不要迟到。",
  ],
};

interface Row {
  mode: string;
  sentences: number;
  seconds: number;
  perSecond: number;
  msPerSentence: number;
  firstCallMs: number;
}

function run(mode: string, texts: string[]): Row {
  const t0 = performance.now();
  textToSegments(texts[0], mode, "cut5");
  const firstCallMs = performance.now() - t0;
  // Warm-up for a second: the JIT and WebAssembly tier-up (jieba) take a few hundred calls to settle.
  const warm = performance.now() + 1000;
  while (performance.now() < warm) for (const s of texts) textToSegments(s, mode, "cut0");
  let n = 0;
  const start = performance.now();
  const until = start + seconds * 1000;
  while (performance.now() < until) {
    for (const s of texts) textToSegments(s, mode, "cut0");
    n += texts.length;
  }
  const elapsed = (performance.now() - start) / 1000;
  return { mode, sentences: n, seconds: elapsed, perSecond: n / elapsed, msPerSentence: (elapsed * 1000) / n, firstCallMs };
}

const rows: Row[] = [];
console.log(`text frontend, one thread, ${seconds} s per language (node ${process.version})`);
console.log("mode   sentences/s   ms/sentence   first call (loads dictionaries)");
for (const [mode, texts] of Object.entries(CORPUS)) {
  const r = run(mode, texts);
  rows.push(r);
  console.log(`${mode.padEnd(6)} ${r.perSecond.toFixed(0).padStart(11)}   ${r.msPerSentence.toFixed(3).padStart(11)}   ${r.firstCallMs.toFixed(0).padStart(6)} ms`);
}
mkdirSync(values.out!, { recursive: true });
const file = join(values.out!, "frontend.json");
writeFileSync(file, JSON.stringify({ node: process.version, secondsPerLanguage: seconds, rows }, null, 2));
console.log(`wrote ${file}`);
