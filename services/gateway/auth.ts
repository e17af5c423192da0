/**
 * API-key check of the gateway. With GSV_API_KEY set, every route except /health needs the key, as
 * `Authorization: Bearer <key>` or `X-API-Key: <key>`; otherwise the request ends with UNAUTHORIZED (401).
 * Unset or empty: no check. Keys are compared in constant time (as SHA-256 digests, so lengths do not leak).
 */
import { createHash, timingSafeEqual } from "node:crypto";
import type { IncomingMessage } from "node:http";
import { GsvError } from "../../shared/errors.js";

/** Routes that answer without a key: load balancers and Kubernetes probes call them. */
export const PUBLIC_PATHS: ReadonlySet<string> = new Set(["/health"]);

const digest = (s: string) => createHash("sha256").update(s, "utf8").digest();

/** The key a request presents, if any. */
export function presentedKey(req: IncomingMessage): string | undefined {
  const auth = req.headers.authorization;
  if (typeof auth === "string") {
    const m = /^Bearer\s+(.+)$/i.exec(auth.trim());
    if (m) return m[1].trim();
  }
  const x = req.headers["x-api-key"];
  return typeof x === "string" && x.trim() ? x.trim() : undefined;
}

/** Throws UNAUTHORIZED unless the request may reach `path`. */
export function checkApiKey(req: IncomingMessage, path: string, key: string | undefined = process.env.GSV_API_KEY): void {
  if (!key || PUBLIC_PATHS.has(path)) return;
  const given = presentedKey(req);
  if (given === undefined) throw new GsvError("UNAUTHORIZED", "this server needs an API key: send Authorization: Bearer <key> or X-API-Key: <key>");
  if (!timingSafeEqual(digest(given), digest(key))) throw new GsvError("UNAUTHORIZED", "the API key is not valid");
}
