// Runs fetch for a BlockingHttpClient and wakes its caller when the answer is on the port.
import { type MessagePort, workerData } from 'node:worker_threads';
import type { HelperRequest, HelperResponse } from './http-bridge.js';

const { port, flag } = workerData as { port: MessagePort; flag: SharedArrayBuffer };
const wake = new Int32Array(flag);

port.on('message', async (req: HelperRequest) => {
  let res: HelperResponse;
  try {
    const answer = await fetch(req.url, { method: req.method, body: req.body, signal: AbortSignal.timeout(req.timeoutMs), redirect: 'manual' });
    res = { id: req.id, status: answer.status, body: new Uint8Array(await answer.arrayBuffer()) };
  } catch (err) {
    res = { id: req.id, status: 0, body: new Uint8Array(0), error: (err as Error).message };
  }
  port.postMessage(res);
  Atomics.store(wake, 0, 1);
  Atomics.notify(wake, 0);
});
