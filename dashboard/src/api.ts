// The Mixer's HTTP API as the page uses it: JSON requests with the bearer token, and server-sent
// events read through fetch (EventSource cannot send an Authorization header, and a token in a
// URL ends up in logs). The shapes are the API's (GET /openapi.json); those the Mixer declares
// for the page come from src/mixer/api-shapes.ts.
import type { RackSample } from '../../src/mixer/api-shapes.js';

export type { LogRecord, ScenarioGraph } from '../../src/mixer/api-shapes.js';
export type Sample = RackSample;

export type RackStatus = 'pending' | 'active' | 'suspended' | 'denied';

export interface ScenarioRef {
  scenario: string;
  version: number;
}

export interface Rack {
  name: string;
  machine_id: string;
  status: RackStatus;
  online: boolean;
  labels: Record<string, string>;
  version: string;
  last_seen: number;
  heartbeat_ms: number;
  desired: ScenarioRef | null;
  applied: ScenarioRef | null;
  apply_error: string | null;
  heartbeat: { ts: number; workers: number; connections: number; p50_ms: number | null; p99_ms: number | null; rss: number } | null;
}

export interface ScenarioRecord {
  name: string;
  version: number;
  meta_version: string;
  pushed_at: number;
  targets: Record<string, string[]>;
  yaml: string;
}

export interface RolloutRow {
  rack: string;
  desired: number | null;
  applied: number | null;
  online: boolean;
  state: string;
  error: string | null;
}

export interface ScenarioIssue {
  file: string;
  line: number;
  column: number;
  message: string;
}

export const LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal'] as const;

/** The API refused or failed a request; `status` 0 when the Mixer could not be reached. */
export class ApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
    readonly issues: ScenarioIssue[] = [],
  ) {
    super(message);
  }
}

/** What went wrong, in words for the page. */
export function describe(err: unknown): string {
  return err instanceof ApiError ? err.message : String(err);
}

/** Pauses before following a stream again after it ended: growing, at most 10 s. */
const RETRY_MS = [500, 1000, 2000, 5000, 10_000];

export function retryDelayMs(attempt: number): number {
  return RETRY_MS[Math.min(attempt, RETRY_MS.length - 1)]!;
}

export interface ServerEvent {
  event: string;
  data: unknown;
}

export class MixerApi {
  constructor(private readonly token: string) {}

  private headers(json: boolean): HeadersInit {
    // The audit trail names the page as the caller (the token is what authenticates).
    return { authorization: `Bearer ${this.token}`, 'x-fluxrig-actor': 'dashboard', ...(json ? { 'content-type': 'application/json' } : {}) };
  }

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    let res: Response;
    try {
      res = await fetch(path, { method, headers: this.headers(body !== undefined), body: body === undefined ? undefined : JSON.stringify(body) });
    } catch (err) {
      throw new ApiError(`the Mixer cannot be reached: ${(err as Error).message}`, 0);
    }
    const text = await res.text();
    const parsed = text === '' ? null : (JSON.parse(text) as unknown);
    if (!res.ok) {
      const failure = (parsed ?? {}) as { error?: string; issues?: ScenarioIssue[] };
      throw new ApiError(failure.error ?? `${res.status} ${res.statusText}`, res.status, failure.issues ?? []);
    }
    return parsed as T;
  }

  /**
   * Reads a server-sent events stream until it ends or `signal` aborts; each event is handed to
   * `onEvent` as it arrives. Resolves when the stream ends (the caller decides whether to follow
   * again); rejects with ApiError on a refusal.
   */
  async follow(path: string, onEvent: (e: ServerEvent) => void, signal: AbortSignal): Promise<void> {
    const res = await fetch(path, { headers: { ...this.headers(false), accept: 'text/event-stream' }, signal });
    if (!res.ok || res.body === null) throw new ApiError(`${path}: ${res.status} ${res.statusText}`, res.status);
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffered = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffered += value;
      for (let end = buffered.indexOf('\n\n'); end >= 0; end = buffered.indexOf('\n\n')) {
        const block = buffered.slice(0, end);
        buffered = buffered.slice(end + 2);
        let event = 'message';
        const data: string[] = [];
        for (const line of block.split('\n')) {
          if (line.startsWith('event: ')) event = line.slice(7);
          else if (line.startsWith('data: ')) data.push(line.slice(6));
        }
        if (data.length > 0) onEvent({ event, data: JSON.parse(data.join('\n')) as unknown });
      }
    }
  }
}
