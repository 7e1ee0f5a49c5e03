// What the page knows of the fleet, kept current by the Mixer's server-sent events: it follows
// /events first, then loads the snapshot, then applies what arrived in between, so no change
// falls between the two. When the stream ends it follows again after a pause, with a new snapshot.
import { ApiError, type MixerApi, type Rack, retryDelayMs, type Sample, type ScenarioRecord, type ServerEvent } from './api.js';

/** Samples kept per rack: the Mixer's window (15 minutes) at one heartbeat a second. */
const SAMPLES_KEPT = 1000;

export type Connection = 'connecting' | 'live' | 'reconnecting';

/**
 * Events: 'racks' (a rack's record changed, or one left), 'samples', 'scenarios', 'connection',
 * 'unauthorized' (the token was refused: ask again).
 */
export class FleetState extends EventTarget {
  readonly racks = new Map<string, Rack>();
  readonly samples = new Map<string, Sample[]>();
  readonly scenarios = new Map<string, ScenarioRecord>();
  connection: Connection = 'connecting';
  private readonly stop = new AbortController();

  constructor(readonly api: MixerApi) {
    super();
  }

  start(): void {
    void this.run();
  }

  close(): void {
    this.stop.abort();
  }

  private setConnection(c: Connection): void {
    this.connection = c;
    this.dispatchEvent(new Event('connection'));
  }

  private async run(): Promise<void> {
    for (let attempt = 0; !this.stop.signal.aborted; attempt++) {
      const early: ServerEvent[] = [];
      let loaded = false;
      try {
        const stream = this.api.follow('/events', (e) => (loaded ? this.apply(e) : early.push(e)), this.stop.signal);
        // Its failure is read below, after the snapshot; until then it must not count as unhandled.
        stream.catch(() => {});
        await this.load();
        for (const e of early) this.apply(e);
        loaded = true;
        attempt = 0;
        this.setConnection('live');
        await stream;
      } catch (err) {
        if (this.stop.signal.aborted) return;
        if (err instanceof ApiError && err.status === 401) {
          this.dispatchEvent(new Event('unauthorized'));
          return;
        }
      }
      this.setConnection('reconnecting');
      await new Promise((resolve) => setTimeout(resolve, retryDelayMs(attempt)));
    }
  }

  private async load(): Promise<void> {
    const [racks, series, scenarios] = await Promise.all([
      this.api.request<Rack[]>('GET', '/racks'),
      this.api.request<Record<string, Sample[]>>('GET', '/series'),
      this.api.request<ScenarioRecord[]>('GET', '/scenarios'),
    ]);
    this.racks.clear();
    for (const r of racks) this.racks.set(r.name, r);
    this.samples.clear();
    for (const [rack, samples] of Object.entries(series)) this.samples.set(rack, samples.slice(-SAMPLES_KEPT));
    this.scenarios.clear();
    for (const s of scenarios) this.scenarios.set(s.name, s);
    for (const what of ['racks', 'samples', 'scenarios']) this.dispatchEvent(new Event(what));
  }

  private apply(e: ServerEvent): void {
    switch (e.event) {
      case 'rack': {
        const rack = e.data as Rack;
        const held = this.racks.get(rack.name);
        // An event from before the snapshot is older than what the snapshot holds.
        if (held !== undefined && held.last_seen > rack.last_seen && held.online === rack.online && held.status === rack.status) return;
        this.racks.set(rack.name, rack);
        this.dispatchEvent(new Event('racks'));
        return;
      }
      case 'rack-removed':
        this.racks.delete((e.data as { name: string }).name);
        this.samples.delete((e.data as { name: string }).name);
        this.dispatchEvent(new Event('racks'));
        return;
      case 'scenario': {
        const s = e.data as ScenarioRecord;
        this.scenarios.set(s.name, s);
        this.dispatchEvent(new Event('scenarios'));
        return;
      }
      case 'sample': {
        const { rack, ...sample } = e.data as Sample & { rack: string };
        const list = this.samples.get(rack) ?? [];
        if (list.length > 0 && list[list.length - 1]!.time >= sample.time) return;
        list.push(sample);
        if (list.length > SAMPLES_KEPT) list.splice(0, list.length - SAMPLES_KEPT);
        this.samples.set(rack, list);
        this.dispatchEvent(new Event('samples'));
        return;
      }
    }
  }

  /** The rack's newest sample, if it has sent traffic figures. */
  latest(rack: string): Sample | undefined {
    const list = this.samples.get(rack);
    return list?.[list.length - 1];
  }
}

/** What the page shows as a rack's status: offline overrides the status while heartbeats are missing. */
export function displayStatus(rack: Rack): 'pending' | 'active' | 'suspended' | 'denied' | 'offline' {
  return rack.online ? rack.status : rack.status === 'denied' ? 'denied' : 'offline';
}
