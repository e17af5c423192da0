// Reads tap's output and prints the one line CI reads: "tap: N passed, N failed, N skipped".
import { readFileSync } from "node:fs";
const text = readFileSync(process.argv[2] ?? 0, "utf8");
const line = text.split("\n").reverse().find((l) => /^# \{ total: \d+/.test(l));
if (!line) {
  console.log("tap: 0 passed, 1 failed");
  process.exit(0);
}
const get = (k) => Number(line.match(new RegExp(`\\b${k}: (\\d+)`))?.[1] ?? 0);
console.log(`tap: ${get("pass")} passed, ${get("fail")} failed, ${get("skip") + get("todo")} skipped`);
