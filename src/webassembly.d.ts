// The WebAssembly JS API as Node 20 provides it. TypeScript ships these types only with the DOM
// library, which would also declare browser globals that do not exist in Node; this is the part
// fluxrig uses.
declare namespace WebAssembly {
  type ImportExportKind = 'function' | 'table' | 'memory' | 'global';
  interface ModuleImportDescriptor {
    module: string;
    name: string;
    kind: ImportExportKind;
  }
  interface ModuleExportDescriptor {
    name: string;
    kind: ImportExportKind;
  }
  // biome-ignore lint/complexity/noBannedTypes: the platform's own type for a host function
  type ImportValue = Function | Memory | Global | Table | number | bigint;
  type Imports = Record<string, Record<string, ImportValue>>;
  // biome-ignore lint/complexity/noBannedTypes: the platform's own type for an exported function
  type Exports = Record<string, Function | Memory | Global | Table>;

  class Module {
    constructor(bytes: BufferSource);
    static imports(module: Module): ModuleImportDescriptor[];
    static exports(module: Module): ModuleExportDescriptor[];
    static customSections(module: Module, name: string): ArrayBuffer[];
  }
  class Instance {
    constructor(module: Module, imports?: Imports);
    readonly exports: Exports;
  }
  interface MemoryDescriptor {
    initial: number;
    maximum?: number;
    shared?: boolean;
  }
  class Memory {
    constructor(descriptor: MemoryDescriptor);
    readonly buffer: ArrayBuffer;
    grow(delta: number): number;
  }
  class Global {
    value: unknown;
  }
  class Table {
    readonly length: number;
  }
  class CompileError extends Error {}
  class LinkError extends Error {}
  class RuntimeError extends Error {}
  function compile(bytes: BufferSource): Promise<Module>;
  function validate(bytes: BufferSource): boolean;
}
type BufferSource = ArrayBufferView | ArrayBuffer;
