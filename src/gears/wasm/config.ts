/** A wasm gear's configuration, as written in a scenario (snake_case, like fluxrig's). */
export interface WasmGearConfig {
  /** A path, file://path, or urn:wasm:NAME:VERSION. */
  module: string;
  /** The exported function that handles a message. Default "process". */
  entrypoint?: string;
  /** Grants flux_kv_get and flux_kv_put. */
  allow_kv?: boolean;
  /** Grants flux_req_http, to the hosts in http_allow_hosts only. */
  allow_http?: boolean;
  http_allow_hosts?: string[];
  /** Linear memory ceiling in 64 KiB pages; growing past it traps. Default 256 (16 MiB). */
  memory_limit_pages?: number;
  /** Per-message time limit. A guest past it has its worker replaced. Default 100 ms. */
  timeout_ms?: number;
  /** Log lines per second this gear may write (token bucket; burst = one second's worth). Default 50. */
  log_rate_per_s?: number;
  /**
   * WASI beyond what every gear gets (clocks, random bytes, proc_exit, stdout/stderr as log lines):
   * the approved descriptors. Environment variables, and host directories the guest opens by
   * `guest` path, read-only unless rw.
   */
  wasi?: { env?: Record<string, string>; preopens?: Array<{ guest: string; host: string; rw?: boolean }> };
}

export const WASM_DEFAULTS = {
  entrypoint: 'process',
  memory_limit_pages: 256,
  timeout_ms: 100,
  log_rate_per_s: 50,
  http_timeout_ms: 5000,
} as const;

/** Host functions every module may import. */
export const ALWAYS_GRANTED = ['abort', 'seed', 'log', 'flux_emit'] as const;
export const KV_IMPORTS = ['flux_kv_get', 'flux_kv_put'] as const;
export const HTTP_IMPORTS = ['flux_req_http'] as const;

export function grantedImports(config: WasmGearConfig): Set<string> {
  const granted = new Set<string>(ALWAYS_GRANTED);
  if (config.allow_kv) for (const name of KV_IMPORTS) granted.add(name);
  if (config.allow_http) for (const name of HTTP_IMPORTS) granted.add(name);
  return granted;
}
