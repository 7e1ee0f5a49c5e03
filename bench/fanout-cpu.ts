// By hand, not part of `make bench`: the pub/sub fan-out's CPU per delivery, on each side.
//
//   node dist/bench/fanout-cpu.js [ROUNDS] [MESSAGES]
//
// FLUXAR (the benchmark's broker process, fixtures/pubsub-server.ts) and NATS (nats-server)
// take turns over ROUNDS rounds, each round starting with the other. In a round each system
// gets 100 fresh subscribers in this process, a warm-up burst of 3,000 messages, then a burst of
// MESSAGES 128-byte messages (a flush every 100), as `make bench-pubsub` sends its bursts. For
// the measured burst it prints deliveries/s and the CPU per delivery of this process (the
// subscribers and the publisher) and of the broker process, read from /proc. The fan-out's rate
// is bound by whichever of the two is busier, and their CPU per delivery moves far less from
// minute to minute than the rate does: it is the figure to compare two builds by.
import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { NatsServerProcess } from '../test/harness/nats.js';
import { fluxarSystem, natsSystem, type System } from './fixtures/pubsub-systems.js';
import { threadCpuSeconds } from './harness/threads.js';

const ROUNDS = Number(process.argv[2] ?? 4);
const MESSAGES = Number(process.argv[3] ?? 20_000);
const SUBSCRIBERS = 100;
const WARM_UP = 3000;
const TOPIC = 'bench.fanout';

const cpuSeconds = (pid: number) => [...threadCpuSeconds(pid).values()].reduce((a, b) => a + b, 0);
const turn = () => new Promise((resolve) => setImmediate(resolve));

async function fanout(system: System, brokerPid: number): Promise<{ perSecond: number; selfNs: number; brokerNs: number }> {
  let delivered = 0;
  let lastAt = 0;
  await system.subscribe(SUBSCRIBERS, TOPIC, () => {
    delivered++;
    lastAt = performance.now();
  });
  async function burst(messages: number) {
    delivered = 0;
    const began = performance.now();
    const self = cpuSeconds(process.pid);
    const broker = cpuSeconds(brokerPid);
    for (let i = 0; i < messages; i++) {
      void system.publish(TOPIC, new Uint8Array(128));
      if (i % 100 === 99) await system.flush();
    }
    await system.flush();
    const deadline = Date.now() + 60_000;
    while (delivered < messages * SUBSCRIBERS) {
      if (Date.now() > deadline) throw new Error(`${delivered} of ${messages * SUBSCRIBERS} deliveries after a minute`);
      await turn();
    }
    const perDelivery = (seconds: number) => Math.round((seconds * 1e9) / delivered);
    return {
      perSecond: Math.round(delivered / ((lastAt - began) / 1000)),
      selfNs: perDelivery(cpuSeconds(process.pid) - self),
      brokerNs: perDelivery(cpuSeconds(brokerPid) - broker),
    };
  }
  try {
    await burst(WARM_UP);
    return await burst(MESSAGES);
  } finally {
    await system.close();
  }
}

const broker: ChildProcess = spawn(process.execPath, [new URL('./fixtures/pubsub-server.js', import.meta.url).pathname], {
  stdio: ['pipe', 'pipe', 'inherit'],
});
const first = await createInterface({ input: broker.stdout! })[Symbol.asyncIterator]().next();
const fluxar = JSON.parse(first.value as string) as { url: string; pid: number };
const nats = await NatsServerProcess.start();
const natsPid = nats.pid;
try {
  if (natsPid === undefined) throw new Error('nats-server started without a pid');
  console.log('round  system  deliveries/s  ns per delivery: subscribers+publisher  broker');
  for (let round = 0; round < ROUNDS; round++) {
    const order = round % 2 === 0 ? (['fluxar', 'nats'] as const) : (['nats', 'fluxar'] as const);
    for (const system of order) {
      const r = system === 'fluxar' ? await fanout(fluxarSystem(fluxar.url), fluxar.pid) : await fanout(natsSystem(nats.url), natsPid);
      console.log(
        `${String(round).padStart(5)}  ${system.padStart(6)}  ${String(r.perSecond).padStart(12)}  ${String(r.selfNs).padStart(39)}  ${String(r.brokerNs).padStart(6)}`,
      );
    }
  }
} finally {
  broker.stdin!.end();
  await nats.stop();
}
