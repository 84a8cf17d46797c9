/**
 * First certificate: make a key here, send only a CSR and the join token to the
 * bootstrap port (TLS, server verified as the control plane against the trust bundle
 * the operator gave), and keep the result in the certs directory so a restart reuses
 * it rather than needing a new token.
 */
import { writeFileSet } from "../../core/files.ts";
import { MeshError } from "../../core/errors.ts";
import type { Logger } from "../../core/log.ts";
import { controlPlaneId } from "../../control-plane/well-known.ts";
import { formatSpiffeId, workloadId } from "../../pki/spiffe.ts";
import { exportPrivateKeyPem, generateKeyPair } from "../../pki/keys.ts";
import { decodePem, encodePem } from "../../pki/pem.ts";
import { TrustBundle } from "../../pki/trust-bundle.ts";
import { workloadPaths } from "../../ca/layout.ts";
import { workloadCertsFromPem, type WorkloadCerts } from "../certs.ts";
import { expectPeer } from "../destinations.ts";
import { makeCsr } from "./csr.ts";
import { Backoff } from "./backoff.ts";
import { readSignedCertificate } from "./answer-shapes.ts";
import { AnswerTooLarge, boundedText } from "./bounded-body.ts";
import { identityProblem, type TrustedIdentity } from "./signed-identity.ts";

/** Tries of a bootstrap request that did not reach the control plane (refused, reset, timed out); an answer is never retried. */
const REACH_ATTEMPTS = 5;
/** One try's deadline, answer included: a bootstrap port that takes the request and never answers must not hold the sidecar's start forever. */
const BOOTSTRAP_ATTEMPT_MS = 10_000;
/** A certificate, its chain and a bundle of roots. */
const MAX_BOOTSTRAP_ANSWER_BYTES = 1 << 20;

export interface BootstrapRequest {
  url: string;
  token: string;
  /** PEM roots that the control plane's certificate must chain to. */
  bundlePem: string;
  trustDomain: string;
  namespace: string;
  service: string;
  certsDir: string;
  /** Where each retry is said, with its cause. */
  log?: Logger;
  /** Overrides BOOTSTRAP_ATTEMPT_MS (tests). */
  attemptMs?: number;
}

/** A new key and the control plane's answer to its CSR: everything the bootstrap and renewal paths share. */
export async function requestCertificate(spiffeId: string, service: string, send: (csr: string) => Promise<unknown>): Promise<{ keyPem: string; answer: unknown }> {
  const keys = await generateKeyPair();
  const answer = await send(await makeCsr(keys, spiffeId, service));
  return { keyPem: await exportPrivateKeyPem(keys.privateKey), answer };
}

/**
 * The answer checked as this workload's certificate, in memory (nothing is written): the
 * key matches the leaf, the chain verifies to the answer's bundle, and the identity is the
 * one expected, proven by roots trusted already (signed-identity.ts).
 */
export async function certificateFromAnswer(certsDir: string, keyPem: string, answer: unknown, path: string, trusted: TrustedIdentity): Promise<WorkloadCerts> {
  const signed = readSignedCertificate(answer, path);
  // What is wrong is in the answer, not in the certificates directory: errors name the answer.
  const answered = { chain: `the chain ${path} answered`, key: `the key sent to ${path} in a CSR`, bundle: `the bundle ${path} answered` };
  const certs = await workloadCertsFromPem({ chainPem: signed.chain, keyPem, bundlePem: signed.bundle }, answered);
  const problem = await identityProblem(certs, trusted);
  if (problem) throw new MeshError(`${path}: ${problem}; not taken`);
  const p = workloadPaths(certsDir);
  return { ...certs, files: { chain: p.chain, key: p.key, bundle: p.bundle } };
}

/** Key, leaf, chain and bundle, as one set: all written, or none (core/files.ts). */
export function saveCertificate(certsDir: string, certs: WorkloadCerts): void {
  const p = workloadPaths(certsDir);
  const first = decodePem(certs.chainPem).find((b) => b.type === "CERTIFICATE")!;
  writeFileSet(
    [
      { path: p.key, content: certs.keyPem, secret: true },
      { path: p.cert, content: encodePem("CERTIFICATE", first.der) },
      { path: p.chain, content: certs.chainPem },
      { path: p.bundle, content: certs.bundleText },
    ],
    { force: true },
  );
}

export async function bootstrap(req: BootstrapRequest): Promise<WorkloadCerts> {
  const spiffeId = formatSpiffeId(workloadId(req.trustDomain, req.namespace, req.service));
  const { keyPem, answer } = await requestCertificate(spiffeId, req.service, (csr) => sendBootstrapRequest(req, csr));
  // The operator's bundle is what proves the identity: the answer's own bundle only agrees with its chain.
  const trusted = { spiffeId, trustDomain: req.trustDomain, bundle: TrustBundle.fromPem(req.bundlePem, undefined, "the trust bundle (--ca)") };
  const certs = await certificateFromAnswer(req.certsDir, keyPem, answer, `${req.url} bootstrap answer`, trusted);
  saveCertificate(req.certsDir, certs);
  return certs;
}

/**
 * The bootstrap request, its answer read whole. A try that gets no answer in time, or loses
 * its connection on the way (the control plane restarting, or rotating its listener's
 * certificate, which resets connections still queued), is tried again; an answer is final.
 */
async function sendBootstrapRequest(req: BootstrapRequest, csr: string): Promise<unknown> {
  const backoff = new Backoff();
  const attemptMs = req.attemptMs ?? BOOTSTRAP_ATTEMPT_MS;
  for (let attempt = 1; ; attempt++) {
    let res: Response;
    let text: string;
    try {
      const signal = AbortSignal.timeout(attemptMs);
      res = await fetch(new URL("/v1/bootstrap", req.url), {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ token: req.token, csr }),
        signal,
        tls: { ca: req.bundlePem, rejectUnauthorized: true, checkServerIdentity: expectPeer(controlPlaneId(req.trustDomain), req.trustDomain) as never },
      });
      text = await boundedText(res, MAX_BOOTSTRAP_ANSWER_BYTES, `${req.url} bootstrap answer`);
    } catch (err) {
      if (err instanceof AnswerTooLarge) throw new MeshError(err.message);
      const cause = (err as Error).name === "TimeoutError" ? `no answer within ${attemptMs / 1000} s` : (err as Error).message;
      if (attempt >= REACH_ATTEMPTS) throw new MeshError(`cannot reach the control plane's bootstrap port ${req.url} (${attempt} tries): ${cause}`);
      const delayMs = backoff.next();
      req.log?.warn({ url: req.url, attempt, err: cause, retryInMs: Math.round(delayMs) }, "bootstrap request failed; retrying");
      await Bun.sleep(delayMs);
      continue;
    }
    let body: { error?: unknown } | undefined;
    try {
      body = JSON.parse(text) as { error?: unknown };
    } catch {
      body = undefined;
    }
    if (!res.ok) throw new MeshError(`bootstrap refused (${res.status}): ${typeof body?.error === "string" ? body.error : "no reason given"}`);
    if (body === undefined) throw new MeshError(`${req.url} bootstrap answer: not JSON`);
    return body;
  }
}
