/**
 * One onnxruntime worker thread: owns one session per graph, runs one call at a time.
 * onnxruntime-node's run() blocks its thread, so it never runs on a service's event loop.
 */
import { parentPort, workerData } from "node:worker_threads";
import * as ort from "onnxruntime-node";
import type { Feeds, GraphInput, TensorLike } from "./tensor.js";
import { sessionOptions } from "./ort-options.js";

interface Init {
  graphs: Record<string, string>;
  intraOpThreads: number;
}
interface RunMsg {
  id: number;
  graph: string;
  feeds: Feeds;
}

const init = workerData as Init;
const sessions = new Map<string, ort.InferenceSession>();

async function load(): Promise<void> {
  for (const [name, path] of Object.entries(init.graphs)) {
    sessions.set(
      name,
      await ort.InferenceSession.create(path, sessionOptions(init.intraOpThreads)),
    );
  }
}

/** Each graph's inputs, names and shapes (a symbolic dimension as its name), so callers can tell what a graph takes. */
function inputsOf(): Record<string, GraphInput[]> {
  const out: Record<string, GraphInput[]> = {};
  for (const [name, s] of sessions) {
    out[name] = s.inputNames.map((n, i) => {
      const meta = s.inputMetadata?.[i];
      return { name: n, shape: meta && meta.isTensor ? [...meta.shape] : [] };
    });
  }
  return out;
}

const ready = load().then(
  () => parentPort!.postMessage({ ready: true, inputs: inputsOf() }),
  (err: Error) => parentPort!.postMessage({ ready: false, error: err.message }),
);

parentPort!.on("message", async (msg: RunMsg) => {
  await ready;
  try {
    const session = sessions.get(msg.graph);
    if (!session) throw new Error(`graph ${msg.graph} is not loaded in this worker`);
    const feeds: Record<string, ort.Tensor> = {};
    for (const [name, t] of Object.entries(msg.feeds)) feeds[name] = new ort.Tensor(t.type, t.data, t.dims);
    const out = await session.run(feeds);
    const result: Record<string, TensorLike> = {};
    const transfer: ArrayBuffer[] = [];
    for (const [name, t] of Object.entries(out)) {
      const data = t.data as TensorLike["data"];
      result[name] = { type: t.type as TensorLike["type"], data, dims: [...t.dims] };
      if (data.buffer instanceof ArrayBuffer) transfer.push(data.buffer);
    }
    parentPort!.postMessage({ id: msg.id, result }, transfer);
  } catch (err) {
    parentPort!.postMessage({ id: msg.id, error: (err as Error).message });
  }
});
