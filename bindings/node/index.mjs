// sealrelay for Node.js: the Rust client core (the same checks as the CLI) behind Promises.
// docs/node.md. The addon is `sealrelay.node` beside this file, or $SEALRELAY_NODE_ADDON.

import { createRequire } from 'node:module';
import { createReadStream } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

const require = createRequire(import.meta.url);
const here = dirname(fileURLToPath(import.meta.url));
const native = require(process.env.SEALRELAY_NODE_ADDON ?? join(here, 'sealrelay.node'));

/** Every sealrelay error; `kind` and the subclass say which, `message` is the CLI's line. */
export class SealrelayError extends Error {
  constructor(message, kind) {
    super(message);
    this.name = new.target.name;
    this.kind = kind;
  }
}
export class VerificationError extends SealrelayError {}
export class BadInputError extends SealrelayError {}
export class ConflictError extends SealrelayError {}
export class StorageError extends SealrelayError {}
export class RefusedError extends SealrelayError {}
export class UnavailableError extends SealrelayError {}
export class NotFoundError extends SealrelayError {}
export class KeyAlertError extends SealrelayError {}
export class InternalError extends SealrelayError {}

const KINDS = {
  Verification: VerificationError,
  BadInput: BadInputError,
  Conflict: ConflictError,
  Storage: StorageError,
  Refused: RefusedError,
  Unavailable: UnavailableError,
  NotFound: NotFoundError,
  KeyAlert: KeyAlertError,
  Internal: InternalError,
};

function translate(e) {
  const text = String(e?.message ?? e);
  const cut = text.indexOf('\u001f');
  if (cut < 0) return e;
  const kind = text.slice(0, cut);
  const Cls = KINDS[kind] ?? SealrelayError;
  return new Cls(text.slice(cut + 1), kind);
}

async function call(f) {
  try {
    return await f();
  } catch (e) {
    throw translate(e);
  }
}

function sync(f) {
  try {
    return f();
  } catch (e) {
    throw translate(e);
  }
}

const PIECE = 256 * 1024;
const SLICE = 64 * 1024;

/** The data as an async iterable of Uint8Array pieces. */
function pieces(data) {
  if (data instanceof Uint8Array) {
    return (async function* () {
      for (let at = 0; at < data.length; at += PIECE) yield data.subarray(at, at + PIECE);
    })();
  }
  if (typeof data === 'string') {
    throw new TypeError('pass the data as a Uint8Array, a stream, or a file path as a URL');
  }
  if (data instanceof URL) return createReadStream(data, { highWaterMark: PIECE });
  if (data && typeof data[Symbol.asyncIterator] === 'function') return data;
  if (data && typeof data[Symbol.iterator] === 'function') return data;
  if (data && typeof data.getReader === 'function') {
    const reader = data.getReader();
    return (async function* () {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        yield value;
      }
    })();
  }
  throw new TypeError('the data must be a Uint8Array, an (async) iterable of Uint8Array, a ReadableStream or a file URL');
}

/** An agent, from its identity file. */
export class AgentClient {
  #n;
  constructor(identity, { relay } = {}) {
    this.#n = sync(() => new native.Agent(String(identity), relay ?? null));
  }
  /** The open grants addressed to this agent, each verified. */
  async grants() {
    return JSON.parse(await call(() => this.#n.grants()));
  }
  /** Seals `data` to the grant's user and submits it, streamed in bounded memory. */
  async deliver(grantId, data, { retryAttempts = 3 } = {}) {
    // Started before the source is opened: a bad grant id leaves no file open.
    const d = sync(() => this.#n.startDelivery(String(grantId), retryAttempts));
    let source;
    try {
      source = pieces(data);
    } catch (e) {
      await d.abort('no data').catch(() => {});
      throw e;
    }
    try {
      for await (const piece of source) {
        if (!(piece instanceof Uint8Array)) throw new TypeError('the data must yield Uint8Array pieces');
        // Handed over in small slices: each is copied once into the sealing's buffer, so what
        // is in flight stays small whatever the size of the source's pieces.
        for (let at = 0; at < piece.length; at += SLICE) {
          const end = Math.min(at + SLICE, piece.length);
          await d.write(Buffer.from(piece.buffer, piece.byteOffset + at, end - at));
        }
      }
    } catch (e) {
      if (String(e?.message ?? '').startsWith('Stopped\u001f')) {
        // The sealing stopped first (a used grant, an unreachable relay): its reason.
        return JSON.parse(await call(() => d.finish()));
      }
      // The source failed: the sealing stops and nothing is submitted.
      await d.abort(String(e?.message ?? e)).catch(() => {});
      throw e;
    }
    return JSON.parse(await call(() => d.finish()));
  }
  /** What became of what was submitted for `grantId`. */
  async status(grantId) {
    return JSON.parse(await call(() => this.#n.status(String(grantId))));
  }
}

/** A person, from their identity file. */
export class UserClient {
  #n;
  constructor(identity, { relay } = {}) {
    this.#n = sync(() => new native.User(String(identity), relay ?? null));
  }
  async grant(agent, resource, { purpose = '', ttlSecs = 3600, maxBytes = 2 ** 30 } = {}) {
    return call(() => this.#n.grant(agent, resource, purpose, ttlSecs, maxBytes));
  }
  /** The envelopes waiting (each with its verified header); `keyAlerts` on the array. */
  async inbox() {
    const doc = JSON.parse(await call(() => this.#n.inbox()));
    const list = doc.envelopes;
    list.keyAlerts = doc.key_alerts;
    return list;
  }
  /** Fetches, verifies and opens an envelope into `out`, filing the receipt beside it. */
  async fetch(envelopeId, out) {
    return JSON.parse(await call(() => this.#n.fetch(String(envelopeId), String(out))));
  }
  async approvals() {
    return JSON.parse(await call(() => this.#n.approvals()));
  }
  async approve(grantId) {
    return JSON.parse(await call(() => this.#n.approve(String(grantId))));
  }
  async deny(grantId, reason) {
    return JSON.parse(await call(() => this.#n.deny(String(grantId), String(reason))));
  }
}

/** Verifies a receipt file offline, as `sealrelay receipt verify` does. */
export async function verifyReceipt(receipt, authority, logKey, { witnesses = [], quorum } = {}) {
  return JSON.parse(
    await call(() =>
      native.verifyReceipt(String(receipt), String(authority), String(logKey), witnesses.map(String), quorum ?? null),
    ),
  );
}

/** Seals the file `input` to an age recipient into `out` (as `sealrelay seal -o`); resolves to
 * the ciphertext's length. */
export async function seal(recipient, input, out) {
  return call(() => native.seal(String(recipient), String(input), String(out)));
}

/** Opens the envelope `input` with an identity file into `out` (mode 0600), as
 * `sealrelay open -o`: nothing is kept unless every piece authenticated. Resolves to the
 * plaintext's length. */
export async function open(identity, input, out) {
  return call(() => native.open(String(identity), String(input), String(out)));
}

/** Verifies a signed statement (docs/formats.md) under its signer's Ed25519 key; its fields in
 * order, as docs/vectors/ lists them. */
export function verifyStatement(type, statement, signature, signer) {
  return JSON.parse(sync(() => native.verifyStatement(String(type), Buffer.from(statement), Buffer.from(signature), Buffer.from(signer))));
}

/** Decodes a protocol frame ('request' or 'response', docs/protocol.md) strictly. */
export function decodeFrame(kind, frame) {
  return JSON.parse(sync(() => native.decodeFrame(String(kind), Buffer.from(frame))));
}

/** Verifies a checkpoint note under the log's verifier key and each witness's cosigner key. */
export function verifyCheckpoint(note, logKey, witnesses = []) {
  return JSON.parse(sync(() => native.verifyCheckpoint(String(note), String(logKey), witnesses.map(String))));
}

export const version = '0.1.0';
