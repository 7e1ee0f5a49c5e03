// Two sans-I/O sessions wired back to back, on a fake clock: the FLUXAR state machine alone.
import { decodeEnvelope, MAX_FRAME_CEILING, Session, type SessionEvent, type SessionOptions, StreamFrameSplitter } from '../../src/fluxar/mod.js';

export class Clock {
  t = 1_000_000;
  now = () => this.t;
}

/** Two sessions wired back to back; `pump` moves bytes until both are quiet. */
export function pair(clientOptions: Partial<SessionOptions> = {}, serverOptions: Partial<SessionOptions> = {}, clock = new Clock()) {
  const client = new Session({ role: 'client', framing: 'stream', clock: clock.now, ...clientOptions });
  const server = new Session({ role: 'server', framing: 'stream', clock: clock.now, ...serverOptions });
  const events = { client: [] as SessionEvent[], server: [] as SessionEvent[] };
  const pump = (autoAccept = true) => {
    for (let i = 0; i < 100; i++) {
      const a = client.takeOutput();
      const b = server.takeOutput();
      for (const bytes of a) server.receive(bytes);
      for (const bytes of b) client.receive(bytes);
      const ce = client.takeEvents();
      const se = server.takeEvents();
      events.client.push(...ce);
      events.server.push(...se);
      for (const e of se) if (e.type === 'authenticate' && autoAccept) server.accept({ id: 'test' });
      if (a.length === 0 && b.length === 0 && ce.length === 0 && se.length === 0) return;
    }
  };
  return { client, server, events, pump, clock };
}

/** The error codes of the envelopes in a session's output (stream framing: frames back to back). */
export function errorsIn(output: Uint8Array[]): number[] {
  const splitter = new StreamFrameSplitter(MAX_FRAME_CEILING);
  return output
    .flatMap((bytes) => splitter.push(bytes))
    .map((f) => decodeEnvelope(f.body))
    .flatMap((e) => (e.error ? [e.error.code] : []));
}

export function ofType<T extends SessionEvent['type']>(events: SessionEvent[], type: T): Array<Extract<SessionEvent, { type: T }>> {
  return events.filter((e): e is Extract<SessionEvent, { type: T }> => e.type === type);
}
