import { type ConfigSchema, withDefaults } from '../gears/manifest.js';
import type { Scenario, WireSpec } from './types.js';

type ObjectSchema = Extract<ConfigSchema, { type: 'object' }>;

/**
 * How a guaranteed wire is consumed (per wire, next to from/to/lane). JetStream's own
 * max_deliver stays unlimited: the rack counts deliveries itself, so a message that exhausts
 * them is dead-lettered even when its attempts ended in timeouts rather than rejections.
 */
export const WIRE_DELIVERY_SCHEMA: ObjectSchema = {
  type: 'object',
  description: 'delivery settings of a guaranteed wire',
  properties: {
    ack_wait_ms: { type: 'integer', description: 'how long a delivery may take before it is redelivered', minimum: 100, default: 30_000 },
    max_deliver: { type: 'integer', description: 'attempts before the message goes to the dead-letter subject', minimum: 1, default: 5 },
    max_ack_pending: { type: 'integer', description: 'deliveries in flight on this wire (its backpressure)', minimum: 1, maximum: 1_000_000, default: 4096 },
    ordered: { type: 'boolean', description: 'deliver in stream order, through one worker', default: false },
  },
};

/** The JetStream stream a scenario's guaranteed wires share (the scenario's top-level `lanes`). */
export const LANES_SCHEMA: ObjectSchema = {
  type: 'object',
  description: "the JetStream stream of the scenario's guaranteed wires",
  properties: {
    replicas: { type: 'integer', description: 'stream replicas: 1 on one server, 3 on a cluster', minimum: 1, maximum: 5, default: 1 },
    max_age_ms: { type: 'integer', description: 'how long a message is kept', minimum: 1000, default: 7 * 24 * 3600 * 1000 },
    max_bytes: {
      type: 'integer',
      description: 'bytes the stream keeps (-1: no limit); beyond it publishes are refused, never old messages dropped',
      minimum: -1,
      default: -1,
    },
    duplicate_window_ms: { type: 'integer', description: 'how long a republished message id is recognised as a duplicate', minimum: 100, default: 120_000 },
    storage: { type: 'string', description: 'file (survives a server restart) or memory', enum: ['file', 'memory'], default: 'file' },
  },
};

export const WIRE_DELIVERY_KEYS = Object.keys(WIRE_DELIVERY_SCHEMA.properties);

export interface WireDelivery {
  ackWaitMs: number;
  maxDeliver: number;
  maxAckPending: number;
  ordered: boolean;
}

export interface LaneSettings {
  replicas: number;
  maxAgeMs: number;
  maxBytes: number;
  duplicateWindowMs: number;
  storage: 'file' | 'memory';
}

export function wireDelivery(given: Record<string, unknown> | undefined): WireDelivery {
  const c = withDefaults(WIRE_DELIVERY_SCHEMA, given);
  return { ackWaitMs: c.ack_wait_ms as number, maxDeliver: c.max_deliver as number, maxAckPending: c.max_ack_pending as number, ordered: c.ordered as boolean };
}

export function laneSettings(given: Record<string, unknown> | undefined): LaneSettings {
  const c = withDefaults(LANES_SCHEMA, given);
  return {
    replicas: c.replicas as number,
    maxAgeMs: c.max_age_ms as number,
    maxBytes: c.max_bytes as number,
    duplicateWindowMs: c.duplicate_window_ms as number,
    storage: c.storage as 'file' | 'memory',
  };
}

/** Wires that travel over the bus: `lane: guaranteed`, and every wire between two racks. */
export function busWires(scenario: Scenario): WireSpec[] {
  return scenario.wires.filter(isBusWire);
}

export function isBusWire(wire: WireSpec): boolean {
  return wire.lane === 'guaranteed' || wire.crossRack;
}
