/**
 * The key that signs join tokens, kept beside the CA so every control-plane replica
 * that can sign certificates can also check tokens. Created once, exclusively, so two
 * replicas starting together cannot each write their own.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { calculateJwkThumbprint, exportJWK } from "jose";
import { DataError } from "../core/errors.ts";
import { exportPrivateKeyPem, generateKeyPair, importPrivateKeyPem } from "../pki/x509.ts";
import type { TokenKey } from "./join-token.ts";

export const TOKEN_KEY_FILE = "join-token-key.pem";

export async function loadOrCreateTokenKey(caDir: string): Promise<TokenKey> {
  const path = join(caDir, TOKEN_KEY_FILE);
  if (!existsSync(path)) {
    const fresh = await generateKeyPair();
    try {
      writeFileSync(path, await exportPrivateKeyPem(fresh.privateKey), { mode: 0o600, flag: "wx" });
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw new DataError(`cannot write the join-token key: ${(err as Error).message}`, path);
    }
  }
  let keys: CryptoKeyPair;
  try {
    keys = await importPrivateKeyPem(readFileSync(path, "utf8"));
  } catch (err) {
    throw new DataError(`not a usable EC private key: ${(err as Error).message}`, path);
  }
  const kid = await calculateJwkThumbprint(await exportJWK(keys.publicKey));
  return { privateKey: keys.privateKey, publicKey: keys.publicKey, kid };
}
