import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, delimiter, join } from 'node:path';
import { FluxrigError } from '../errors.js';

export class NatsServerError extends FluxrigError {}

/** Debian installs nats-server in /usr/sbin, which is not on every user's PATH. */
export function findNatsServer(): string {
  const dirs = [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/usr/local/sbin'];
  for (const dir of dirs) {
    const candidate = join(dir, 'nats-server');
    if (dir !== '' && existsSync(candidate)) return candidate;
  }
  throw new NatsServerError("nats-server not found: install it with 'sudo apt-get install nats-server' (or run 'make deps' as root)");
}

/**
 * A nats-server child process with JetStream: in a temporary directory on a port it picks itself
 * (no race for a "free" port) for tests and benchmarks, or in a data directory that outlives it
 * on a given port, as the Mixer's embedded NATS.
 */
export class NatsServerProcess {
  readonly url: string;
  readonly port: number;
  private child: ChildProcess;
  private readonly storeDir: string;
  private readonly jetstream: boolean;
  private readonly temporary: boolean;
  private readonly config: string | undefined;
  private readonly host: string | undefined;

  private constructor(child: ChildProcess, port: number, storeDir: string, jetstream: boolean, temporary: boolean, config?: string, host?: string) {
    this.child = child;
    this.port = port;
    this.url = `${config === undefined ? 'nats' : 'tls'}://127.0.0.1:${port}`;
    this.storeDir = storeDir;
    this.jetstream = jetstream;
    this.temporary = temporary;
    this.config = config;
    this.host = host;
  }

  /** The server's process id (for reading its CPU time); a restart gives it a new one. */
  get pid(): number | undefined {
    return this.child.pid;
  }

  /**
   * `dataDir`: JetStream keeps its data there (kept after stop); default a temporary directory,
   * removed at stop. `port`: default one the server picks; `host` default 127.0.0.1.
   */
  static async start(
    options: { jetstream?: boolean; timeoutMs?: number; dataDir?: string; port?: number; host?: string; config?: string } = {},
  ): Promise<NatsServerProcess> {
    const storeDir = options.dataDir ?? (await mkdtemp(join(tmpdir(), 'fluxrig-nats-')));
    const jetstream = options.jetstream ?? true;
    const temporary = options.dataDir === undefined;
    try {
      const { child, port } = await NatsServerProcess.spawn(options.port ?? -1, storeDir, jetstream, options.timeoutMs ?? 10_000, options.host, options.config);
      return new NatsServerProcess(child, port, storeDir, jetstream, temporary, options.config, options.host);
    } catch (err) {
      if (temporary) await rm(storeDir, { recursive: true, force: true });
      throw err;
    }
  }

  /** Kills the server (SIGKILL: no goodbye to its clients) and starts it again on the same port and store. */
  async restart(timeoutMs = 10_000): Promise<void> {
    await this.down();
    await this.up(timeoutMs);
  }

  /** Kills the server (SIGKILL), keeping its store and port for up(). */
  async down(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const exited = new Promise((resolve) => this.child.once('exit', resolve));
      this.child.kill('SIGKILL');
      await exited;
    }
  }

  /** Starts the server again after down(), on the same port and store. */
  async up(timeoutMs = 10_000): Promise<void> {
    this.child = (await NatsServerProcess.spawn(this.port, this.storeDir, this.jetstream, timeoutMs, this.host, this.config)).child;
  }

  /** Has the server read its configuration file again (SIGHUP): new users, new permissions. */
  reload(): void {
    this.child.kill('SIGHUP');
  }

  /**
   * reload(), resolved once the server says it runs the new configuration, so that what the
   * new permissions allow works when it resolves; rejects with the server's words if it refused
   * the file (it then runs the old one) or said nothing in time.
   */
  reloaded(timeoutMs = 5000): Promise<void> {
    const stderr = this.child.stderr!;
    return new Promise<void>((resolve, reject) => {
      let log = '';
      const onData = (chunk: string) => {
        log += chunk;
        const refused = /Failed to reload server configuration[^\n]*/.exec(log);
        if (/Reloaded server configuration/.test(log)) done();
        else if (refused !== null) done(new NatsServerError(refused[0]));
      };
      const timer = setTimeout(() => done(new NatsServerError(`nats-server did not reload its configuration within ${timeoutMs} ms`)), timeoutMs);
      const done = (err?: Error) => {
        clearTimeout(timer);
        stderr.off('data', onData);
        if (err === undefined) resolve();
        else reject(err);
      };
      stderr.on('data', onData);
      this.reload();
    });
  }

  /**
   * The configuration the server runs with a file: JetStream set in a file that includes the
   * caller's. Set by flags (-js -sd), it is dropped by a reload (SIGHUP) of nats-server 2.9: the
   * server then answers no JetStream request. Reload reads both files again.
   */
  private static withJetStream(config: string, storeDir: string | undefined): string {
    if (storeDir === undefined) return config;
    const file = `${config}.server.conf`;
    writeFileSync(file, `jetstream {\n  store_dir: ${JSON.stringify(storeDir)}\n}\ninclude ${JSON.stringify(basename(config))}\n`, { mode: 0o600 });
    return file;
  }

  private static async spawn(
    wantedPort: number,
    storeDir: string,
    jetstream: boolean,
    timeoutMs: number,
    host = '127.0.0.1',
    config?: string,
  ): Promise<{ child: ChildProcess; port: number }> {
    const binary = findNatsServer();
    const args = [
      ...(config === undefined ? [] : ['-c', NatsServerProcess.withJetStream(config, jetstream ? storeDir : undefined)]),
      '-a',
      host,
      '-p',
      String(wantedPort),
      '--http_port',
      '0',
    ];
    if (jetstream && config === undefined) args.push('-js', '-sd', storeDir);
    const child = spawn(binary, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    try {
      const port = await new Promise<number>((resolve, reject) => {
        let log = '';
        let port: number | undefined;
        const timer = setTimeout(() => reject(new NatsServerError(`nats-server not ready within ${timeoutMs} ms:\n${log}`)), timeoutMs);
        child.once('error', (err) => reject(new NatsServerError(`cannot start nats-server: ${err.message}`, { cause: err })));
        child.once('exit', (code) => reject(new NatsServerError(`nats-server exited with code ${code}:\n${log}`)));
        child.stderr!.setEncoding('utf8');
        child.stderr!.on('data', (chunk: string) => {
          log += chunk;
          port ??= Number(/Listening for client connections on [^\s]*:(\d+)/.exec(log)?.[1]) || undefined;
          if (port !== undefined && /Server is ready/.test(log)) {
            clearTimeout(timer);
            child.stderr!.removeAllListeners('data');
            child.stderr!.resume();
            resolve(port);
          }
        });
      });
      child.removeAllListeners('exit');
      return { child, port };
    } catch (err) {
      child.kill('SIGKILL');
      throw err;
    }
  }

  async stop(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      const exited = new Promise((resolve) => this.child.once('exit', resolve));
      this.child.kill('SIGTERM');
      await exited;
    }
    if (this.temporary) await rm(this.storeDir, { recursive: true, force: true });
  }

  /** Kills it at once (SIGKILL), as a crash would. */
  kill(): void {
    this.child.kill('SIGKILL');
  }
}
