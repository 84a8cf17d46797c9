/**
 * Distinguished names as text for messages ("CN=payments, O=example.org"), in the
 * order the certificate lists them. Never compare names by this text: it is lossy by
 * design (escaped, unknown attributes as hex); compare the DER bytes.
 */
import { ascii, children, DerError, hex, readOid, TAG, type Tlv } from "./der.ts";

const SHORT_NAMES: Record<string, string> = {
  "2.5.4.3": "CN",
  "2.5.4.5": "serialNumber",
  "2.5.4.6": "C",
  "2.5.4.7": "L",
  "2.5.4.8": "ST",
  "2.5.4.10": "O",
  "2.5.4.11": "OU",
  "0.9.2342.19200300.100.1.25": "DC",
  "1.2.840.113549.1.9.1": "E",
};

const utf8 = new TextDecoder("utf-8", { fatal: true });
/** Made on first use: a UTF-16 decoder maps ICU converter data, and BMPString names are rare. */
let utf16be: TextDecoder | undefined;

export function renderName(der: Uint8Array, name: Tlv): string {
  return children(der, name)
    .map((rdn) => {
      if (rdn.tag !== TAG.set) throw new DerError(`a name's RDN at byte ${rdn.start} is not a SET`);
      return children(der, rdn)
        .map((atv) => {
          const [type, value, ...extra] = children(der, atv);
          if (!type || !value || extra.length) throw new DerError(`malformed name attribute at byte ${atv.start}`);
          const oid = readOid(der, type);
          const text = attributeText(der, value);
          return `${SHORT_NAMES[oid] ?? oid}=${text === undefined ? `#${hex(der.subarray(value.start, value.end))}` : escape(text)}`;
        })
        .join("+");
    })
    .join(", ");
}

function attributeText(der: Uint8Array, value: Tlv): string | undefined {
  const bytes = der.subarray(value.body, value.end);
  try {
    switch (value.tag) {
      case TAG.utf8String:
        return utf8.decode(bytes);
      case TAG.bmpString:
        return (utf16be ??= new TextDecoder("utf-16be", { fatal: true })).decode(bytes);
      case TAG.printableString:
      case TAG.ia5String:
        return ascii(der, value);
      case TAG.teletexString:
        return Buffer.from(bytes).toString("latin1");
    }
  } catch {
    // Undecodable text is shown as hex, like any other value.
  }
  return undefined;
}

/** Controls (C0, DEL, C1) and the bidirectional marks that reorder what a terminal shows. */
const UNSHOWN = /[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g;

/**
 * RFC 4514 §2.4 escaping, plus controls and bidirectional marks written as their UTF-8
 * bytes (`\xx` each, as §2.4 allows), so a crafted name cannot forge or reorder log lines.
 */
function escape(text: string): string {
  let out = text.replace(/[,+"\\<>;=]/g, (c) => `\\${c}`);
  out = out.replace(UNSHOWN, (c) => [...Buffer.from(c, "utf8")].map((b) => `\\${b.toString(16).padStart(2, "0")}`).join(""));
  if (out.startsWith(" ") || out.startsWith("#")) out = `\\${out}`;
  // A trailing space is escaped unless it is the leading one just escaped.
  if (text.endsWith(" ") && !(text.length === 1)) out = `${out.slice(0, -1)}\\ `;
  return out;
}
