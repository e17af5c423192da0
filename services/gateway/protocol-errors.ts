/**
 * Requests that Node's HTTP parser refuses (malformed request line or headers, headers over the 16 KB
 * limit) never reach the gateway's routes; Node would answer them with a bare status and no body. Answer
 * them like every other failure instead: a coded JSON error, then close the connection.
 */
import type { Server } from "node:http";
import type { Duplex } from "node:stream";
import { GsvError } from "../../shared/errors.js";

/**
 * The request target as a URL on this server. `new URL(target, base)` reads `//host/…` as another host
 * and throws on some (an INTERNAL error, found by the fuzzer); the path is always taken as a path here.
 */
export function requestUrl(target: string | undefined): URL {
  const t = target ?? "/";
  try {
    return new URL(`http://localhost${t.startsWith("/") ? t : `/${t}`}`);
  } catch {
    throw new GsvError("BAD_REQUEST", "the request target is not a valid path");
  }
}

export function answerProtocolErrors(server: Server): void {
  // CONNECT (a proxy tunnel) is not a route here: without a listener Node would just drop the socket.
  server.on("connect", (_req, socket: Duplex) => {
    const e = new GsvError("BAD_REQUEST", "CONNECT is not supported");
    const body = JSON.stringify({ code: e.code, message: e.message, Exception: e.message });
    socket.end(`HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  });
  server.on("clientError", (err: NodeJS.ErrnoException, socket: Duplex) => {
    if (err.code === "ECONNRESET" || !socket.writable) {
      socket.destroy();
      return;
    }
    const e = err.code === "HPE_HEADER_OVERFLOW" ? new GsvError("HEADERS_TOO_LARGE") : new GsvError("BAD_REQUEST", `the HTTP request is malformed (${err.code ?? err.message})`);
    const body = JSON.stringify({ code: e.code, message: e.message, Exception: e.message });
    socket.end(`HTTP/1.1 ${e.status} ${e.status === 431 ? "Request Header Fields Too Large" : "Bad Request"}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
  });
}
