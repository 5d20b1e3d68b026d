// The independent age implementation for tests/typage.rs: typage (`age-encryption` on npm).
// Usage:
//   node interop.mjs keygen IDENTITY_OUT RECIPIENT_OUT   a hybrid (ML-KEM-768 + X25519) key
//   node interop.mjs encrypt RECIPIENT IN OUT             seal IN to RECIPIENT
//   node interop.mjs decrypt IDENTITY_FILE IN OUT         open IN with the identity
// SEALRELAY_TYPAGE_DIR names the directory npm installed `age-encryption` into.
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { pathToFileURL } from "node:url";

const dir = process.env.SEALRELAY_TYPAGE_DIR;
const age = await import(pathToFileURL(join(dir, "node_modules", "age-encryption", "dist", "index.js")).href);

const [cmd, a, b, c] = process.argv.slice(2);
if (cmd === "keygen") {
  const identity = await age.generateHybridIdentity();
  writeFileSync(a, identity + "\n", { mode: 0o600 });
  writeFileSync(b, (await age.identityToRecipient(identity)) + "\n");
} else if (cmd === "encrypt") {
  const e = new age.Encrypter();
  e.addRecipient(a.trim());
  writeFileSync(c, await e.encrypt(new Uint8Array(readFileSync(b))));
} else if (cmd === "decrypt") {
  const d = new age.Decrypter();
  const identity = readFileSync(a, "utf8").split("\n").find((l) => l.startsWith("AGE-SECRET-KEY-"));
  d.addIdentity(identity);
  writeFileSync(c, await d.decrypt(new Uint8Array(readFileSync(b)), "uint8array"));
} else {
  console.error("usage: interop.mjs keygen|encrypt|decrypt ...");
  process.exit(2);
}
