/** Pieces every route module shares: the route type, body reading, JSON answers, error shapes. */
import type { IncomingMessage, ServerResponse } from "node:http";
import { GsvError } from "../../shared/errors.js";
import type { SynthesisResult } from "../../shared/client.js";

/** Prefix that names a registered voice wherever a reference path is accepted ("voice:<id>"). */
export const VOICE_PREFIX = "voice:";

/**
 * How a route family renders errors: `api_v2` as upstream plus our code ({"code", "message",
 * "Exception"}), `openai` as OpenAI's API does ({"error": {"message", "type", "param", "code"}}).
 */
export type ErrorStyle = "api_v2" | "openai";

export interface Ctx {
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  /** Capture groups of the route's path pattern. */
  params: string[];
}

export interface Route {
  method: "GET" | "POST" | "DELETE";
  /** An exact path, or a pattern matched against the whole path. */
  path: string | RegExp;
  style?: ErrorStyle;
  handle(ctx: Ctx): Promise<void>;
}

export function readBody(req: IncomingMessage, max: number, what = "the request body"): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers["content-length"] ?? 0);
    if (declared > max) {
      reject(new GsvError("PAYLOAD_TOO_LARGE", `${what} is ${declared} bytes; the maximum is ${max}`));
      req.resume();
      return;
    }
    const chunks: Buffer[] = [];
    let n = 0;
    let over = false;
    req.on("data", (c: Buffer) => {
      if (over) return;
      n += c.length;
      if (n > max) {
        over = true;
        reject(new GsvError("PAYLOAD_TOO_LARGE", `${what} is larger than ${max} bytes`));
        return; // keep reading (and discarding) so the error answer can still be delivered
      }
      chunks.push(c);
    });
    req.on("end", () => resolve(Buffer.concat(chunks)));
    req.on("error", reject);
  });
}

/** A JSON object body; BAD_REQUEST when it is not one. */
export async function readJsonObject(req: IncomingMessage, max: number): Promise<Record<string, unknown>> {
  const body = await readBody(req, max).catch((e: unknown) => {
    // The api_v2 body limit keeps its historical code (a huge body is almost always a huge text).
    if (e instanceof GsvError && e.code === "PAYLOAD_TOO_LARGE") throw new GsvError("TEXT_TOO_LONG", e.message);
    throw e;
  });
  let raw: unknown;
  try {
    raw = JSON.parse(body.toString("utf8"));
  } catch {
    throw new GsvError("BAD_REQUEST", "the body is not valid JSON");
  }
  if (!raw || typeof raw !== "object" || Array.isArray(raw)) throw new GsvError("BAD_REQUEST", "the body must be a JSON object");
  return raw as Record<string, unknown>;
}

export function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const data = JSON.stringify(body);
  res.writeHead(status, { ...headers, "Content-Type": "application/json", "Content-Length": Buffer.byteLength(data) });
  res.end(data);
}

const OPENAI_TYPES: Record<number, string> = { 400: "invalid_request_error", 404: "invalid_request_error", 409: "invalid_request_error", 413: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error", 503: "server_error", 504: "server_error" };

export function errorBody(e: GsvError, style: ErrorStyle): unknown {
  if (style === "openai") {
    const param = /^([a-z_]+):/.exec(e.message)?.[1] ?? null;
    return { error: { message: e.message, type: OPENAI_TYPES[e.status] ?? "server_error", param, code: e.code } };
  }
  // Upstream answers errors as {"message", "Exception"}; we add the code.
  return { code: e.code, message: e.message, Exception: e.message };
}

/** Server-Timing and X-Gsv-* headers of a synthesis: where the milliseconds went, per stage. */
export function timingHeaders(r: SynthesisResult, gatewayMs: number): Record<string, string> {
  const timing = [`gateway;dur=${gatewayMs}`, ...r.stages.flatMap((s) => [`${s.stage};dur=${s.computeMs};desc="compute x${s.units}"`, `${s.stage}-queue;dur=${s.queueMs}`]), `total;dur=${r.totalMs}`];
  return {
    "Server-Timing": timing.join(", "),
    "X-Request-Id": r.id,
    "X-Gsv-Segments": String(r.segments),
    "X-Gsv-Tokens": r.tokens.join(","),
    "X-Gsv-Sample-Rate": String(r.sampleRate),
    "X-Gsv-Stages": JSON.stringify(r.stages),
  };
}
