/** gateway: HTTP in, NATS out. */
import { loadConfig } from "../../shared/config.js";
import { log } from "../../shared/log.js";
import { connectNats, ensureAllQueues, refAudioStore, voicesBucket } from "../../shared/nats.js";
import { runUntilSignalled } from "../../shared/stage.js";
import { Admission } from "./admission.js";
import { Gateway } from "./http.js";

const cfg = loadConfig("gateway");
const nc = await connectNats({ url: cfg.natsUrl, name: cfg.replica });
await ensureAllQueues(nc);
await voicesBucket(nc);
const gw = new Gateway({
  nc,
  refAudio: await refAudioStore(nc),
  voicesDir: cfg.voicesDir,
  requestTimeoutMs: cfg.requestTimeoutMs,
  maxInflight: Number(process.env.GSV_MAX_INFLIGHT ?? 64),
  admission: new Admission(Admission.fromEnv(64)).watchQueues(nc),
});
const port = await gw.listen(cfg.port, cfg.host);
const url = `http://${cfg.host}:${port}`;
log.info("gateway ready", { url });
process.stdout.write(JSON.stringify({ ready: "gateway", url }) + "\n");
runUntilSignalled("gateway", async () => {
  await gw.close();
  await nc.drain();
});
