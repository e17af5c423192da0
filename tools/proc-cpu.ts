import { readFileSync } from "node:fs";

/**
 * CPU time (user + system) a process has used so far, in ms, from Linux /proc/<pid>/stat; undefined
 * where it cannot be read (no /proc, the process is gone). The fields after the command name, which
 * may itself hold spaces and parentheses, are counted from its last ")"; utime and stime are in
 * USER_HZ, 100 a second on Linux.
 */
export function processCpuMs(pid: number | undefined): number | undefined {
  if (!pid) return undefined;
  try {
    const f = readFileSync(`/proc/${pid}/stat`, "utf8");
    const rest = f.slice(f.lastIndexOf(")") + 2).split(" ");
    return ((Number(rest[11]) + Number(rest[12])) * 1000) / 100;
  } catch {
    return undefined;
  }
}
