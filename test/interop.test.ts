// A second, independent CBOR implementation (the `cbor` package) reads what we write and writes
// what we read: the wire format is CBOR, not "whatever cbor-x does".
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import cbor from 'cbor';
import { decodeEnvelope, encodeEnvelope, MessageType } from '../src/fluxar/mod.js';
import { createFluxMsg, decodeFluxMsg, encodeFluxMsg, entityId, EntityType, uuidv7 } from '../src/mod.js';

describe('interop with an independent CBOR implementation', () => {
  it('a fluxMsg we encode decodes to the same fields', () => {
    const msg = createFluxMsg({
      ref_id: uuidv7(),
      trace: '4bf92f3577b34da6a3ce929d0e0e4736',
      meta: { k: 'v', binary: 'hex:00ff' },
      data: { amount: 12.25, count: 3, nested: { ok: true, list: [1, 'two', null] } },
      flags: 1,
      raw: new Uint8Array([9, 8, 7]),
      path: [{ g: entityId(EntityType.Gear), p: entityId(EntityType.PortInput), t: 1_700_000_000_000_000_123n }],
    });
    const theirs = cbor.decodeFirstSync(Buffer.from(encodeFluxMsg(msg))) as Record<string, unknown>;
    assert.deepEqual(Object.keys(theirs), ['id', 'ref_id', 'trace', 'src_id', 'meta', 'data', 'flags', 'raw', 'path', 'ts']);
    assert.ok(Buffer.isBuffer(theirs.id), 'id must be a plain byte string');
    assert.deepEqual([...(theirs.id as Buffer)], [...msg.id]);
    assert.deepEqual([...(theirs.ref_id as Buffer)], [...msg.ref_id!]);
    assert.equal(theirs.src_id, null);
    assert.equal(theirs.trace, msg.trace);
    assert.deepEqual(theirs.meta, msg.meta);
    assert.deepEqual(theirs.data, msg.data);
    assert.equal(theirs.flags, 1);
    assert.deepEqual([...(theirs.raw as Buffer)], [9, 8, 7]);
    const [hop] = theirs.path as Array<Record<string, unknown>>;
    assert.deepEqual([...(hop!.g as Buffer)], [...msg.path[0]!.g]);
    assert.equal(BigInt(hop!.t as bigint), msg.path[0]!.t);
    assert.equal(BigInt(theirs.ts as bigint), msg.ts);
  });

  it('a fluxMsg they encode decodes here to the same fields', () => {
    const id = Buffer.from(uuidv7());
    const gear = Buffer.from(entityId(EntityType.Gear));
    const wire = {
      id,
      ref_id: Buffer.alloc(16), // Go writes the zero UUID for "none"
      trace: 'abc',
      src_id: gear,
      meta: { a: 'b' },
      data: { n: 1, f: 1.5, s: 'x', b: Buffer.from([1]), m: { deep: [true, false] } },
      flags: 0,
      raw: null,
      path: [{ g: gear, p: gear, t: 42n }],
      ts: 1_795_000_000_000_000_000n,
    };
    const msg = decodeFluxMsg(cbor.encodeOne(wire, { collapseBigIntegers: true }));
    assert.deepEqual([...msg.id], [...id]);
    assert.equal(msg.ref_id, null);
    assert.deepEqual([...msg.src_id!], [...gear]);
    assert.equal(msg.trace, 'abc');
    assert.deepEqual(msg.meta, { a: 'b' });
    assert.equal(msg.data.n, 1);
    assert.equal(msg.data.f, 1.5);
    assert.deepEqual([...(msg.data.b as Uint8Array)], [1]);
    assert.deepEqual(msg.data.m, { deep: [true, false] });
    assert.equal(msg.path[0]!.t, 42n);
    assert.equal(msg.ts, 1_795_000_000_000_000_000n);
  });

  it('envelopes travel both ways', () => {
    const id = uuidv7();
    const ours = encodeEnvelope({ type: MessageType.Call, id, ref: null, target: 'a.b', meta: { x: 1 }, payload: { id: 42 }, error: null });
    const theirs = cbor.decodeFirstSync(Buffer.from(ours)) as unknown[];
    assert.equal(theirs.length, 7);
    assert.equal(theirs[0], 2);
    assert.deepEqual([...(theirs[1] as Buffer)], [...id]);
    assert.deepEqual(theirs.slice(2), [null, 'a.b', { x: 1 }, { id: 42 }, null]);

    const back = decodeEnvelope(cbor.encodeOne([7, Buffer.from(id), Buffer.from(id), 'topic', null, Buffer.from('hi'), { code: 503, message: 'gone' }]));
    assert.equal(back.type, MessageType.Message);
    assert.equal(Buffer.from(back.payload as Uint8Array).toString(), 'hi');
    assert.deepEqual(back.error, { code: 503, message: 'gone' });
  });
});
