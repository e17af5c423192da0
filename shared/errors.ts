/**
 * The error catalogue: every error a request can end with, by code. A code carries its HTTP status and
 * whether a client may retry. docs/errors.md lists the same codes; test/errors.test.ts keeps them in step.
 */
export const ErrorCodes = {
  BAD_REQUEST: { status: 400, retry: false, message: "the request is malformed" },
  UNAUTHORIZED: { status: 401, retry: false, message: "a valid API key is required" },
  HEADERS_TOO_LARGE: { status: 431, retry: false, message: "the request line and headers are larger than 16 KB" },
  MISSING_TEXT: { status: 400, retry: false, message: "text is required and must not be empty" },
  TEXT_TOO_LONG: { status: 413, retry: false, message: "text is longer than the configured maximum" },
  SEGMENT_TOO_LONG: { status: 413, retry: false, message: "a segment's BERT features do not fit in one message; split the text into shorter segments" },
  NO_SPEAKABLE_TEXT: { status: 400, retry: false, message: "the text has nothing that can be spoken" },
  UNKNOWN_LANGUAGE: { status: 400, retry: false, message: "unknown language" },
  UNSUPPORTED_LANGUAGE: { status: 422, retry: false, message: "this language is not implemented yet" },
  BAD_PARAMETER: { status: 400, retry: false, message: "a parameter is out of range" },
  BAD_AUDIO: { status: 400, retry: false, message: "the reference is not readable audio" },
  REFERENCE_LENGTH: { status: 400, retry: false, message: "the reference must be 3 to 10 seconds long" },
  PATH_NOT_ALLOWED: { status: 403, retry: false, message: "the path is outside the voices directory" },
  UNKNOWN_MODEL_SET: { status: 400, retry: false, message: "no model set of that name is in the models root" },
  INCOMPATIBLE_MODEL_SETS: { status: 400, retry: false, message: "the GPT set and the SoVITS set do not fit together" },
  NOT_FOUND: { status: 404, retry: false, message: "not found" },
  MALFORMED_MESSAGE: { status: 400, retry: false, message: "a message failed its schema" },
  DEADLINE_EXCEEDED: { status: 504, retry: true, message: "the request did not finish before its deadline" },
  CANCELLED: { status: 499, retry: false, message: "the request was cancelled" },
  OVERLOADED: { status: 503, retry: true, message: "the server is at capacity" },
  STAGE_UNAVAILABLE: { status: 503, retry: true, message: "a stage service is not reachable" },
  MODEL_ERROR: { status: 500, retry: false, message: "a model failed to run" },
  INTERNAL: { status: 500, retry: false, message: "internal error" },
  NOT_SUPPORTED: { status: 400, retry: false, message: "this parameter value or feature is not supported by this server" },
  PAYLOAD_TOO_LARGE: { status: 413, retry: false, message: "the upload is larger than the configured maximum" },
  ALREADY_EXISTS: { status: 409, retry: false, message: "a voice with this id already exists" },
  ENCODER_UNAVAILABLE: { status: 501, retry: false, message: "the audio encoder (ffmpeg) is not installed" },
} as const;

export type ErrorCode = keyof typeof ErrorCodes;

export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === "string" && Object.hasOwn(ErrorCodes, code);
}

/** An error with a catalogue code. `detail` says what exactly was wrong, for the client. */
export class GsvError extends Error {
  override readonly name = "GsvError";
  readonly code: ErrorCode;
  constructor(code: ErrorCode, detail?: string, options?: ErrorOptions) {
    super(detail ?? ErrorCodes[code].message, options);
    this.code = code;
  }
  get status(): number {
    return ErrorCodes[this.code].status;
  }
  toJSON(): { code: ErrorCode; message: string } {
    return { code: this.code, message: this.message };
  }
}

/** Any thrown value as a GsvError; unknown errors become INTERNAL with their message kept. */
export function toGsvError(err: unknown): GsvError {
  if (err instanceof GsvError) return err;
  const message = err instanceof Error ? err.message : String(err);
  // A NATS request or JetStream API call that timed out or found no responder (a node or a stream leader
  // going away, e.g. during a leader election) is a transient unavailability, not a bug.
  const code = (err as { code?: unknown } | null)?.code;
  if (code === "TIMEOUT" || code === "503" || /^(TIMEOUT|no responders)/i.test(message)) {
    return new GsvError("STAGE_UNAVAILABLE", `NATS did not answer in time: ${message}`, { cause: err });
  }
  return new GsvError("INTERNAL", message, { cause: err });
}
