import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

let root: string | undefined;

/** The repository root: the nearest folder above this module that holds package.json (works from src and dist). */
export function repoRoot(): string {
  if (root) return root;
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, "package.json")) && existsSync(join(dir, "services"))) return (root = dir);
    const up = dirname(dir);
    if (up === dir) throw new Error("cannot find the gsv-pipeline root above " + fileURLToPath(import.meta.url));
    dir = up;
  }
}

export function fromRoot(...parts: string[]): string {
  return resolve(repoRoot(), ...parts);
}
