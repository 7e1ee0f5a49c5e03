import { MessageChannel, type MessagePort, receiveMessageOnPort, Worker } from 'node:worker_threads';
import type { HttpRequest, HttpResponse, SyncHttpClient } from './host.js';

const HELPER = new URL('./http-helper.js', import.meta.url);

export interface HelperRequest extends HttpRequest {
  id: number;
  timeoutMs: number;
}
export interface HelperResponse extends HttpResponse {
  id: number;
}

/**
 * A blocking HTTP client for a worker thread: a helper thread runs fetch while the caller
 * waits on a shared flag, then takes the answer off the port synchronously. Only for threads
 * that may block (rack workers), never the main thread.
 */
export class BlockingHttpClient implements SyncHttpClient {
  private readonly port: MessagePort;
  private readonly flag = new Int32Array(new SharedArrayBuffer(4));
  private readonly helper: Worker;
  private nextId = 1;

  constructor() {
    const { port1, port2 } = new MessageChannel();
    this.port = port1;
    this.helper = new Worker(HELPER, { workerData: { port: port2, flag: this.flag.buffer }, transferList: [port2] });
    this.helper.unref();
    this.port.unref();
  }

  request(req: HttpRequest, timeoutMs: number): HttpResponse {
    const id = this.nextId++;
    Atomics.store(this.flag, 0, 0);
    this.port.postMessage({ ...req, id, timeoutMs } satisfies HelperRequest);
    const deadline = Date.now() + timeoutMs + 100;
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) return { status: 0, body: new Uint8Array(0), error: `timed out after ${timeoutMs} ms` };
      Atomics.wait(this.flag, 0, 0, left);
      Atomics.store(this.flag, 0, 0);
      // Late answers to earlier, timed-out requests are skipped by id.
      for (let m = receiveMessageOnPort(this.port); m !== undefined; m = receiveMessageOnPort(this.port)) {
        const res = m.message as HelperResponse;
        if (res.id === id) return { status: res.status, body: res.body, error: res.error };
      }
    }
  }

  close(): Promise<number> {
    this.port.close();
    return this.helper.terminate();
  }
}
