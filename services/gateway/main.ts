/** gateway: HTTP in, NATS out. */
import { loadConfig } from "../../shared/config.js";
import { log } from "../../shared/log.js";
import { connectNats, defaultQueueLimits, ensureAllQueues, refAudioStore, voicesBucket } from "../../shared/nats.js";
import { runUntilSignalled } from "../../shared/stage.js";
import { VoiceRegistry, voiceRegistryBucket } from "../../shared/voice-registry.js";
import { Admission } from "./admission.js";
import { Gateway } from "./http.js";
import { ModelSelector } from "./model-sets.js";
import { DEFAULT_MAX_UPLOAD_BYTES } from "./routes/voices.js";
import { tracer } from "../../shared/trace.js";

const cfg = loadConfig("gateway");
const nc = await connectNats({ url: cfg.natsUrl, name: cfg.replica });
await ensureAllQueues(nc, { ...defaultQueueLimits, ackWaitMs: cfg.ackWaitMs }); // the stages' ack wait, not the default
await voicesBucket(nc);
const refAudio = await refAudioStore(nc);
const gw = new Gateway({
  nc,
  refAudio,
  registry: new VoiceRegistry(await voiceRegistryBucket(nc), refAudio),
  voicesDir: cfg.voicesDir,
  requestTimeoutMs: cfg.requestTimeoutMs,
  maxInflight: Number(process.env.GSV_MAX_INFLIGHT ?? 64),
  maxUploadBytes: Number(process.env.GSV_MAX_UPLOAD_BYTES ?? DEFAULT_MAX_UPLOAD_BYTES),
  // /control?command=exit: the same graceful path as SIGTERM (stop accepting, finish in-flight, drain NATS).
  onExit: () => process.kill(process.pid, "SIGTERM"),
  admission: new Admission(Admission.fromEnv(64)).watchQueues(nc),
  models: await new ModelSelector(nc, cfg.modelsRoot).start(),
});
tracer.init("gateway", cfg.replica);
const port = await gw.listen(cfg.port, cfg.host);
const url = `http://${cfg.host}:${port}`;
await gw.observer.register(nc, cfg.replica, () => gw.inflight, { url, metrics: `${url}/metrics` });
log.info("gateway ready", { url });
process.stdout.write(JSON.stringify({ ready: "gateway", url }) + "\n");
runUntilSignalled("gateway", async () => {
  await gw.close();
  gw.o.models?.stop();
  await nc.drain();
});
