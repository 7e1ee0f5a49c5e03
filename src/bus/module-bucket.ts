import { Objm, type ObjectStore } from '@nats-io/obj';
import type { NatsConnection } from '@nats-io/transport-node';
import { WasmModuleError } from '../gears/wasm/errors.js';
import type { ModuleSource } from '../gears/wasm/store.js';

/**
 * Gear modules in a NATS Object Store bucket, named NAME:VERSION: how racks on the bus share
 * `urn:wasm:NAME:VERSION` modules. The bucket checks each object's digest on read.
 */
export class ModuleBucket implements ModuleSource {
  private constructor(
    private readonly os: ObjectStore,
    readonly bucket: string,
  ) {}

  static async open(nc: NatsConnection, bucket: string): Promise<ModuleBucket> {
    return new ModuleBucket(await new Objm(nc).create(bucket), bucket);
  }

  async import(bytes: Uint8Array, name: string, version: string): Promise<string> {
    const info = await this.os.putBlob({ name: `${name}:${version}`, description: `fluxrig gear module ${name} ${version}` }, bytes);
    return info.digest;
  }

  async resolve(name: string, version: string): Promise<Uint8Array> {
    const bytes = await this.os.getBlob(`${name}:${version}`);
    if (bytes === null)
      throw new WasmModuleError(`urn:wasm:${name}:${version}`, `not in the module bucket ${this.bucket} (import it with 'fluxrig wasm import --nats URL')`);
    return bytes;
  }
}
