import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { entityId, EntityType, entityTypeOf, isUuidV7, machineHintOf, parseUuid, setMachineId, uuidToString, uuidv7, uuidv7Time } from '../src/fluxmsg/mod.js';
import { holdClock, releaseClock } from '../src/fluxmsg/uuid.js';

function compare(a: Uint8Array, b: Uint8Array): number {
  return Buffer.compare(a, b);
}

describe('uuidv7', () => {
  it('sets the version and variant bits and the current millisecond', () => {
    const before = Date.now();
    const id = uuidv7();
    const after = Date.now();
    assert.equal(id.length, 16);
    assert.ok(isUuidV7(id));
    assert.equal(id[6]! >> 4, 7);
    assert.equal(id[8]! >> 6, 0b10);
    const t = uuidv7Time(id);
    assert.ok(t >= before && t <= after, `${t} not within [${before}, ${after}]`);
  });

  it('is strictly increasing across 200,000 ids (many share a millisecond)', () => {
    let prev = uuidv7();
    let sameMs = 0;
    for (let i = 0; i < 200_000; i++) {
      const next = uuidv7();
      if (uuidv7Time(next) === uuidv7Time(prev)) sameMs++;
      assert.ok(compare(prev, next) < 0, `not increasing at ${i}: ${uuidToString(prev)} >= ${uuidToString(next)}`);
      prev = next;
    }
    assert.ok(sameMs > 1000, 'the test must exercise ids within one millisecond');
  });

  it('ids made while the clock is held share its reading, still strictly increasing; after the release they read it again', () => {
    const before = Date.now();
    holdClock();
    let held: number;
    const ids: Uint8Array[] = [];
    try {
      ids.push(uuidv7());
      held = uuidv7Time(ids[0]!);
      assert.ok(held >= before);
      holdClock(); // holds nest: the outer reading stays
      try {
        const until = Date.now() + 5;
        while (Date.now() <= until) ids.push(uuidv7()); // the wall clock moves on meanwhile
      } finally {
        releaseClock();
      }
      ids.push(uuidv7());
    } finally {
      releaseClock();
    }
    for (const id of ids) assert.equal(uuidv7Time(id), held);
    for (let i = 1; i < ids.length; i++) assert.ok(compare(ids[i - 1]!, ids[i]!) < 0, `not increasing at ${i}`);
    const after = uuidv7();
    assert.ok(uuidv7Time(after) > held, 'released: the clock is read again');
    assert.ok(compare(ids.at(-1)!, after) < 0);
  });

  it('round-trips through the text form', () => {
    const id = uuidv7();
    const text = uuidToString(id);
    assert.match(text, /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    assert.deepEqual(parseUuid(text), id);
    assert.throws(() => parseUuid('not-a-uuid'), RangeError);
  });
});

describe('entityId', () => {
  it('embeds each entity type and reads it back', () => {
    for (const [name, type] of Object.entries(EntityType)) {
      const id = entityId(type);
      assert.ok(isUuidV7(id), name);
      assert.equal(entityTypeOf(id), type, name);
    }
  });

  it("is laid out as fluxrig's: the type in byte 13, the machine id's last 4 bytes in bytes 9-12", () => {
    const machine = parseUuid('0190a1b2-c3d4-7e5f-8a6b-7c8d9eafb0c1');
    setMachineId(machine);
    try {
      const id = entityId(EntityType.Rack);
      assert.equal(id[13], EntityType.Rack);
      assert.deepEqual([...machineHintOf(id)], [...machine.subarray(12, 16)]);
      assert.ok(isUuidV7(id));
      // A nil machine id (a rack not enrolled yet) leaves those bytes random, as fluxrig does.
      setMachineId(new Uint8Array(16));
      const ids = Array.from({ length: 8 }, () => machineHintOf(entityId(EntityType.Gear)).join(','));
      assert.ok(new Set(ids).size > 1);
    } finally {
      setMachineId(new Uint8Array(16));
    }
  });

  it('entity ids made in the same millisecond still sort in creation order', () => {
    const ids = Array.from({ length: 2000 }, (_, i) => entityId(i % 2 ? EntityType.Gear : EntityType.Mixer));
    for (let i = 1; i < ids.length; i++) assert.ok(compare(ids[i - 1]!, ids[i]!) < 0, `id ${i}`);
  });

  it('refuses an unknown type', () => {
    assert.throws(() => entityId(0x01 as EntityType), /unknown entity type 0x1/);
    assert.throws(() => entityId(0x0d as EntityType), /unknown entity type 0xd/);
  });

  it('stays ordered by creation', () => {
    const a = entityId(EntityType.Gear);
    const b = entityId(EntityType.Mixer);
    assert.ok(compare(a, b) < 0);
  });
});
