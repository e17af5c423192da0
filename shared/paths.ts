import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

let root: string | undefined;

function isOurPackage(dir: string): boolean {
  try {
    return (JSON.parse(readFileSync(join(dir, "package.json"), "utf8")) as { name?: unknown }).name === "gsv-pipeline";
  } catch {
    return false;
  }
}

/**
 * The repository root: the nearest folder above this module whose package.json is gsv-pipeline's.
 * Works from the sources (tests) and from dist/ (built code), which tsc does not copy data files into.
 */
export function repoRoot(): string {
  if (root) return root;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, "package.json")) && isOurPackage(dir)) return (root = dir);
    const up = dirname(dir);
    if (up === dir) throw new Error("cannot find the gsv-pipeline root above " + fileURLToPath(import.meta.url));
    dir = up;
  }
}

export function fromRoot(...parts: string[]): string {
  return resolve(repoRoot(), ...parts);
}
