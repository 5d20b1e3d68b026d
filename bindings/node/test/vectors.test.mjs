// docs/vectors/ through the Node addon: every valid vector verifies to exactly what it says,
// every invalid one throws, and a flipped byte anywhere throws (or, for a frame, decodes to
// something else). Also seal and open against Go age, when it is installed.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, mkdtempSync, existsSync, statSync, readdirSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as sealrelay from '../index.mjs';

const vectors = (name) =>
  JSON.parse(readFileSync(fileURLToPath(new URL(`../../../docs/vectors/${name}`, import.meta.url)), 'utf8')).vectors;

const flipHex = (hex, at) => {
  const b = Buffer.from(hex, 'hex');
  b[at % b.length] ^= 1;
  return b;
};

const flipText = (s, at) => {
  let i = at % s.length;
  while (!/[A-Za-z0-9]/.test(s[i])) i = (i + 1) % s.length;
  return s.slice(0, i) + (s[i] === 'A' ? 'B' : 'A') + s.slice(i + 1);
};

const statement = (v, over = {}) =>
  sealrelay.verifyStatement(
    v.type,
    over.statement ?? Buffer.from(v.statement, 'hex'),
    over.signature ?? Buffer.from(v.signature, 'hex'),
    over.signer ?? Buffer.from(v.signer, 'hex'),
  );

test('statements', () => {
  const list = vectors('statements.json');
  assert.equal(list.length, 14);
  for (const v of list) {
    if (!v.valid) {
      assert.throws(() => statement(v), sealrelay.SealrelayError, v.name);
      continue;
    }
    assert.deepEqual(statement(v), v.fields, v.name);
    for (const field of ['statement', 'signature', 'signer']) {
      for (let at = 0; at < v[field].length / 2; at += 7) {
        assert.throws(() => statement(v, { [field]: flipHex(v[field], at) }), sealrelay.SealrelayError, `${v.name} ${field} ${at}`);
      }
    }
  }
});

test('wire frames', () => {
  const list = vectors('wire.json');
  assert.equal(list.length, 16);
  for (const v of list) {
    if (v.valid === false) {
      assert.throws(() => sealrelay.decodeFrame(v.kind, Buffer.from(v.frame, 'hex')), sealrelay.BadInputError, v.name);
      continue;
    }
    assert.deepEqual(sealrelay.decodeFrame(v.kind, Buffer.from(v.frame, 'hex')), v.message, v.name);
    for (let at = 0; at < v.frame.length / 2; at++) {
      let got;
      try {
        got = sealrelay.decodeFrame(v.kind, flipHex(v.frame, at));
      } catch (e) {
        assert.ok(e instanceof sealrelay.BadInputError, String(e));
        continue;
      }
      assert.notDeepEqual(got, v.message, `${v.name}: a flip at ${at} decodes to the same message`);
    }
  }
});

test('checkpoints', () => {
  for (const v of vectors('checkpoints.json')) {
    const keys = (v.witnesses ?? []).map((w) => w.key);
    if (!v.valid) {
      assert.throws(() => sealrelay.verifyCheckpoint(v.note, v.log_key, keys), sealrelay.SealrelayError);
      continue;
    }
    const got = sealrelay.verifyCheckpoint(v.note, v.log_key, keys);
    assert.deepEqual(got, { origin: v.origin, size: v.size, root: v.root, witnesses: v.witnesses });
    for (let at = 0; at < v.note.length - 1; at += 3) {
      assert.throws(() => sealrelay.verifyCheckpoint(flipText(v.note, at), v.log_key, keys), sealrelay.SealrelayError);
    }
  }
});

test('receipts', async () => {
  const list = vectors('receipts.json');
  assert.equal(list.length, 4);
  const dir = mkdtempSync(join(tmpdir(), 'sealrelay-vectors-'));
  const put = (name, text) => {
    const p = join(dir, name);
    writeFileSync(p, text.replace(/\n$/, '') + '\n');
    return p;
  };
  const verify = (v, text) =>
    sealrelay.verifyReceipt(put('r.receipt', text), put('authority.pub', v.authority), put('log.pub', v.log_key), {
      witnesses: v.witnesses.map((w, i) => put(`w${i}.pub`, w)),
      quorum: v.quorum,
    });
  for (const v of list) {
    if (v.valid === false) {
      await assert.rejects(verify(v, v.receipt_file), sealrelay.VerificationError, v.name);
      continue;
    }
    assert.deepEqual(await verify(v, v.receipt_file), v.expected, v.name);
    const file = JSON.parse(v.receipt_file);
    for (const field of ['receipt', 'user_entry', 'leaf', 'checkpoint']) {
      for (let at = 0; at < file[field].length - 1; at += 5) {
        await assert.rejects(verify(v, JSON.stringify({ ...file, [field]: flipText(file[field], at) })), sealrelay.SealrelayError);
      }
    }
  }
});

const hasAge = ['age', 'age-keygen'].every((c) => spawnSync(c, ['--version']).status === 0);

test('seal and open against Go age', { skip: !hasAge && 'Go age is not installed (apt-get install age)' }, async () => {
  const dir = mkdtempSync(join(tmpdir(), 'sealrelay-files-'));
  const key = join(dir, 'key.txt');
  assert.equal(spawnSync('age-keygen', ['-o', key]).status, 0);
  const recipient = spawnSync('age-keygen', ['-y', key], { encoding: 'utf8' }).stdout.trim();
  const plain = join(dir, 'plain.bin');
  writeFileSync(plain, randomBytes(2 * 1024 * 1024 + 5));
  const sealed = join(dir, 'sealed.age');
  assert.equal(await sealrelay.seal(recipient, plain, sealed), statSync(sealed).size);
  const out = spawnSync('age', ['-d', '-i', key, sealed], { maxBuffer: 64 << 20 });
  assert.equal(out.status, 0);
  assert.ok(out.stdout.equals(readFileSync(plain)));

  const byAge = join(dir, 'by-age.age');
  assert.equal(spawnSync('age', ['-r', recipient, '-o', byAge, plain]).status, 0);
  const opened = join(dir, 'opened.bin');
  assert.equal(await sealrelay.open(key, byAge, opened), statSync(plain).size);
  assert.ok(readFileSync(opened).equals(readFileSync(plain)));

  const bad = readFileSync(byAge);
  bad[bad.length - 3] ^= 1;
  writeFileSync(byAge, bad);
  const nothing = join(dir, 'nothing.bin');
  await assert.rejects(sealrelay.open(key, byAge, nothing), sealrelay.SealrelayError);
  assert.ok(!existsSync(nothing));
  assert.deepEqual(readdirSync(dir).filter((n) => n.startsWith('.')), []);
});
