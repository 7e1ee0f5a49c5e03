// WASI preview 1 for gears, default-deny, on a host of our own rather than node:wasi: node:wasi
// writes a guest's stdout to a real file descriptor (we need it as the gear's rate-limited log
// lines), has no read-only preopens, and its documentation says it is not a sandbox for
// untrusted code. This one grants clocks, random bytes, proc_exit and stdout/stderr to every
// gear; environment variables and preopened directories only as the scenario lists them
// (`wasi.env`, `wasi.preopens`); and nothing else: a module importing any other WASI function is
// refused at load (loader.ts), naming it.
import { randomFillSync } from 'node:crypto';
import { closeSync, constants, fstatSync, openSync, readSync, realpathSync, type Stats, statSync, writeSync } from 'node:fs';
import { dirname, isAbsolute, join, normalize, sep } from 'node:path';
import { GuestTrap } from './errors.js';

export const WASI_MODULE = 'wasi_snapshot_preview1';

/** Every WASI function the host provides; a module may import these and no other. */
export const WASI_FUNCTIONS = [
  'args_get',
  'args_sizes_get',
  'environ_get',
  'environ_sizes_get',
  'clock_res_get',
  'clock_time_get',
  'random_get',
  'proc_exit',
  'sched_yield',
  'fd_write',
  'fd_read',
  'fd_seek',
  'fd_tell',
  'fd_close',
  'fd_fdstat_get',
  'fd_fdstat_set_flags',
  'fd_filestat_get',
  'fd_prestat_get',
  'fd_prestat_dir_name',
  'path_open',
  'path_filestat_get',
] as const;

/** A directory of the host a gear may read (and write, with rw), seen by the guest as `guest`. */
export interface Preopen {
  /** The path the guest opens it by (e.g. /data). */
  guest: string;
  /** The host directory (absolute, resolved at load). */
  host: string;
  rw: boolean;
}

export interface WasiOptions {
  env: Record<string, string>;
  preopens: Preopen[];
  memory: () => WebAssembly.Memory;
  /** A line the guest wrote to stdout (fd 1) or stderr (fd 2). */
  line: (fd: 1 | 2, text: string) => void;
}

/** The guest called proc_exit: that message fails; the gear goes on with a fresh instance. */
export class GuestExit extends GuestTrap {
  constructor(readonly code: number) {
    super(`exited with proc_exit(${code})`);
  }
}

// errno values of WASI preview 1.
const E = {
  SUCCESS: 0,
  ACCES: 2,
  BADF: 8,
  EXIST: 20,
  FAULT: 21,
  INVAL: 28,
  IO: 29,
  ISDIR: 31,
  LOOP: 32,
  MFILE: 33,
  NAMETOOLONG: 37,
  NOENT: 44,
  NOTDIR: 54,
  SPIPE: 70,
  NOTCAPABLE: 76,
} as const;

const FILETYPE = { CHARACTER_DEVICE: 2, DIRECTORY: 3, REGULAR_FILE: 4, SYMBOLIC_LINK: 7 } as const;
const OFLAGS = { CREAT: 1, DIRECTORY: 2, EXCL: 4, TRUNC: 8 } as const;
const FDFLAGS_APPEND = 1;
// Rights (fd_fdstat): the ones that read, and those that change what is stored.
const RIGHT = { FD_READ: 1n << 1n, FD_SEEK: 1n << 2n, FD_TELL: 1n << 5n, FD_WRITE: 1n << 6n, PATH_OPEN: 1n << 13n, FD_FILESTAT_GET: 1n << 21n } as const;
const READ_RIGHTS = RIGHT.FD_READ | RIGHT.FD_SEEK | RIGHT.FD_TELL | RIGHT.FD_FILESTAT_GET | RIGHT.PATH_OPEN | (1n << 14n) | (1n << 18n);
const ALL_RIGHTS = (1n << 30n) - 1n;
/** Files a guest may hold open at once. */
const MAX_OPEN = 64;
/** A line longer than this is passed on in pieces (a guest cannot grow the host's buffer). */
const MAX_LINE = 4096;

interface OpenEntry {
  kind: 'dir' | 'file';
  host: string;
  /** The preopen it was reached through: its real path and whether it may be written. */
  root: { real: string; rw: boolean };
  /** For a preopen: the guest path it is named by. */
  preopen?: string;
  fd?: number;
  position: number;
  writable: boolean;
  append: boolean;
}

const NODE_ERRNO: Record<string, number> = {
  ENOENT: E.NOENT,
  EACCES: E.ACCES,
  EPERM: E.ACCES,
  EEXIST: E.EXIST,
  EISDIR: E.ISDIR,
  ENOTDIR: E.NOTDIR,
  ELOOP: E.LOOP,
  ENAMETOOLONG: E.NAMETOOLONG,
  EMFILE: E.MFILE,
};

function errnoOf(err: unknown): number {
  return NODE_ERRNO[(err as NodeJS.ErrnoException).code ?? ''] ?? E.IO;
}

function within(path: string, root: string): boolean {
  return path === root || path.startsWith(root.endsWith(sep) ? root : root + sep);
}

const utf8 = new TextDecoder();
const utf8Encoder = new TextEncoder();

export class WasiHost {
  private readonly fds = new Map<number, OpenEntry>();
  private nextFd: number;
  private readonly pending: Record<1 | 2, string> = { 1: '', 2: '' };
  private readonly environ: Uint8Array[];

  constructor(private readonly options: WasiOptions) {
    let fd = 3;
    for (const p of options.preopens) {
      const real = realpathSync(p.host);
      this.fds.set(fd++, { kind: 'dir', host: real, root: { real, rw: p.rw }, preopen: p.guest, position: 0, writable: p.rw, append: false });
    }
    this.nextFd = fd;
    this.environ = Object.entries(options.env).map(([k, v]) => utf8Encoder.encode(`${k}=${v}\0`));
  }

  /** Closes what the guest left open, and passes on a partial last line. */
  close(): void {
    this.flush();
    for (const entry of this.fds.values()) if (entry.fd !== undefined) closeSync(entry.fd);
    this.fds.clear();
  }

  /** Passes on what the guest wrote without a final newline (at the end of each message). */
  flush(): void {
    for (const fd of [1, 2] as const) {
      if (this.pending[fd] !== '') this.options.line(fd, this.pending[fd]);
      this.pending[fd] = '';
    }
  }

  private view(): DataView {
    return new DataView(this.options.memory().buffer);
  }

  private bytes(ptr: number, len: number): Uint8Array {
    const buffer = this.options.memory().buffer;
    if (ptr < 0 || len < 0 || ptr + len > buffer.byteLength) throw new GuestTrap(`WASI: an out-of-bounds buffer (ptr ${ptr}, len ${len})`);
    return new Uint8Array(buffer, ptr, len);
  }

  /** The iovec array (ptr, len pairs) as views of guest memory. */
  private iovecs(iovs: number, count: number): Uint8Array[] {
    const view = this.view();
    const out: Uint8Array[] = [];
    for (let i = 0; i < count; i++) out.push(this.bytes(view.getUint32(iovs + i * 8, true), view.getUint32(iovs + i * 8 + 4, true)));
    return out;
  }

  /** The import object: every function in WASI_FUNCTIONS. */
  imports(): Record<(typeof WASI_FUNCTIONS)[number], (...args: never[]) => number | undefined> {
    return {
      args_get: () => E.SUCCESS,
      args_sizes_get: (argc: number, size: number) => {
        const view = this.view();
        view.setUint32(argc, 0, true);
        view.setUint32(size, 0, true);
        return E.SUCCESS;
      },
      environ_get: (environ: number, buf: number) => {
        const view = this.view();
        let at = buf;
        this.environ.forEach((entry, i) => {
          view.setUint32(environ + i * 4, at, true);
          this.bytes(at, entry.length).set(entry);
          at += entry.length;
        });
        return E.SUCCESS;
      },
      environ_sizes_get: (count: number, size: number) => {
        const view = this.view();
        view.setUint32(count, this.environ.length, true);
        view.setUint32(
          size,
          this.environ.reduce((n, e) => n + e.length, 0),
          true,
        );
        return E.SUCCESS;
      },
      clock_res_get: (id: number, out: number) => {
        if (id > 3) return E.INVAL;
        this.view().setBigUint64(out, 1000n, true);
        return E.SUCCESS;
      },
      clock_time_get: (id: number, _precision: bigint, out: number) => {
        let ns: bigint;
        if (id === 0) ns = BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6));
        else if (id === 1) ns = process.hrtime.bigint();
        else if (id === 2 || id === 3) ns = BigInt(process.cpuUsage().user) * 1000n;
        else return E.INVAL;
        this.view().setBigUint64(out, ns, true);
        return E.SUCCESS;
      },
      random_get: (buf: number, len: number) => {
        randomFillSync(this.bytes(buf, len));
        return E.SUCCESS;
      },
      proc_exit: (code: number) => {
        throw new GuestExit(code);
      },
      sched_yield: () => E.SUCCESS,
      fd_write: (fd: number, iovs: number, count: number, written: number) => {
        const chunks = this.iovecs(iovs, count);
        let n = 0;
        if (fd === 1 || fd === 2) {
          for (const c of chunks) {
            this.take(fd, utf8.decode(c, { stream: true }));
            n += c.length;
          }
        } else {
          const entry = this.fds.get(fd);
          if (entry === undefined || entry.kind !== 'file') return E.BADF;
          if (!entry.writable) return E.NOTCAPABLE;
          try {
            for (const c of chunks) {
              const at = entry.append ? fstatSync(entry.fd!).size : entry.position;
              const w = writeSync(entry.fd!, c, 0, c.length, at);
              entry.position = at + w;
              n += w;
            }
          } catch (err) {
            return errnoOf(err);
          }
        }
        this.view().setUint32(written, n, true);
        return E.SUCCESS;
      },
      fd_read: (fd: number, iovs: number, count: number, read: number) => {
        let n = 0;
        if (fd !== 0) {
          const entry = this.fds.get(fd);
          if (entry === undefined) return E.BADF;
          if (entry.kind !== 'file') return E.ISDIR;
          try {
            for (const c of this.iovecs(iovs, count)) {
              const got = readSync(entry.fd!, c, 0, c.length, entry.position);
              entry.position += got;
              n += got;
              if (got < c.length) break;
            }
          } catch (err) {
            return errnoOf(err);
          }
        }
        this.view().setUint32(read, n, true);
        return E.SUCCESS;
      },
      fd_seek: (fd: number, offset: bigint, whence: number, out: number) => {
        const entry = this.fds.get(fd);
        if (fd <= 2) return E.SPIPE;
        if (entry === undefined) return E.BADF;
        if (entry.kind !== 'file') return E.ISDIR;
        const base = whence === 0 ? 0 : whence === 1 ? entry.position : whence === 2 ? fstatSync(entry.fd!).size : -1;
        if (base < 0) return E.INVAL;
        const next = base + Number(offset);
        if (next < 0) return E.INVAL;
        entry.position = next;
        this.view().setBigUint64(out, BigInt(next), true);
        return E.SUCCESS;
      },
      fd_tell: (fd: number, out: number) => {
        const entry = this.fds.get(fd);
        if (fd <= 2) return E.SPIPE;
        if (entry === undefined || entry.kind !== 'file') return E.BADF;
        this.view().setBigUint64(out, BigInt(entry.position), true);
        return E.SUCCESS;
      },
      fd_close: (fd: number) => {
        if (fd <= 2) return E.SUCCESS;
        const entry = this.fds.get(fd);
        if (entry === undefined) return E.BADF;
        if (entry.fd !== undefined) closeSync(entry.fd);
        this.fds.delete(fd);
        return E.SUCCESS;
      },
      fd_fdstat_get: (fd: number, out: number) => {
        const view = this.view();
        let type: number;
        let base: bigint;
        let inheriting = 0n;
        if (fd <= 2) {
          type = FILETYPE.CHARACTER_DEVICE;
          base = fd === 0 ? RIGHT.FD_READ : RIGHT.FD_WRITE;
        } else {
          const entry = this.fds.get(fd);
          if (entry === undefined) return E.BADF;
          type = entry.kind === 'dir' ? FILETYPE.DIRECTORY : FILETYPE.REGULAR_FILE;
          base = entry.writable ? ALL_RIGHTS : READ_RIGHTS;
          inheriting = entry.kind === 'dir' ? base : 0n;
        }
        view.setUint8(out, type);
        view.setUint16(out + 2, 0, true);
        view.setBigUint64(out + 8, base, true);
        view.setBigUint64(out + 16, inheriting, true);
        return E.SUCCESS;
      },
      fd_fdstat_set_flags: (fd: number, flags: number) => {
        if (fd <= 2) return E.SUCCESS;
        const entry = this.fds.get(fd);
        if (entry === undefined) return E.BADF;
        if ((flags & FDFLAGS_APPEND) !== 0 && !entry.writable) return E.NOTCAPABLE;
        entry.append = (flags & FDFLAGS_APPEND) !== 0;
        return E.SUCCESS;
      },
      fd_filestat_get: (fd: number, out: number) => {
        if (fd <= 2) return this.writeStat(out, undefined);
        const entry = this.fds.get(fd);
        if (entry === undefined) return E.BADF;
        try {
          return this.writeStat(out, entry.fd !== undefined ? fstatSync(entry.fd) : statSync(entry.host));
        } catch (err) {
          return errnoOf(err);
        }
      },
      fd_prestat_get: (fd: number, out: number) => {
        const entry = this.fds.get(fd);
        if (entry?.preopen === undefined) return E.BADF;
        const view = this.view();
        view.setUint8(out, 0);
        view.setUint32(out + 4, utf8Encoder.encode(entry.preopen).length, true);
        return E.SUCCESS;
      },
      fd_prestat_dir_name: (fd: number, path: number, len: number) => {
        const entry = this.fds.get(fd);
        if (entry?.preopen === undefined) return E.BADF;
        const name = utf8Encoder.encode(entry.preopen);
        if (len < name.length) return E.NAMETOOLONG;
        this.bytes(path, name.length).set(name);
        return E.SUCCESS;
      },
      path_open: (
        dirFd: number,
        _dirflags: number,
        pathPtr: number,
        pathLen: number,
        oflags: number,
        base: bigint,
        _inh: bigint,
        fdflags: number,
        out: number,
      ) => {
        const resolved = this.resolve(dirFd, pathPtr, pathLen);
        if (typeof resolved === 'number') return resolved;
        const { dir, host } = resolved;
        // Guests ask for more rights than they use (Rust's std asks for sync on a read-only open);
        // WASI lets a host grant fewer. Only writing itself is refused on a read-only preopen.
        const wantsWrite = (BigInt(base) & RIGHT.FD_WRITE) !== 0n || (oflags & (OFLAGS.CREAT | OFLAGS.TRUNC)) !== 0 || (fdflags & FDFLAGS_APPEND) !== 0;
        if (wantsWrite && !dir.root.rw) return E.NOTCAPABLE;
        if (this.fds.size >= MAX_OPEN + 3) return E.MFILE;
        let stats: Stats | undefined;
        try {
          stats = statSync(host);
        } catch {
          stats = undefined;
        }
        if (stats?.isDirectory() === true || (oflags & OFLAGS.DIRECTORY) !== 0) {
          if (stats === undefined) return E.NOENT;
          if (!stats.isDirectory()) return E.NOTDIR;
          return this.place({ kind: 'dir', host, root: dir.root, position: 0, writable: dir.root.rw, append: false }, out);
        }
        let flags = wantsWrite ? constants.O_RDWR : constants.O_RDONLY;
        if (oflags & OFLAGS.CREAT) flags |= constants.O_CREAT;
        if (oflags & OFLAGS.EXCL) flags |= constants.O_EXCL;
        if (oflags & OFLAGS.TRUNC) flags |= constants.O_TRUNC;
        try {
          const fd = openSync(host, flags | constants.O_NOFOLLOW, 0o644);
          return this.place({ kind: 'file', host, root: dir.root, fd, position: 0, writable: wantsWrite, append: (fdflags & FDFLAGS_APPEND) !== 0 }, out);
        } catch (err) {
          return errnoOf(err);
        }
      },
      path_filestat_get: (dirFd: number, _flags: number, pathPtr: number, pathLen: number, out: number) => {
        const resolved = this.resolve(dirFd, pathPtr, pathLen);
        if (typeof resolved === 'number') return resolved;
        try {
          return this.writeStat(out, statSync(resolved.host));
        } catch (err) {
          return errnoOf(err);
        }
      },
    };
  }

  private take(fd: 1 | 2, text: string): void {
    let pending = this.pending[fd] + text;
    for (let nl = pending.indexOf('\n'); nl >= 0; nl = pending.indexOf('\n')) {
      this.options.line(fd, pending.slice(0, nl));
      pending = pending.slice(nl + 1);
    }
    while (pending.length > MAX_LINE) {
      this.options.line(fd, pending.slice(0, MAX_LINE));
      pending = pending.slice(MAX_LINE);
    }
    this.pending[fd] = pending;
  }

  private place(entry: OpenEntry, out: number): number {
    const fd = this.nextFd++;
    this.fds.set(fd, entry);
    this.view().setUint32(out, fd, true);
    return E.SUCCESS;
  }

  /**
   * A guest path under an open directory, as a host path inside its preopen: absolute paths,
   * `..` past the preopen and symbolic links that lead out of it are refused (ENOTCAPABLE).
   */
  private resolve(dirFd: number, pathPtr: number, pathLen: number): { dir: OpenEntry; host: string } | number {
    const dir = this.fds.get(dirFd);
    if (dir === undefined) return E.BADF;
    if (dir.kind !== 'dir') return E.NOTDIR;
    const path = utf8.decode(this.bytes(pathPtr, pathLen));
    if (path.includes('\0')) return E.INVAL;
    if (isAbsolute(path)) return E.NOTCAPABLE;
    const host = normalize(join(dir.host, path));
    if (!within(host, dir.root.real)) return E.NOTCAPABLE;
    // The real path of what exists (the file, else its directory) must stay inside too.
    let real: string;
    try {
      real = realpathSync(host);
    } catch {
      try {
        real = join(realpathSync(dirname(host)), host.slice(dirname(host).length));
      } catch {
        return E.NOENT;
      }
    }
    if (!within(real, dir.root.real)) return E.NOTCAPABLE;
    return { dir, host: real };
  }

  private writeStat(out: number, stats: Stats | undefined): number {
    const view = this.view();
    const type = stats === undefined ? FILETYPE.CHARACTER_DEVICE : stats.isDirectory() ? FILETYPE.DIRECTORY : stats.isFile() ? FILETYPE.REGULAR_FILE : 0;
    const ns = (ms: number) => BigInt(Math.round(ms * 1e6));
    view.setBigUint64(out, BigInt(stats?.dev ?? 0), true);
    view.setBigUint64(out + 8, BigInt(stats?.ino ?? 0), true);
    view.setUint8(out + 16, type);
    view.setBigUint64(out + 24, BigInt(stats?.nlink ?? 1), true);
    view.setBigUint64(out + 32, BigInt(stats?.size ?? 0), true);
    view.setBigUint64(out + 40, ns(stats?.atimeMs ?? 0), true);
    view.setBigUint64(out + 48, ns(stats?.mtimeMs ?? 0), true);
    view.setBigUint64(out + 56, ns(stats?.ctimeMs ?? 0), true);
    return E.SUCCESS;
  }
}
