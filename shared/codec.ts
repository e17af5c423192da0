import { Packr } from "msgpackr";
import type { z } from "zod";
import { GsvError } from "./errors.js";
import { isSafeReplySubject } from "./subjects.js";

// moreTypes: without it msgpackr writes typed arrays as truncated garbage (see docs/decisions.md).
const packr = new Packr({ moreTypes: true, useRecords: false });

export function encode(value: unknown): Uint8Array {
  return packr.pack(value);
}

export function decode(data: Uint8Array): unknown {
  return packr.unpack(data);
}

/** Decode and validate against a schema; anything off is a MALFORMED_MESSAGE with the first issue named. */
export function decodeAs<S extends z.ZodType>(schema: S, data: Uint8Array): z.infer<S> {
  let raw: unknown;
  try {
    raw = decode(data);
  } catch (err) {
    throw new GsvError("MALFORMED_MESSAGE", `not msgpack: ${(err as Error).message}`);
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue?.path.length ? issue.path.join(".") : "message";
    throw new GsvError("MALFORMED_MESSAGE", `${where}: ${issue?.message ?? "invalid"}`);
  }
  return parsed.data;
}

/** Best effort: the routing fields of a message that failed validation, so its sender still hears back. */
export function peekRouting(data: Uint8Array): { id?: string; reply?: string } {
  try {
    const raw = decode(data) as Record<string, unknown> | null;
    if (!raw || typeof raw !== "object") return {};
    return {
      id: typeof raw.id === "string" ? raw.id : undefined,
      reply: typeof raw.reply === "string" && isSafeReplySubject(raw.reply) ? raw.reply : undefined,
    };
  } catch {
    return {};
  }
}
