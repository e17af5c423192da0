/**
 * A small multipart/form-data parser (RFC 7578) for voice uploads. The body is already read into
 * memory with a size limit, so this only splits it: parts are separated by CRLF--boundary, each part
 * has headers, a blank line and its bytes. Nested multipart and transfer encodings are not used by
 * browsers, curl or any HTTP client for form uploads, and are refused.
 */
import { GsvError } from "../../shared/errors.js";

export interface FormPart {
  name: string;
  filename?: string;
  contentType?: string;
  data: Buffer;
}

export function boundaryOf(contentType: string | undefined): string {
  const m = /^multipart\/form-data\s*;(.*)$/i.exec(contentType ?? "");
  if (!m) throw new GsvError("BAD_REQUEST", "the body must be multipart/form-data (an audio file and text fields)");
  const b = /(?:^|;)\s*boundary\s*=\s*(?:"([^"]+)"|([^;\s]+))/i.exec(m[1]);
  const boundary = b?.[1] ?? b?.[2];
  if (!boundary || boundary.length > 200) throw new GsvError("BAD_REQUEST", "multipart/form-data without a boundary");
  return boundary;
}

function headerParam(value: string, key: string): string | undefined {
  const re = new RegExp(`(?:^|;)\\s*${key}\\s*=\\s*(?:"((?:[^"\\\\]|\\\\.)*)"|([^;\\s]+))`, "i");
  const m = re.exec(value);
  if (!m) return undefined;
  return m[1] !== undefined ? m[1].replace(/\\(.)/g, "$1") : m[2];
}

export function parseMultipart(body: Buffer, boundary: string, maxParts = 32): FormPart[] {
  const delim = Buffer.from(`--${boundary}`);
  const parts: FormPart[] = [];
  let pos = body.indexOf(delim);
  if (pos < 0) throw new GsvError("BAD_REQUEST", "multipart body without its boundary");
  for (;;) {
    pos += delim.length;
    if (body[pos] === 0x2d && body[pos + 1] === 0x2d) break; // closing --boundary--
    if (body[pos] === 0x0d && body[pos + 1] === 0x0a) pos += 2;
    else throw new GsvError("BAD_REQUEST", "malformed multipart body (no CRLF after a boundary)");
    const headEnd = body.indexOf("\r\n\r\n", pos);
    if (headEnd < 0) throw new GsvError("BAD_REQUEST", "malformed multipart body (a part without headers)");
    const headers = new Map<string, string>();
    for (const line of body.subarray(pos, headEnd).toString("utf8").split("\r\n")) {
      const i = line.indexOf(":");
      if (i > 0) headers.set(line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim());
    }
    const next = body.indexOf(Buffer.concat([Buffer.from("\r\n"), delim]), headEnd + 4);
    if (next < 0) throw new GsvError("BAD_REQUEST", "malformed multipart body (a part is not terminated)");
    const disp = headers.get("content-disposition") ?? "";
    if (!/^form-data\b/i.test(disp)) throw new GsvError("BAD_REQUEST", "a multipart part is not form-data");
    const name = headerParam(disp, "name");
    if (!name) throw new GsvError("BAD_REQUEST", "a multipart part has no name");
    if (headers.has("content-transfer-encoding") && !/^(binary|8bit|7bit)$/i.test(headers.get("content-transfer-encoding")!)) {
      throw new GsvError("BAD_REQUEST", "multipart content-transfer-encoding other than binary is not supported");
    }
    parts.push({ name, filename: headerParam(disp, "filename"), contentType: headers.get("content-type"), data: body.subarray(headEnd + 4, next) });
    if (parts.length > maxParts) throw new GsvError("BAD_REQUEST", `more than ${maxParts} form fields`);
    pos = next + 2;
  }
  return parts;
}
