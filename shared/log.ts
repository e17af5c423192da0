/** Structured one-line JSON logs on stderr; GSV_LOG=debug|info|warn|error (default info). */
const levels = { debug: 10, info: 20, warn: 30, error: 40 } as const;
type Level = keyof typeof levels;
const threshold = levels[(process.env.GSV_LOG as Level) ?? "info"] ?? levels.info;

function emit(level: Level, msg: string, fields?: Record<string, unknown>): void {
  if (levels[level] < threshold) return;
  process.stderr.write(JSON.stringify({ t: new Date().toISOString(), level, msg, ...fields }) + "\n");
}

export const log = {
  debug: (msg: string, fields?: Record<string, unknown>) => emit("debug", msg, fields),
  info: (msg: string, fields?: Record<string, unknown>) => emit("info", msg, fields),
  warn: (msg: string, fields?: Record<string, unknown>) => emit("warn", msg, fields),
  error: (msg: string, fields?: Record<string, unknown>) => emit("error", msg, fields),
};
