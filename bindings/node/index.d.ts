// Type declarations of the sealrelay Node.js package (index.mjs).

export type Json = Record<string, unknown>;

/** What an agent can deliver: bytes, a file URL, a ReadableStream, or an (async) iterable of pieces. */
export type Data =
  | Uint8Array
  | URL
  | ReadableStream<Uint8Array>
  | AsyncIterable<Uint8Array>
  | Iterable<Uint8Array>;

export interface Grant {
  grant_id: string;
  user: string;
  /** The agent the grant is for (who gets the data). */
  agent: string;
  resource: string;
  purpose: string;
  /** When it was asked, seconds since the Unix epoch. */
  created: number;
  expires: number;
  max_bytes: number;
  /** Hex SHA-256 of the grant: what an approval or a denial signs. */
  sha256: string;
}

export interface Delivered {
  envelope_id: string;
  grant_id: string;
  length: number;
  ciphertext_root: string;
}

export interface Header {
  envelope_id: string;
  agent: string | null;
  resource: string;
  purpose: string;
  asked: string;
  approver: string | null;
  approved_at: string | null;
  bytes: number;
  received: string;
  verified: boolean;
  problem: string | null;
  other_key_serial: number | null;
  sealed_by: string | null;
  provenance: string;
}

export interface Fetched {
  envelope_id: string;
  status: 'delivered' | 'undecryptable';
  plaintext_len: number;
  problem: string | null;
  header: Header;
  receipt_path: string;
  receipt_index: number;
  key_alerts: string[];
}

export interface Verified {
  envelope_id: string;
  grant_id: string;
  status: 'delivered' | 'undecryptable';
  user: string;
  agent: string;
  time: number;
  leaf_index: number;
  checkpoint_size: number;
  checkpoint_origin: string;
  witnessed_by: string[];
}

export class SealrelayError extends Error {
  readonly kind: string;
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

export class AgentClient {
  constructor(identity: string, options?: { relay?: string });
  grants(): Promise<Grant[]>;
  deliver(grantId: string, data: Data, options?: { retryAttempts?: number }): Promise<Delivered>;
  status(grantId: string): Promise<{ state: string; envelope_id: string | null; receipt_index: number | null; source: string | null }>;
}

export class UserClient {
  constructor(identity: string, options?: { relay?: string });
  grant(agent: string, resource: string, options?: { purpose?: string; ttlSecs?: number; maxBytes?: number }): Promise<string>;
  inbox(): Promise<Header[] & { keyAlerts: string[] }>;
  fetch(envelopeId: string, out: string): Promise<Fetched>;
  approvals(): Promise<Grant[]>;
  approve(grantId: string): Promise<Grant>;
  deny(grantId: string, reason: string): Promise<Grant>;
}

export function verifyReceipt(
  receipt: string,
  authority: string,
  logKey: string,
  options?: { witnesses?: string[]; quorum?: number },
): Promise<Verified>;

/** Seals a file to an age recipient into `out`; the ciphertext's length. */
export function seal(recipient: string, input: string, out: string): Promise<number>;
/** Opens an envelope with an identity file into `out`; the plaintext's length. */
export function open(identity: string, input: string, out: string): Promise<number>;

/** A statement field as docs/vectors/ lists it. */
export type Field =
  | { u8: number }
  | { u64: number }
  | { bytes: string }
  | { str: string }
  | { opt_str: string | null }
  | { str_list: string[] };

export function verifyStatement(type: string, statement: Uint8Array, signature: Uint8Array, signer: Uint8Array): Field[];
export function decodeFrame(kind: 'request' | 'response', frame: Uint8Array): unknown;
export function verifyCheckpoint(
  note: string,
  logKey: string,
  witnesses?: string[],
): { origin: string; size: number; root: string; witnesses: { key: string; time: number }[] };

export const version: string;
