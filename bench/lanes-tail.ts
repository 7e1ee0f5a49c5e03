// Where a guaranteed message's tail appears, in time: the chain of `make bench-lanes` at one
// offered rate, watched in 50 ms windows at two points. By hand, not part of `make bench`:
//   node dist/bench/lanes-tail.js [RATE=9000] [SECONDS=10] [--all]
// - `lane`: a core subscriber on rack A's lane subject sees each message when nats-server takes
//   rack A's publish in, before the stream stores it and before rack B pulls it;
// - `end`: the subject rack B's nats gear publishes to, the chain's end;
// and two controls in the same windows, so that a stall of the observer or of nats-server as a
// whole is told apart from one of the racks: this process's own timer lag, and its round trip to
// nats-server (a flush every 10 ms). Latency runs from the fluxMsg's ts, made by rack A's
// generator. Prints how many windows had a maximum over 25 ms at each point and, with --all,
// every such window.
import { connect as natsConnect } from '@nats-io/transport-node';
import { decodeFluxMsg } from '../src/fluxmsg/codec.js';
import { nowNs } from '../src/fluxmsg/fluxmsg.js';
import { NatsServerProcess } from '../test/harness/nats.js';
import { chain, OUT, startChainRacks } from './fixtures/lanes-chain.js';

const RATE = Number(process.argv[2] ?? 9000);
const SECONDS = Number(process.argv[3] ?? 10);
const ALL = process.argv.includes('--all');
const WARMUP_MS = 3000;
const WINDOW_MS = 50;
const SLOW_MS = 25;
/** The first second after the subscriptions start is left out: their own start shows there. */
const SETTLE_MS = 1000;

interface Window {
  lane: number;
  end: number;
  laneCount: number;
  endCount: number;
  ownLag: number;
  rtt: number;
}

const nats = await NatsServerProcess.start({ jetstream: true });
const nc = await natsConnect({ servers: nats.url });
let stopRacks = async () => {};
const windows = new Map<number, Window>();
let started = 0;
function windowNow(): Window {
  const at = Math.floor((performance.now() - started) / WINDOW_MS);
  let w = windows.get(at);
  if (w === undefined) {
    w = { lane: 0, end: 0, laneCount: 0, endCount: 0, ownLag: 0, rtt: 0 };
    windows.set(at, w);
  }
  return w;
}
let watching = true;
let ticker: NodeJS.Timeout | undefined;
try {
  ({ stop: stopRacks } = await startChainRacks(chain('lanes-tail', RATE, 'guaranteed'), 'guaranteed', nats.url));
  await new Promise((resolve) => setTimeout(resolve, WARMUP_MS));
  started = performance.now();
  nc.subscribe('flux.msg.a.>', {
    callback: (_err, m) => {
      const w = windowNow();
      w.lane = Math.max(w.lane, Number(nowNs() - decodeFluxMsg(m.data).ts) / 1e6);
      w.laneCount++;
    },
  });
  nc.subscribe(OUT, {
    callback: (_err, m) => {
      const w = windowNow();
      w.end = Math.max(w.end, Number(nowNs() - decodeFluxMsg(m.data).ts) / 1e6);
      w.endCount++;
    },
  });
  let last = performance.now();
  ticker = setInterval(() => {
    const now = performance.now();
    const w = windowNow();
    w.ownLag = Math.max(w.ownLag, now - last - 2);
    last = now;
  }, 2);
  const pinging = (async () => {
    while (watching) {
      const sent = performance.now();
      await nc.flush();
      const w = windowNow();
      w.rtt = Math.max(w.rtt, performance.now() - sent);
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
  })();
  await new Promise((resolve) => setTimeout(resolve, SECONDS * 1000));
  watching = false;
  await pinging;
} finally {
  watching = false;
  clearInterval(ticker);
  await stopRacks();
  await nc.close();
  await nats.stop();
}

const seen = [...windows.entries()].filter(([at]) => at * WINDOW_MS >= SETTLE_MS).sort((a, b) => a[0] - b[0]);
const count = (slow: (w: Window) => boolean) => seen.filter(([, w]) => slow(w)).length;
console.log(`offered ${RATE}/s, ${seen.length} windows of ${WINDOW_MS} ms; windows whose slowest message took over ${SLOW_MS} ms:`);
console.log(`  at nats-server (lane subject): ${count((w) => w.lane > SLOW_MS)}`);
console.log(`    of them with this process's round trip to nats-server under 5 ms: ${count((w) => w.lane > SLOW_MS && w.rtt < 5)}`);
console.log(`  at the chain's end: ${count((w) => w.end > SLOW_MS)}`);
console.log(`  controls: own timer lag over 10 ms ${count((w) => w.ownLag > 10)}, round trip over 10 ms ${count((w) => w.rtt > 10)}`);
if (ALL) {
  for (const [at, w] of seen) {
    if (w.lane <= SLOW_MS && w.end <= SLOW_MS) continue;
    console.log(
      `  ${((at * WINDOW_MS) / 1000).toFixed(2)} s  lane ${w.lane.toFixed(1)} ms (${w.laneCount})  end ${w.end.toFixed(1)} ms (${w.endCount})  own lag ${w.ownLag.toFixed(1)}  rtt ${w.rtt.toFixed(1)}`,
    );
  }
}
