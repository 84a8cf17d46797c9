/**
 * Errors that reach a person. Each names what was wrong and where (a flag, a file,
 * a field), so the CLI can print it as-is and pick the exit code in one place.
 */
export class MeshError extends Error {
  override readonly name: string = "MeshError";
  constructor(
    message: string,
    /** Where the problem is: a flag, a file path, `file#doc field.path`. */
    readonly where?: string,
  ) {
    super(where ? `${where}: ${message}` : message);
  }
}

/** A bad command line: printed with usage, exit 64 (EX_USAGE). */
export class UsageError extends MeshError {
  override readonly name = "UsageError";
}

/** Input data (file, manifest, certificate, CSR) that cannot be accepted: exit 65 (EX_DATAERR). */
export class DataError extends MeshError {
  override readonly name = "DataError";
}

/** Refusing to overwrite or touch existing state: exit 73 (EX_CANTCREAT). */
export class CantCreateError extends MeshError {
  override readonly name = "CantCreateError";
}

export const EXIT = {
  ok: 0,
  failure: 1,
  usage: 64,
  dataErr: 65,
  noInput: 66,
  software: 70,
  cantCreate: 73,
} as const;

export function exitCodeFor(err: unknown): number {
  if (err instanceof UsageError) return EXIT.usage;
  if (err instanceof DataError) return EXIT.dataErr;
  if (err instanceof CantCreateError) return EXIT.cantCreate;
  if (err instanceof MeshError) return EXIT.failure;
  return EXIT.software;
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
