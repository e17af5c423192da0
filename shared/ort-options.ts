import type { InferenceSession } from "onnxruntime-node";

/**
 * Session options every onnxruntime session of the project uses. One intra-op thread by default (on a
 * 2-core machine more threads per session were slower; scale with worker threads and replicas instead).
 * Denormals are flushed to zero: masked attention scores underflow `exp` into denormals, which made
 * Softmax about 3x slower on this CPU.
 */
export function sessionOptions(intraOpThreads = 1): InferenceSession.SessionOptions {
  return {
    intraOpNumThreads: intraOpThreads,
    interOpNumThreads: 1,
    executionMode: "sequential",
    graphOptimizationLevel: "all",
    extra: { session: { set_denormal_as_zero: "1" } },
  };
}
