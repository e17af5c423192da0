/**
 * Regression: a stage answers a failed work message on the message's own `reply` field, whatever it
 * named. A hostile message could make a stage publish into another stage's work queue
 * (`tts.v1.work.gpt`), cancel other requests (`tts.v1.cancel.<id>`), or talk to the JetStream API
 * (`$JS.API.…`; an empty body there deletes a stream - our events are msgpack, which the API refuses to
 * parse, but nothing should rely on that). Reply subjects must now be literal subjects outside `$…` and
 * outside the project's work/cancel subjects; such a message gets no reply at all.
 */
import t from "tap";
import { decode, encode } from "../shared/codec.js";
import { Subjects, WorkQueues, isSafeReplySubject } from "../shared/subjects.js";
import { startServices, withNats } from "./helpers/stack.js";

t.test("hostile reply subjects are refused", async (t) => {
  for (const s of ["$JS.API.STREAM.DELETE.TTS_GPT", "$SYS.REQ.SERVER.PING", "tts.v1.work.gpt", "tts.v1.cancel.abc", "tts.>", "a.*", "a b", "a..b", "", "x".repeat(300)]) t.notOk(isSafeReplySubject(s), JSON.stringify(s).slice(0, 40));
  for (const s of ["tts.v1.reply.abc", "_INBOX.XyZ123.4", "client.replies.7"]) t.ok(isSafeReplySubject(s), s);
});

t.test("a work message whose reply is another work queue or the JetStream API gets no reply there", async (t) => {
  const env = await withNats();
  const procs = await startServices(env.server.url, ["text-frontend"]);
  t.teardown(async () => {
    await Promise.all(procs.map((p) => p.stop()));
    await env.stop();
  });
  const jsm = await env.nc.jetstreamManager();
  const js = env.nc.jetstream();
  for (const stream of [WorkQueues.gpt.stream, WorkQueues.sovits.stream]) {
    await js.publish(WorkQueues.text.subject, encode({ id: "hostile", reply: `$JS.API.STREAM.DELETE.${stream}`, bogus: true }));
  }
  await js.publish(WorkQueues.text.subject, encode({ id: "inject", reply: WorkQueues.vocoder.subject, bogus: true }));
  // A malformed message with a proper reply, queued after them: once it is answered, they were handled.
  const reply = Subjects.reply("probe");
  const sub = env.nc.subscribe(reply, { max: 1, timeout: 20_000 });
  await js.publish(WorkQueues.text.subject, encode({ id: "probe", reply, bogus: true }));
  for await (const m of sub) t.equal((decode(m.data) as { code: string }).code, "MALFORMED_MESSAGE", "the probe got its error event");
  for (const stream of [WorkQueues.gpt.stream, WorkQueues.sovits.stream]) {
    const info = await jsm.streams.info(stream).catch(() => undefined);
    t.ok(info, `${stream} still exists`);
  }
  const vocoderQueue = await jsm.streams.info(WorkQueues.vocoder.stream);
  t.equal(vocoderQueue.state.messages, 0, "nothing was published into the vocoder's work queue");
});
