/** Test harness: a real nats-server on a free loopback port, real service processes from dist/. */
import { connect, type NatsConnection } from "nats";
import { startNatsServer, startService, type NatsServer, type ServiceName, type ServiceProcess } from "../../tools/launch.js";

export { startNatsServer, startService };
export type { NatsServer, ServiceName, ServiceProcess };

/** Fast redelivery in tests, so a killed replica's work comes back within a couple of seconds. */
export const TEST_ENV = { GSV_ACK_WAIT_MS: "1500", GSV_LOG: "warn" };

export async function withNats(): Promise<{ server: NatsServer; nc: NatsConnection; stop(): Promise<void> }> {
  const server = await startNatsServer();
  const nc = await connect({ servers: server.url });
  return {
    server,
    nc,
    async stop() {
      await nc.close();
      await server.stop();
    },
  };
}

export async function startServices(natsUrl: string, names: readonly ServiceName[], env: Record<string, string> = {}): Promise<ServiceProcess[]> {
  return Promise.all(names.map((n) => startService(n, { NATS_URL: natsUrl, PORT: "0", ...TEST_ENV, ...env })));
}
