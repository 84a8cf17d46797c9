/*
 * Review of mesh's PKI (src/pki) and certificate authority (src/ca, src/cli/ca), as an attacker.
 *
 * What was attacked
 *  - The identity reader: leaves crafted with the real openssl (signed by a real `mesh ca`
 *    intermediate, so the chain is good and only the identity is hostile): the ID only in the
 *    subject CN, an upper-case scheme, userinfo, percent-encoding, dot and empty segments, two
 *    URI SANs; non-DER encodings of a real leaf (trailing bytes, non-minimal/indefinite/huge
 *    lengths, truncation) and 50 000-deep nesting, with openssl's verdict beside mesh's.
 *  - Trust bundles: truncated or corrupted PEM blocks, junk blocks, roots without a SPIFFE ID.
 *  - The sidecar's mTLS listener (src/proxy/transport/h1-server, the in-process listener the
 *    proxy runs) with a bundle holding a second trust domain's root: a partner CA forging an
 *    identity of our trust domain. Real TLS over 127.0.0.1 only.
 *  - `mesh ca init|issue|inspect|rotate` (from source, run as a process): file and
 *    directory modes under a umask of 000, hostile --service/--namespace/--trust-domain values,
 *    a CA directory whose intermediate belongs to another root, rotation overlap judged by
 *    openssl, leaves issued right after init against a peer whose clock lags, and `inspect` on
 *    certificates with unparseable extensions, expired CAs, non-SPIFFE bundles, long chains.
 *
 * Topology: one temp dir under /tmp holding two CAs made by `mesh ca init` (example.org,
 * the mesh's own; partner.test, a federated partner), a workload "web" issued by the first,
 * and openssl-made keys and certificates. One in-process H1Listener on 127.0.0.1:0 per mTLS
 * test, closed in the test (and again in afterAll); raw Bun TLS clients. No other servers.
 *
 * What must hold
 *  - A peer's identity is the one URI SAN of a strictly-DER leaf, a valid SPIFFE ID; never the
 *    CN, never a normalised form. Anything non-DER is refused, quickly, without a stack blow-up.
 *  - A root of trust domain B never vouches for an identity of trust domain A (SPIFFE bundles
 *    are per trust domain; src/pki/trust-bundle.ts says so), in the sidecar as in verify.ts.
 *  - Keys are 0600 and the directories holding them are not writable by others, whatever the
 *    umask; nothing is overwritten silently; names cannot inject another identity or path.
 *  - A CA directory whose files do not fit together is refused (src/ca/authority.ts promises it).
 *  - `mesh ca inspect` answers hostile input with a verdict or an error naming the file, never
 *    an internal error (exit 70), and never calls an expired CA "trusted".
 *  - A PEM file is read whole or refused (src/pki/pem.ts promises it), as openssl does.
 *
 * Judged acceptable (tested where cheap, see the final report too)
 *  - OpenSSL accepts BER (indefinite/non-minimal lengths, trailing bytes) on a certificate
 *    read from a file; mesh refuses: stricter fails closed, and the TLS layer is strict DER.
 *  - Other blocks (a CRL, text) in a bundle are skipped, as openssl does; a PRIVATE KEY is
 *    refused, since a bundle is handed to every workload.
 *  - Trust domains such as "." or "a..b" pass the character rule, as go-spiffe's do.
 *  - The trust-bundle root is held to basicConstraints/keyUsage (stricter than RFC 5280).
 *
 * Faults this review found were fixed; their tests keep names that state what now holds. Among
 * them: directories made under umask 000 are 0700 (holding a key) or 0755 (src/core/files.ts); a
 * CA directory whose intermediate another root signed is refused on load (src/ca/authority.ts);
 * `inspect` judges unparseable extensions, names a non-SPIFFE bundle and calls an expired CA
 * INVALID (src/cli/ca/inspect.ts, src/pki/verify-ca.ts); a truncated or corrupted PEM block is
 * refused (src/pki/pem.ts); root and intermediate are backdated as leaves are.
 */
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync, cpSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Socket } from "bun";
import { Certificate, CertificateError } from "../../src/pki/certificate.ts";
import { readCertificates } from "../../src/pki/load.ts";
import { spiffeIdOfLeaf, TrustBundle, verifyPeerChain } from "../../src/pki/verify.ts";
import { listenerTlsOf, workloadCertsFromPem } from "../../src/proxy/certs.ts";
import { H1Listener, type ListenerTls } from "../../src/proxy/transport/h1-server/listener.ts";
import { alpnWire } from "../../src/proxy/transport/mux/frame.ts";

/** `mesh` from source, as every other test runs it: a clean checkout has no built binary, and a stale one would test old code. */
const MESH = [process.execPath, resolve(import.meta.dir, "../../src/main.ts")];
const tmp = mkdtempSync("/tmp/mesh-review-pki-ca-");
const at = (...p: string[]) => join(tmp, ...p);
const read = (...p: string[]) => readFileSync(at(...p), "utf8");
const closers: (() => void)[] = [];

afterAll(() => {
  for (const c of closers.splice(0).reverse()) {
    try {
      c();
    } catch {
      // already closed
    }
  }
  rmSync(tmp, { recursive: true, force: true });
});

interface Run {
  code: number | null;
  out: string;
  err: string;
}

/** Runs a process to completion, bounded in time; spawnSync kills it at the timeout. */
function run(cmd: string[], opts: { cwd?: string; stdin?: string } = {}): Run {
  const p = Bun.spawnSync(cmd, {
    cwd: opts.cwd ?? tmp,
    stdin: opts.stdin !== undefined ? Buffer.from(opts.stdin) : "ignore",
    stdout: "pipe",
    stderr: "pipe",
    timeout: 30_000,
    env: { ...process.env, NO_COLOR: "1" },
  });
  return { code: p.exitCode, out: p.stdout.toString(), err: p.stderr.toString() };
}
const mesh = (...args: string[]) => run([...MESH, ...args]);
/** The binary under a umask of 000, as a container or a service with UMask=0000 runs it. */
const meshUmask0 = (...args: string[]) => run(["sh", "-c", 'umask 000 && exec "$0" "$@"', ...MESH, ...args]);
const openssl = (...args: string[]) => run(["openssl", ...args]);

function ok(r: Run, what: string): Run {
  if (r.code !== 0) throw new Error(`${what} failed (${r.code}): ${r.err}${r.out}`);
  return r;
}

const TD = "example.org";
const PARTNER = "partner.test";
const CA = at("ca");
const PARTNER_CA = at("partner-ca");
const WEB = at("web");

/** An openssl-made P-256 key (PKCS#8), and a leaf for it signed by `ca` with the given extension lines. */
function opensslLeaf(name: string, ca: string, extLines: string[], subject = `/CN=${name}`): { cert: string; key: string } {
  const key = at(`${name}.key`);
  const csr = at(`${name}.csr`);
  const ext = at(`${name}.ext`);
  const cert = at(`${name}.pem`);
  ok(openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key), "genpkey");
  ok(openssl("req", "-new", "-key", key, "-subj", subject, "-out", csr), "req");
  writeFileSync(ext, extLines.join("\n") + "\n");
  ok(
    openssl("x509", "-req", "-in", csr, "-CA", join(ca, "intermediate.pem"), "-CAkey", join(ca, "intermediate.key"), "-set_serial", `0x${(Math.random() * 2 ** 48).toString(16).split(".")[0]}`, "-days", "1", "-sha256", "-extfile", ext, "-out", cert),
    `sign ${name}`,
  );
  return { cert, key };
}

const SVID_EXT = ["basicConstraints=critical,CA:FALSE", "keyUsage=critical,digitalSignature", "extendedKeyUsage=serverAuth,clientAuth"];

function certsOf(...files: string[]): Certificate[] {
  return files.flatMap((f) => readCertificates(readFileSync(f, "utf8"), f, "test chain"));
}

beforeAll(() => {
  ok(mesh("ca", "init", "--trust-domain", TD, "--out", CA), "ca init");
  ok(mesh("ca", "init", "--trust-domain", PARTNER, "--out", PARTNER_CA), "partner ca init");
  ok(mesh("ca", "issue", "--service", "web", "--ca-dir", CA, "--out", WEB), "ca issue web");
});

// ---------------------------------------------------------------------------------------------
describe("identity reading: leaves crafted by openssl under a real mesh intermediate", () => {
  test("a SPIFFE ID only in the subject CN is no identity, though openssl verifies the chain", () => {
    const leaf = opensslLeaf("cn-only", CA, SVID_EXT, `/CN=spiffe:\\/\\/${TD}\\/ns\\/default\\/sa\\/admin`);
    const v = openssl("verify", "-CAfile", join(CA, "bundle.pem"), "-untrusted", join(CA, "intermediate.pem"), leaf.cert);
    expect(v.out).toContain(": OK");
    const [cert] = certsOf(leaf.cert);
    expect(cert!.subject).toContain("spiffe://");
    const id = spiffeIdOfLeaf(cert!);
    expect(id.ok ? id.spiffeId : id.reason).toBe("no_uri_san");
  });

  // Each is a URI openssl writes and prints as the SAN; none is a valid SPIFFE ID (SPIFFE-ID §2).
  const hostile: [string, string][] = [
    ["upper-case scheme", `SPIFFE://${TD}/ns/default/sa/admin`],
    ["userinfo", `spiffe://admin@${TD}/ns/default/sa/admin`],
    ["percent-encoded letter", `spiffe://${TD}/ns/default/sa/%61dmin`],
    ["percent-encoded slash", `spiffe://${TD}/ns/default%2Fsa/admin`],
    ["trailing dot segment", `spiffe://${TD}/ns/default/sa/admin/.`],
    ["dot-dot segment", `spiffe://${TD}/ns/x/../default/sa/admin`],
    ["empty segment", `spiffe://${TD}//ns/default/sa/admin`],
    ["empty path", `spiffe://${TD}/`],
    ["trust-domain only", `spiffe://${TD}`],
    ["upper-case trust domain", `spiffe://EXAMPLE.ORG/ns/default/sa/admin`],
    ["port", `spiffe://${TD}:8443/ns/default/sa/admin`],
    ["query", `spiffe://${TD}/ns/default/sa/admin?x=1`],
    ["fragment", `spiffe://${TD}/ns/default/sa/admin#x`],
    ["no authority", `spiffe:${TD}/ns/default/sa/admin`],
    ["semicolon parameter", `spiffe://${TD}/ns/default/sa/admin;v=1`],
    ["space", `spiffe://${TD}/ns/default/sa/ad min`],
  ];
  test("hostile URI SANs: openssl shows them, mesh reads no identity (malformed_id), its verifier refuses", async () => {
    const bundle = TrustBundle.fromPem(read("ca", "bundle.pem"));
    const inter = certsOf(join(CA, "intermediate.pem"));
    const verdicts: string[] = [];
    for (const [i, [label, uri]] of hostile.entries()) {
      const leaf = opensslLeaf(`hostile-${i}`, CA, [...SVID_EXT, `subjectAltName=URI:${uri.replace("#", "\\#")}`]); // `#` starts a comment in openssl's config
      const text = openssl("x509", "-noout", "-ext", "subjectAltName", "-in", leaf.cert).out;
      expect(text).toContain(`URI:${uri}`);
      const chain = [...certsOf(leaf.cert), ...inter];
      const id = spiffeIdOfLeaf(chain[0]!);
      const v = await verifyPeerChain(chain, bundle);
      verdicts.push(`${label}: ${id.ok ? id.spiffeId : id.reason} / ${v.ok ? "ACCEPTED" : v.reason}`);
    }
    expect(verdicts).toEqual(hostile.map(([label]) => `${label}: malformed_id / malformed_id`));
  });

  test("two URI SANs made by openssl (the real ID and an admin ID) → multiple_uri_sans, whichever comes first", async () => {
    const bundle = TrustBundle.fromPem(read("ca", "bundle.pem"));
    for (const [i, order] of [[`spiffe://${TD}/ns/default/sa/web`, `spiffe://${TD}/ns/default/sa/admin`], [`spiffe://${TD}/ns/default/sa/admin`, `spiffe://${TD}/ns/default/sa/web`]].entries()) {
      const leaf = opensslLeaf(`two-uris-${i}`, CA, [...SVID_EXT, `subjectAltName=URI:${order[0]},URI:${order[1]}`]);
      const v = await verifyPeerChain([...certsOf(leaf.cert), ...certsOf(join(CA, "intermediate.pem"))], bundle);
      expect(v.ok ? v.spiffeId : v.reason).toBe("multiple_uri_sans");
    }
  });

  test("`mesh ca inspect` of such a leaf shows no identity and an INVALID verdict, exit 1", () => {
    const leaf = opensslLeaf("inspect-upper", CA, [...SVID_EXT, `subjectAltName=URI:SPIFFE://${TD}/ns/default/sa/admin`]);
    writeFileSync(at("inspect-upper-chain.pem"), readFileSync(leaf.cert, "utf8") + read("ca", "intermediate.pem"));
    const r = mesh("ca", "inspect", at("inspect-upper-chain.pem"), "--bundle", join(CA, "bundle.pem"));
    expect(r.code).toBe(1);
    expect(r.out).toMatch(/Identity:\s+none \(malformed_id\)/);
    expect(r.out).toMatch(/Chain:\s+INVALID \(malformed_id\)/);
  });
});

// ---------------------------------------------------------------------------------------------
describe("non-DER and hostile encodings of a real mesh-issued leaf, beside openssl's verdict", () => {
  const pemToDer = (pem: string) => new Uint8Array(Buffer.from(pem.split("\n").filter((l) => l && !l.startsWith("-----")).join(""), "base64"));

  test("every re-encoding is refused by mesh (CertificateError) though openssl reads most of them", () => {
    const der = pemToDer(read("web", "cert.pem"));
    expect([der[0], der[1]]).toEqual([0x30, 0x82]); // SEQUENCE with a two-byte length
    const len = [der[2]!, der[3]!];
    const body = der.subarray(4);
    const mutations: Record<string, Uint8Array> = {
      "a trailing byte": new Uint8Array([...der, 0x00]),
      "a non-minimal 3-byte length": new Uint8Array([0x30, 0x83, 0x00, ...len, ...body]),
      "a 5-byte length": new Uint8Array([0x30, 0x85, 0, 0, 0, ...len, ...body]),
      "an indefinite length": new Uint8Array([0x30, 0x80, ...body, 0x00, 0x00]),
      "a 4 GiB length": new Uint8Array([0x30, 0x84, 0xff, 0xff, 0xff, 0xff, ...body]),
      "one byte short": der.slice(0, -1),
    };
    const table: string[] = [];
    for (const [label, bytes] of Object.entries(mutations)) {
      const file = at(`mut-${label.replace(/\W+/g, "-")}.der`);
      writeFileSync(file, bytes);
      const o = openssl("x509", "-inform", "DER", "-noout", "-in", file).code === 0 ? "openssl reads it" : "openssl refuses";
      let m = "mesh reads it";
      const t0 = performance.now();
      try {
        Certificate.fromDer(bytes);
      } catch (err) {
        m = err instanceof CertificateError ? "mesh refuses" : `mesh throws ${(err as Error).name}`;
      }
      expect(performance.now() - t0).toBeLessThan(200);
      table.push(`${label}: ${m}; ${o}`);
    }
    // OpenSSL's file reader is BER-lenient (it re-encodes); mesh is strict, which fails closed.
    expect(table).toEqual([
      "a trailing byte: mesh refuses; openssl reads it",
      "a non-minimal 3-byte length: mesh refuses; openssl reads it",
      "a 5-byte length: mesh refuses; openssl reads it",
      "an indefinite length: mesh refuses; openssl reads it",
      "a 4 GiB length: mesh refuses; openssl refuses",
      "one byte short: mesh refuses; openssl refuses",
    ]);
    expect(Certificate.fromDer(der).subject).toBe("CN=web, OU=default, O=example.org");
  });

  test("50 000-deep nested SEQUENCEs and 1 MiB of nesting headers: a CertificateError at once, no stack overflow", () => {
    const depth = 50_000;
    // Innermost first: each level wraps the previous in a SEQUENCE with a minimal long-form length.
    const parts: number[][] = [];
    let size = 0;
    for (let i = 0; i < depth; i++) {
      const header = size < 0x80 ? [0x30, size] : size < 0x100 ? [0x30, 0x81, size] : size < 0x10000 ? [0x30, 0x82, size >> 8, size & 0xff] : [0x30, 0x83, size >> 16, (size >> 8) & 0xff, size & 0xff];
      parts.push(header);
      size += header.length;
    }
    const nested = new Uint8Array(parts.reverse().flat());
    expect(nested.length).toBe(size);
    const t0 = performance.now();
    expect(() => Certificate.fromDer(nested)).toThrow(CertificateError);
    const headers = new Uint8Array(1 << 20).fill(0x30); // 0x30 0x30: SEQUENCE of length 48, all the way down
    expect(() => Certificate.fromDer(headers)).toThrow(CertificateError);
    expect(performance.now() - t0).toBeLessThan(1000);
    writeFileSync(at("nested.der"), nested);
    expect(openssl("x509", "-inform", "DER", "-noout", "-in", at("nested.der")).code).not.toBe(0);
  });
});

// ---------------------------------------------------------------------------------------------
describe("trust bundles", () => {
  test("a truncated or corrupted CERTIFICATE block in a bundle is refused naming the file, as openssl refuses it, not skipped", () => {
    const root = read("ca", "root.pem");
    const partnerRoot = read("partner-ca", "root.pem");
    // A copy cut short (no END line) and a block whose base64 got a stray '-'.
    const truncated = root + partnerRoot.split("\n").slice(0, 6).join("\n") + "\n";
    const lines = partnerRoot.split("\n");
    lines[3] = lines[3]!.slice(0, 10) + "-" + lines[3]!.slice(11);
    const corrupted = root + lines.join("\n");
    const outcomes: string[] = [];
    for (const [label, text] of [["truncated", truncated], ["corrupted", corrupted]] as const) {
      const file = at(`bundle-${label}.pem`);
      writeFileSync(file, text);
      const o = openssl("crl2pkcs7", "-nocrl", "-certfile", file).code === 0 ? "openssl reads it" : "openssl refuses";
      let m: string;
      try {
        m = `mesh reads ${TrustBundle.fromPem(text, undefined, file).size} root(s)`;
      } catch (err) {
        m = (err as Error).message.includes(file) ? "mesh refuses, naming the file" : `mesh refuses: ${(err as Error).message}`;
      }
      outcomes.push(`${label}: ${m}; ${o}`);
    }
    expect(outcomes).toEqual([
      "truncated: mesh refuses, naming the file; openssl refuses",
      "corrupted: mesh refuses, naming the file; openssl refuses",
    ]);
  });

  test("other blocks and prose in a bundle are skipped, as openssl does; the certificates are all read", () => {
    const text = "issued by ops\n" + read("ca", "root.pem") + "\n-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n" + read("partner-ca", "root.pem");
    const bundle = TrustBundle.fromPem(text, undefined, "b.pem");
    expect(bundle.trustDomains()).toEqual([TD, PARTNER]);
    expect(bundle.size).toBe(2);
  });

  test("a private key pasted into a bundle is refused naming its block and line, not handed out with the bundle", () => {
    const root = read("ca", "root.pem");
    const text = root + read("web", "key.pem");
    const keyLine = root.split("\n").length;
    expect(() => TrustBundle.fromPem(text, undefined, "b.pem")).toThrow(`trust bundle holds a private key ("PRIVATE KEY" block at line ${keyLine}); keep keys in their own file`);
    const legacy = root + "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n";
    expect(() => TrustBundle.fromPem(legacy, undefined, "b.pem")).toThrow('"EC PRIVATE KEY" block');
  });
});

// ---------------------------------------------------------------------------------------------
describe("the sidecar's mTLS listener (real TLS on 127.0.0.1)", () => {
  /** A listener as the proxy runs it: its own chain and key, the bundle as `ca`, its trust domain. */
  /** A listener serving web's certificate, checking callers against `bundlePem`, or with the TLS a sidecar gives it. */
  function listen(bundlePem: string | ListenerTls) {
    const tls: ListenerTls = typeof bundlePem === "string" ? { cert: read("web", "chain.pem"), key: read("web", "key.pem"), ca: bundlePem, trustDomain: TD, notAfterMs: Date.now() + 3600_000 } : bundlePem;
    const listener = new H1Listener({
      hostname: "127.0.0.1",
      port: 0,
      tls,
      limits: { maxBodyBytes: 1 << 16, idleTimeoutS: 10 },
      events: { onRefused: () => {}, onOpen: () => {}, onCredentialEnd: () => {} },
      tcp: () => ({ onData: () => {}, onDrain: () => {}, onTimeout: () => {}, onEnd: () => {}, onClose: () => {} }),
      handler: { refused: () => {}, upgrade: () => {}, request: (req, res) => res.respond(200, { "content-type": "text/plain" }, `caller ${req.peer}`) },
    });
    const port = listener.listen();
    const close = () => listener.closeAll();
    closers.push(close);
    return { port, close };
  }

  /** Presents `chainPem`/`keyPem`, sends one GET once the handshake is done; what came back, within 5 s. */
  async function call(port: number, chainPem: string, keyPem: string): Promise<{ handshake: boolean; text: string; error?: string }> {
    const state = { handshake: false, text: "", error: undefined as string | undefined };
    let done!: () => void;
    const finished = new Promise<void>((r) => (done = r));
    let socket: Socket<undefined> | undefined;
    try {
      socket = await Bun.connect<undefined>({
        hostname: "127.0.0.1",
        port,
        tls: { cert: chainPem, key: keyPem, rejectUnauthorized: false, ALPNProtocols: alpnWire(["http/1.1"]) },
        socket: {
          handshake: (s) => {
            state.handshake = true;
            s.write(`GET /who HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n`);
          },
          data: (_s, chunk) => {
            state.text += chunk.toString();
            if (/\r\n\r\n[\s\S]*caller /.test(state.text)) done();
          },
          error: (_s, err) => {
            state.error ??= err.message;
            done();
          },
          close: () => done(),
        },
      });
    } catch (err) {
      state.error = (err as Error).message;
      return state;
    }
    const timer = setTimeout(done, 5000);
    await finished;
    clearTimeout(timer);
    socket.end();
    return state;
  }

  function forgedAdmin() {
    // The partner's CA (another trust domain) issues, with plain openssl, a leaf claiming OUR admin.
    const leaf = opensslLeaf("forged-admin", PARTNER_CA, [...SVID_EXT, `subjectAltName=URI:spiffe://${TD}/ns/default/sa/admin`]);
    return { chain: readFileSync(leaf.cert, "utf8") + read("partner-ca", "intermediate.pem"), key: readFileSync(leaf.key, "utf8") };
  }

  test("with only its own trust domain's roots, a leaf forged by another CA is refused at the handshake", async () => {
    const forged = forgedAdmin();
    const l = listen(read("ca", "bundle.pem"));
    const r = await call(l.port, forged.chain, forged.key);
    l.close();
    expect(r.text).not.toContain("caller spiffe://");
    const good = listen(read("ca", "bundle.pem"));
    const g = await call(good.port, read("web", "chain.pem"), read("web", "key.pem"));
    good.close();
    expect(g.text).toContain(`caller spiffe://${TD}/ns/default/sa/web`);
  });

  test("a federated partner's root in the bundle cannot vouch for an identity of our trust domain", async () => {
    const forged = forgedAdmin();
    const bundlePem = read("ca", "bundle.pem") + read("partner-ca", "bundle.pem");
    // The proxy starts with this bundle: its own chain verifies, and the bundle groups roots by trust domain.
    const own = await workloadCertsFromPem({ chainPem: read("web", "chain.pem"), keyPem: read("web", "key.pem"), bundlePem }, { chain: "chain.pem", key: "key.pem", bundle: "bundle.pem" });
    expect(own.trustDomain).toBe(TD);
    expect(own.bundle.trustDomains()).toEqual([TD, PARTNER]);
    // mesh's own verifier gets this right: the partner's root is not a root of example.org.
    const verdict = await verifyPeerChain(certsOf(at("forged-admin.pem"), join(PARTNER_CA, "intermediate.pem")), own.bundle);
    expect(verdict.ok ? verdict.spiffeId : verdict.reason).toBe("wrong_trust_domain");
    // The sidecar's listener, given its TLS as the sidecar gives it, must agree.
    const l = listen(listenerTlsOf(own));
    const r = await call(l.port, forged.chain, forged.key);
    l.close();
    expect(r.text).not.toContain(`caller spiffe://${TD}/ns/default/sa/admin`);
  });
});

// ---------------------------------------------------------------------------------------------
describe("mesh ca: files, names, loading", () => {
  const mode = (p: string) => statSync(p).mode & 0o777;

  test("under umask 000 every private key is still 0600: after init, issue, rotate and rotate --root", () => {
    const dir = at("u0-keys", "ca");
    ok(meshUmask0("ca", "init", "--trust-domain", TD, "--out", dir), "init");
    ok(meshUmask0("ca", "issue", "--service", "web", "--ca-dir", dir), "issue");
    ok(meshUmask0("ca", "rotate", "--ca-dir", dir), "rotate");
    ok(meshUmask0("ca", "rotate", "--root", "--ca-dir", dir), "rotate --root");
    const files = [join(dir, "root.key"), join(dir, "intermediate.key"), join(dir, "default", "web", "key.pem")];
    expect(files.map((f) => `${f}: ${mode(f).toString(8)}`)).toEqual(files.map((f) => `${f}: 600`));
    for (const f of ["root.pem", "intermediate.pem", "bundle.pem"]) expect(mode(join(dir, f))).toBe(0o644);
    for (const f of readdirSync(join(dir, "retired"))) expect(f.endsWith(".pem") && mode(join(dir, "retired", f)) === 0o644).toBe(true);
  });

  test("under umask 000 the CA directory and a workload's key directory are not writable by group or others", () => {
    const dir = at("u0-dirs", "ca");
    ok(meshUmask0("ca", "init", "--trust-domain", TD, "--out", dir), "init");
    ok(meshUmask0("ca", "issue", "--service", "web", "--ca-dir", dir), "issue");
    // Anyone who may write a directory may replace root.pem, bundle.pem or intermediate.{pem,key} in it.
    const dirs = [dir, join(dir, "default"), join(dir, "default", "web")];
    expect(dirs.map((d) => `${d}: ${(mode(d) & 0o022).toString(8)}`)).toEqual(dirs.map((d) => `${d}: 0`));
  });

  test("hostile --service, --namespace and --trust-domain values are refused (exit 64, flag named) and nothing is written", () => {
    const out = at("hostile-out");
    const cases: [string[], string][] = [
      [["ca", "issue", "--service", "web/../../../etc", "--ca-dir", CA, "--out", out], "--service"],
      [["ca", "issue", "--service", "web,O=evil", "--ca-dir", CA, "--out", out], "--service"],
      [["ca", "issue", "--service", "admin\nURI:spiffe://example.org/ns/default/sa/root", "--ca-dir", CA, "--out", out], "--service"],
      [["ca", "issue", "--service", "web", "--namespace", "..", "--ca-dir", CA, "--out", out], "--namespace"],
      [["ca", "issue", "--service", "web", "--namespace", "default/sa/admin", "--ca-dir", CA, "--out", out], "--namespace"],
      [["ca", "issue", "--service", "web", "--namespace", "Default", "--ca-dir", CA, "--out", out], "--namespace"],
      [["ca", "init", "--trust-domain", `${TD}/ns/default/sa/admin`, "--out", out], "--trust-domain"],
      [["ca", "init", "--trust-domain", `admin@${TD}`, "--out", out], "--trust-domain"],
      [["ca", "init", "--trust-domain", "EXAMPLE.ORG", "--out", out], "--trust-domain"],
      [["ca", "init", "--trust-domain", `${TD}?x`, "--out", out], "--trust-domain"],
    ];
    for (const [args, flag] of cases) {
      const r = mesh(...args);
      expect(`${args.join(" ")} → ${r.code} ${r.err.includes(flag)}`).toBe(`${args.join(" ")} → 64 true`);
    }
    expect(() => statSync(out)).toThrow();
  });

  test("ca bundle --out onto an existing file, and issue onto an existing key, are refused without --force", () => {
    const target = at("existing-bundle.pem");
    writeFileSync(target, "keep me\n");
    const r = mesh("ca", "bundle", "--ca-dir", CA, "--out", target);
    expect(r.code).toBe(73);
    expect(readFileSync(target, "utf8")).toBe("keep me\n");
    const key = read("web", "key.pem");
    expect(mesh("ca", "issue", "--service", "web", "--ca-dir", CA, "--out", WEB).code).toBe(73);
    expect(read("web", "key.pem")).toBe(key);
  });

  test("a CA directory whose intermediate was issued by another root is refused (exit 65, intermediate.pem named), not used to issue broken chains", async () => {
    // Same trust domain, same names ("CN=mesh intermediate CA, O=example.org"), another root.
    const other = at("other-same-td");
    ok(mesh("ca", "init", "--trust-domain", TD, "--out", other), "init other");
    const mixed = at("mixed-ca");
    cpSync(CA, mixed, { recursive: true });
    for (const f of ["intermediate.pem", "intermediate.key"]) writeFileSync(join(mixed, f), readFileSync(join(other, f)));
    const r = mesh("ca", "issue", "--service", "orders", "--ca-dir", mixed, "--out", at("mixed-orders"));
    // What was handed out (if anything) does not verify against the CA's own bundle.
    let handedOut = "nothing written";
    try {
      const chain = certsOf(at("mixed-orders", "chain.pem"));
      const v = await verifyPeerChain(chain, TrustBundle.fromPem(readFileSync(join(mixed, "bundle.pem"), "utf8")));
      handedOut = `a chain whose verdict is ${v.ok ? "ok" : v.reason}`;
    } catch {
      // nothing written
    }
    expect({ code: r.code, namesFile: r.err.includes(join(mixed, "intermediate.pem")), handedOut }).toEqual({ code: 65, namesFile: true, handedOut: "nothing written" });
  });

  test("a root rotation, judged by openssl: both generations verify during the overlap, only the new one after --complete", () => {
    const dir = at("rot", "ca");
    ok(mesh("ca", "init", "--trust-domain", TD, "--out", dir), "init");
    ok(mesh("ca", "issue", "--service", "old", "--ca-dir", dir), "issue old");
    const oldInter = readFileSync(join(dir, "intermediate.pem"), "utf8");
    writeFileSync(at("rot", "old-inter.pem"), oldInter);
    ok(mesh("ca", "rotate", "--root", "--ca-dir", dir), "rotate --root");
    ok(mesh("ca", "issue", "--service", "new", "--ca-dir", dir), "issue new");
    const verify = (leafDir: string, inter: string) =>
      openssl("verify", "-x509_strict", "-purpose", "sslclient", "-CAfile", join(dir, "bundle.pem"), "-untrusted", inter, join(dir, "default", leafDir, "cert.pem")).code;
    expect([verify("old", at("rot", "old-inter.pem")), verify("new", join(dir, "intermediate.pem"))]).toEqual([0, 0]);
    // The retired directory holds what was replaced; the new root key is 0600.
    expect(readdirSync(join(dir, "retired")).sort().map((f) => f.split("-")[0])).toEqual(["intermediate", "root"]);
    expect(statSync(join(dir, "root.key")).mode & 0o777).toBe(0o600);
    ok(mesh("ca", "rotate", "--complete", "--ca-dir", dir, "--force"), "rotate --complete");
    expect([verify("old", at("rot", "old-inter.pem")), verify("new", join(dir, "intermediate.pem"))]).toEqual([2, 0]);
  });

  test("a leaf issued right after `ca init` is accepted by a peer whose clock lags 30 s: root and intermediate are backdated too", async () => {
    const dir = at("skew", "ca");
    ok(mesh("ca", "init", "--trust-domain", TD, "--out", dir), "init");
    ok(mesh("ca", "issue", "--service", "fresh", "--ca-dir", dir), "issue");
    const [leaf, inter] = certsOf(join(dir, "default", "fresh", "chain.pem"));
    // The leaf was backdated a minute for exactly this peer; its chain must be too.
    const lagging = new Date(leaf!.notBefore.getTime() + 60_000 - 30_000);
    expect(lagging.getTime()).toBeGreaterThanOrEqual(leaf!.notBefore.getTime());
    const v = await verifyPeerChain([leaf!, inter!], TrustBundle.fromPem(readFileSync(join(dir, "bundle.pem"), "utf8")), { now: lagging });
    const o = openssl("verify", "-attime", String(Math.floor(lagging.getTime() / 1000)), "-CAfile", join(dir, "bundle.pem"), "-untrusted", join(dir, "intermediate.pem"), join(dir, "default", "fresh", "cert.pem"));
    expect({ mesh: v.ok ? "ok" : `${v.reason}: ${v.detail}`, openssl: o.code === 0 ? "ok" : (/error \d+ at \d+ depth lookup: [^\n]*/.exec(o.err + o.out)?.[0] ?? o.err) }).toEqual({ mesh: "ok", openssl: "ok" });
  });
});

// ---------------------------------------------------------------------------------------------
describe("mesh ca inspect on hostile input", () => {
  test("a leaf with an unparseable keyUsage, extKeyUsage, basicConstraints or SAN gets a verdict or an error naming the file, never exit 70", () => {
    const results: string[] = [];
    for (const [name, ext] of [
      ["bad-ku", "keyUsage=DER:0500"],
      ["bad-eku", "extendedKeyUsage=DER:0500"],
      ["bad-bc", "basicConstraints=DER:0500"],
      ["bad-san", "subjectAltName=DER:0500"],
    ] as const) {
      const extra = name === "bad-san" ? [] : [`subjectAltName=URI:spiffe://${TD}/ns/default/sa/x`];
      const lines = [...SVID_EXT.filter((l) => !l.startsWith(ext.split("=")[0]!)), ext, ...extra];
      const leaf = opensslLeaf(name, CA, lines);
      const r = mesh("ca", "inspect", leaf.cert, "--bundle", join(CA, "bundle.pem"));
      const clear = (r.code === 1 && /Chain:\s+INVALID \(unsupported_cert\)/.test(r.out)) || (r.code === 65 && r.err.includes(leaf.cert));
      results.push(`${name}: ${clear ? "clear" : `exit ${r.code}: ${r.err.trim() || r.out.trim()}`}`);
    }
    expect(results).toEqual(["bad-ku: clear", "bad-eku: clear", "bad-bc: clear", "bad-san: clear"]);
  });

  test("a bundle whose root carries no SPIFFE ID is refused (exit 65) with the bundle file named", () => {
    const key = at("plain-root.key");
    const root = at("plain-root.pem");
    ok(openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", root, "-subj", "/CN=plain root", "-days", "2"), "plain root");
    const r = mesh("ca", "inspect", join(WEB, "chain.pem"), "--bundle", root);
    expect(r.code).toBe(65);
    expect(r.err).toContain(root);
  });

  test("an expired intermediate signed by the bundle's root is INVALID (expired), exit 1, never 'trusted'", () => {
    // An intermediate valid only in 2020, signed by the real root with `openssl ca` (explicit dates).
    const d = at("oca");
    mkdirSync(join(d, "new"), { recursive: true });
    writeFileSync(join(d, "index.txt"), "");
    writeFileSync(join(d, "serial"), "1000\n");
    writeFileSync(
      join(d, "ca.cnf"),
      [
        "[ca]", "default_ca=c", "[c]", `dir=${d}`, `database=${d}/index.txt`, `new_certs_dir=${d}/new`, `serial=${d}/serial`,
        "default_md=sha256", "policy=p", "unique_subject=no", "[p]", "commonName=supplied", "[ext]",
        "basicConstraints=critical,CA:TRUE,pathlen:0", "keyUsage=critical,keyCertSign,cRLSign", `subjectAltName=URI:spiffe://${TD}`,
      ].join("\n") + "\n",
    );
    ok(openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", join(d, "old.key")), "key");
    ok(openssl("req", "-new", "-key", join(d, "old.key"), "-subj", "/CN=old intermediate", "-out", join(d, "old.csr")), "csr");
    ok(openssl("ca", "-batch", "-config", join(d, "ca.cnf"), "-cert", join(CA, "root.pem"), "-keyfile", join(CA, "root.key"), "-in", join(d, "old.csr"), "-out", join(d, "old.pem"), "-extensions", "ext", "-startdate", "20200101000000Z", "-enddate", "20210101000000Z", "-notext"), "openssl ca");
    expect(openssl("verify", "-CAfile", join(CA, "bundle.pem"), join(d, "old.pem")).code).not.toBe(0); // openssl: expired
    const r = mesh("ca", "inspect", join(d, "old.pem"), "--bundle", join(CA, "bundle.pem"));
    expect(r.out).toMatch(/Not after:.*\(expired\)/);
    expect({ code: r.code, chain: /Chain:\s+trusted/.test(r.out) }).toEqual({ code: 1, chain: false });
    expect(r.out).toMatch(/Chain:\s+INVALID \(expired\): CA certificate "CN=old intermediate" expired/);
  });

  test("a 40-certificate chain is judged quickly with a bounded answer (exit 1, 'chains longer than 8')", () => {
    const chain = at("long-chain.pem");
    writeFileSync(chain, read("web", "cert.pem") + read("ca", "intermediate.pem").repeat(39));
    const t0 = performance.now();
    const r = mesh("ca", "inspect", chain, "--bundle", join(CA, "bundle.pem"));
    expect(performance.now() - t0).toBeLessThan(15_000);
    expect(r.code).toBe(1);
    expect(r.out).toContain("(40 certificates)");
    expect(r.out).toContain("chains longer than 8 are not followed");
  });

  test("a DER (not PEM) certificate and a PEM block of garbage are refused with exit 65, naming the file", () => {
    ok(openssl("x509", "-in", join(WEB, "cert.pem"), "-outform", "DER", "-out", at("web.der")), "to der");
    writeFileSync(at("garbage.pem"), "-----BEGIN CERTIFICATE-----\nAAAAAAAA\n-----END CERTIFICATE-----\n");
    for (const f of [at("web.der"), at("garbage.pem")]) {
      const r = mesh("ca", "inspect", f, "--bundle", join(CA, "bundle.pem"));
      expect(`${r.code} ${r.err.includes(f)}`).toBe("65 true");
      expect(r.err).not.toMatch(/\n\s+at /); // no stack trace
    }
  });
});
