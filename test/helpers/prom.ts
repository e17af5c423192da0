/**
 * A small parser of the Prometheus text exposition format (0.0.4), written for the tests: it reads what
 * a scrape returns into samples, checking the syntax as it goes (HELP/TYPE lines, names, label escapes,
 * values), so a malformed line fails the test.
 */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Scrape {
  samples: Sample[];
  types: Map<string, string>;
  help: Map<string, string>;
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;

function parseValue(v: string): number {
  if (v === "+Inf") return Infinity;
  if (v === "-Inf") return -Infinity;
  if (v === "NaN") return NaN;
  if (!/^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(v)) throw new Error(`bad sample value ${JSON.stringify(v)}`);
  return Number(v);
}

export function parseProm(text: string): Scrape {
  const samples: Sample[] = [];
  const types = new Map<string, string>();
  const help = new Map<string, string>();
  const lines = text.split("\n");
  if (lines.at(-1) !== "") throw new Error("the exposition must end with a newline");
  for (const [n, line] of lines.entries()) {
    if (line === "") continue;
    if (line.startsWith("#")) {
      const m = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
      if (!m) continue; // a plain comment
      if (m[1] === "TYPE") {
        if (!["counter", "gauge", "histogram", "summary", "untyped"].includes(m[3])) throw new Error(`line ${n + 1}: bad type ${m[3]}`);
        if (types.has(m[2])) throw new Error(`line ${n + 1}: second TYPE for ${m[2]}`);
        types.set(m[2], m[3]);
      } else help.set(m[2], m[3].replace(/\\n/g, "\n").replace(/\\\\/g, "\\"));
      continue;
    }
    const nm = NAME.exec(line);
    if (!nm) throw new Error(`line ${n + 1}: no metric name: ${line}`);
    let i = nm[0].length;
    const labels: Record<string, string> = {};
    if (line[i] === "{") {
      i++;
      while (line[i] !== "}") {
        const ln = /^[a-zA-Z_][a-zA-Z0-9_]*/.exec(line.slice(i));
        if (!ln) throw new Error(`line ${n + 1}: bad label name at ${i}: ${line}`);
        i += ln[0].length;
        if (line.slice(i, i + 2) !== '="') throw new Error(`line ${n + 1}: expected =" after ${ln[0]}`);
        i += 2;
        let v = "";
        for (;;) {
          const c = line[i++];
          if (c === undefined) throw new Error(`line ${n + 1}: unterminated label value`);
          if (c === '"') break;
          if (c === "\\") {
            const e = line[i++];
            v += e === "n" ? "\n" : e;
          } else v += c;
        }
        if (ln[0] in labels) throw new Error(`line ${n + 1}: label ${ln[0]} twice`);
        labels[ln[0]] = v;
        if (line[i] === ",") i++;
        else if (line[i] !== "}") throw new Error(`line ${n + 1}: expected , or } at ${i}`);
      }
      i++;
    }
    if (line[i] !== " ") throw new Error(`line ${n + 1}: expected a space before the value: ${line}`);
    const rest = line.slice(i + 1).split(" ");
    if (rest.length > 2) throw new Error(`line ${n + 1}: trailing fields: ${line}`);
    samples.push({ name: nm[0], labels, value: parseValue(rest[0]) });
  }
  return { samples, types, help };
}

/** The value of the one sample with this name whose labels include `labels`; 0 if there is none. */
export function value(s: Scrape, name: string, labels: Record<string, string> = {}): number {
  const hits = s.samples.filter((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v) && Object.keys(x.labels).length === Object.keys(labels).length);
  if (hits.length > 1) throw new Error(`${name} ${JSON.stringify(labels)} matches ${hits.length} samples`);
  return hits[0]?.value ?? 0;
}

/** Check every histogram: buckets cumulative and increasing in le, +Inf equal to _count. Returns how many series were checked. */
export function checkHistograms(s: Scrape): number {
  let checked = 0;
  for (const [name, type] of s.types) {
    if (type !== "histogram") continue;
    const series = new Map<string, Sample[]>();
    for (const x of s.samples.filter((x) => x.name === `${name}_bucket`)) {
      const { le, ...rest } = x.labels;
      const key = JSON.stringify(rest);
      if (!series.has(key)) series.set(key, []);
      series.get(key)!.push(x);
    }
    for (const [key, buckets] of series) {
      let prevLe = -Infinity;
      let prev = 0;
      for (const b of buckets) {
        const le = parseValue(b.labels.le);
        if (!(le > prevLe)) throw new Error(`${name}${key}: le not increasing`);
        if (b.value < prev) throw new Error(`${name}${key}: buckets not cumulative`);
        prevLe = le;
        prev = b.value;
      }
      if (prevLe !== Infinity) throw new Error(`${name}${key}: no +Inf bucket`);
      const labels = JSON.parse(key) as Record<string, string>;
      if (prev !== value(s, `${name}_count`, labels)) throw new Error(`${name}${key}: +Inf bucket ${prev} != count`);
      checked++;
    }
  }
  return checked;
}
