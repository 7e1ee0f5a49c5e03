import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { createInterface } from 'node:readline';
import { connect } from '../dist/src/fluxar/mod.js';
const prof = process.env.SPROF ? ['--cpu-prof', '--cpu-prof-dir=/tmp/prof/fan'] : [];
const child = spawn(process.execPath, [...prof, 'dist/bench/fixtures/pubsub-server.js'], { stdio: ['pipe', 'pipe', 'inherit'] });
const [line] = await once(createInterface({ input: child.stdout }), 'line');
const { url } = JSON.parse(line);
let delivered = 0;
const peers = [];
for (let i = 0; i < 100; i++) { const p = await connect(url); peers.push(p); const s = p.subscribe('f', { callback: () => delivered++ }); await s.ready; }
const pub = await connect(url);
const payload = Buffer.alloc(128);
const M = 5000;
const t0 = performance.now();
for (let i = 0; i < M; i++) { void pub.publish('f', payload); if (i % 100 === 99) await pub.call('x').catch(() => {}); }
while (delivered < M * 100 && performance.now() - t0 < 30000) await new Promise(r => setTimeout(r, 5));
console.log('deliveries/s', Math.round(delivered / ((performance.now() - t0) / 1000)), delivered);
child.stdin.end(); await once(child, 'exit'); process.exit(0);
