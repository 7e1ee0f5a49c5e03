// What outlives a young-generation collection, by where it was allocated: a preload for any
// process (and its worker threads) under a benchmark. By hand, not part of `make bench`:
//   NODE_OPTIONS=--import=./dist/bench/harness/survivors.js SURVIVORS_DIR=/tmp/survivors \
//     node dist/bench/lanes-cpu.js 15000 8
// Racks started by the benchmark inherit NODE_OPTIONS, so every process and thread writes
// SURVIVORS_DIR/survivors-<pid>-<thread id>.heapprofile (a sampling heap profile, as DevTools
// reads it) over SURVIVORS_MS (6,000) after SURVIVORS_AFTER_MS (4,000).
//
// Why: an object that dies young costs the scavenger nothing; one alive at a scavenge is copied,
// and at its second promoted, to be marked and swept later. Allocation profiles show what is
// made; this shows what is kept, with SURVIVORS_ALL=1 everything sampled, for the ratio per site.
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';
import { join } from 'node:path';
import { threadId } from 'node:worker_threads';

const dir = process.env.SURVIVORS_DIR;
if (dir !== undefined) {
  const session = new Session();
  session.connect();
  const post = (method: string, params: object = {}) =>
    new Promise<unknown>((resolve, reject) => session.post(method, params, (err, result) => (err ? reject(err) : resolve(result))));
  const after = Number(process.env.SURVIVORS_AFTER_MS ?? 4000);
  const span = Number(process.env.SURVIVORS_MS ?? 6000);
  setTimeout(async () => {
    await post('HeapProfiler.enable');
    await post('HeapProfiler.startSampling', {
      samplingInterval: 4096,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: process.env.SURVIVORS_ALL === '1',
    });
    setTimeout(async () => {
      const { profile } = (await post('HeapProfiler.stopSampling')) as { profile: unknown };
      writeFileSync(join(dir, `survivors-${process.pid}-${threadId}.heapprofile`), JSON.stringify(profile));
    }, span).unref();
  }, after).unref();
}
