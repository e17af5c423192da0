import t from "tap";
import { readFileSync } from "node:fs";
import { ErrorCodes, GsvError, isErrorCode, toGsvError } from "../shared/errors.js";
import { fromRoot } from "../shared/paths.js";

t.test("errors - every code is documented in docs/errors.md and every documented code exists", async (t) => {
  const doc = readFileSync(fromRoot("docs", "errors.md"), "utf8");
  const documented = new Set([...doc.matchAll(/^\| `([A-Z_]+)` \|/gm)].map((m) => m[1]));
  for (const code of Object.keys(ErrorCodes)) t.ok(documented.has(code), `${code} is in docs/errors.md`);
  for (const code of documented) t.ok(isErrorCode(code), `${code} in docs/errors.md is a real code`);
  for (const [code, e] of Object.entries(ErrorCodes)) t.match(doc, new RegExp(`\\| \`${code}\` \\| ${e.status} \\|`), `${code} documents status ${e.status}`);
});

t.test("errors - GsvError carries code, status and detail; unknown errors become INTERNAL", async (t) => {
  const e = new GsvError("REFERENCE_LENGTH", "2.1 s");
  t.equal(e.status, 400);
  t.same(e.toJSON(), { code: "REFERENCE_LENGTH", message: "2.1 s" });
  t.equal(new GsvError("OVERLOADED").message, ErrorCodes.OVERLOADED.message);
  t.equal(toGsvError(new Error("boom")).code, "INTERNAL");
  t.equal(toGsvError(e), e);
  // NATS timeouts (a node or stream leader going away) are transient, not bugs (cluster test under load).
  t.equal(toGsvError(Object.assign(new Error("TIMEOUT"), { code: "TIMEOUT" })).code, "STAGE_UNAVAILABLE");
  t.equal(toGsvError(Object.assign(new Error("no responders available"), { code: "503" })).code, "STAGE_UNAVAILABLE");
  t.equal(toGsvError(new Error("TIMEOUT")).code, "STAGE_UNAVAILABLE");
  t.equal(toGsvError(new Error("a timeout of the model")).code, "INTERNAL", "only NATS's own timeout message");
  t.notOk(isErrorCode("toString"));
});
