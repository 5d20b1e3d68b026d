// The Node.js addon against a real relay: a delivery end to end with nothing in the clear at the
// relay, refusals as Error subclasses with the CLI's message, and a 1 GiB stream in bounded memory.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { World } from '../support/world.mjs';
import * as sealrelay from '../index.mjs';

const { AgentClient, UserClient, verifyReceipt } = sealrelay;

function clearForms(canary) {
  const forms = [canary, Buffer.from(canary.toString('hex')), Buffer.from(canary.toString('hex').toUpperCase())];
  for (let pad = 0; pad < 3; pad++) {
    const enc = Buffer.from(Buffer.concat([Buffer.alloc(pad), canary]).toString('base64'));
    forms.push(enc.subarray(4, enc.length - 4));
  }
  return forms;
}

test('deliver, inbox, fetch and verify, with nothing in the clear at the relay', async () => {
  const w = await new World().start();
  try {
    const alice = new UserClient(w.path('alice.id'), { relay: w.relay });
    const bot = new AgentClient(w.path('bot.id'), { relay: w.relay });
    const gid = await alice.grant('research-bot', 'tickets/4711', { purpose: 'triage the outage' });
    assert.deepEqual((await bot.grants()).map((g) => g.grant_id), [gid]);
    const [listed] = await bot.grants();
    assert.ok(listed.agent.endsWith('/agent/research-bot') && listed.sha256.length === 64, JSON.stringify(listed));
    const canary = Buffer.from(`CANARY-NODE-${randomBytes(8).toString('hex')}`);
    const data = Buffer.concat([...Array(1000).fill(canary), Buffer.from('the end')]);
    const sent = await bot.deliver(gid, data);
    assert.ok(sent.length > data.length);

    const inbox = await alice.inbox();
    assert.deepEqual(inbox.keyAlerts, []);
    assert.equal(inbox.length, 1);
    const [h] = inbox;
    assert.equal(h.envelope_id, sent.envelope_id);
    assert.ok(h.agent.endsWith('/agent/research-bot'));
    assert.equal(h.purpose, 'triage the outage');
    assert.equal(h.verified, true);

    const got = await alice.fetch(sent.envelope_id, w.path('got.txt'));
    assert.equal(got.status, 'delivered');
    assert.deepEqual(readFileSync(w.path('got.txt')), data);
    const v = await verifyReceipt(got.receipt_path, w.path('keys/authority.pub'), w.path('keys/log.pub'));
    assert.equal(v.status, 'delivered');
    assert.equal(v.envelope_id, sent.envelope_id);
    w.cli(['receipt', 'verify', got.receipt_path]);
    assert.equal((await bot.status(gid)).state, 'delivered');

    for (const file of w.dataFiles()) {
      const body = readFileSync(file);
      for (const f of clearForms(canary)) assert.equal(body.indexOf(f), -1, `${file} holds the plaintext`);
    }
  } finally {
    await w.stop();
  }
});

test('refusals are Error subclasses of their kind with the CLI message', async () => {
  const w = await new World().start();
  try {
    const alice = new UserClient(w.path('alice.id'), { relay: w.relay });
    const bob = new UserClient(w.path('bob.id'), { relay: w.relay });
    const bot = new AgentClient(w.path('bot.id'), { relay: w.relay });
    const gid = await alice.grant('research-bot', 'tickets/1');
    const sent = await bot.deliver(gid, Buffer.from('for alice only'));

    await assert.rejects(bob.fetch(sent.envelope_id, w.path('stolen')), (e) => {
      assert.ok(e instanceof sealrelay.NotFoundError, e);
      assert.equal(e.message, w.cliError(['fetch', '--identity', 'bob.id', sent.envelope_id, '-o', 'stolen2']));
      return true;
    });
    assert.equal(existsSync(w.path('stolen')), false);

    writeFileSync(w.path('again.txt'), 'again');
    await assert.rejects(bot.deliver(gid, Buffer.from('again')), (e) => {
      assert.ok(e instanceof sealrelay.SealrelayError && e.constructor !== sealrelay.SealrelayError, e);
      assert.equal(e.message, w.cliError(['send', '--identity', 'bot.id', '--grant', gid, 'again.txt']));
      return true;
    });

    // A source that fails mid-way: nothing is submitted.
    const gid2 = await alice.grant('research-bot', 'tickets/2');
    async function* failing() {
      yield Buffer.from('half of it');
      throw new Error('the database went away');
    }
    await assert.rejects(bot.deliver(gid2, failing()), /the database went away/);
    assert.equal((await bot.status(gid2)).state, 'open');

    w.cli(['agent', 'revoke', 'research-bot', '--dir', 'keys', '--relay', w.relay]);
    await assert.rejects(bot.grants(), (e) => {
      assert.ok(e instanceof sealrelay.SealrelayError, e);
      assert.equal(e.message, w.cliError(['grants', '--identity', 'bot.id']));
      return true;
    });
    await assert.rejects(bot.status('not-hex'), sealrelay.BadInputError);
    await assert.rejects(bot.deliver(gid, 'a string is not data'), TypeError);
    assert.throws(() => new AgentClient(w.path('nobody.id'), { relay: w.relay }), sealrelay.NotFoundError);
  } finally {
    await w.stop();
  }
});

const RSS_SCRIPT = `
import { Readable } from 'node:stream';
import { readFileSync } from 'node:fs';
import { AgentClient } from ${JSON.stringify(new URL('../index.mjs', import.meta.url).href)};
const [identity, relay, grant] = process.argv.slice(-3);
const piece = Buffer.alloc(1 << 20, 7);
async function* gen() { for (let i = 0; i < 1024; i++) yield piece; }
const sent = await new AgentClient(identity, { relay }).deliver(grant, Readable.from(gen()));
// VmHWM: this process's own high-water mark (maxRSS would carry over the test runner's).
const hwm = readFileSync('/proc/self/status', 'utf8').match(/^VmHWM:\\s+(\\d+)/m)[1];
console.log(sent.length, hwm);
`;

test('a gibibyte from a Node stream is streamed in bounded memory', async () => {
  const w = await new World().start();
  try {
    const alice = new UserClient(w.path('alice.id'), { relay: w.relay });
    const gid = await alice.grant('research-bot', 'tickets/big', { maxBytes: 2 * 2 ** 30 });
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', RSS_SCRIPT, '--', w.path('bot.id'), w.relay, gid], {
      encoding: 'utf8',
      env: process.env,
      timeout: 1_800_000,
    });
    assert.equal(r.status, 0, r.stderr);
    const [length, maxRssKiB] = r.stdout.trim().split(' ').map(Number);
    assert.ok(length > 2 ** 30);
    console.log(`1 GiB delivered from a Node stream: peak RSS ${(maxRssKiB / 1024).toFixed(1)} MiB`);
    // Streamed, never held, within the budget for the whole Node.js process, of which
    // Node itself maps ~42 MiB before anything is loaded. The addon must be built as users get
    // it (`cargo build --profile bindings -p sealrelay-node`, as .ci/run does): a debug addon's
    // unoptimised code alone is ~10 MiB more (docs/node.md).
    assert.ok(maxRssKiB < 64 * 1024, `peak RSS ${maxRssKiB} KiB, over 64 MiB (a debug addon? see docs/node.md)`);
  } finally {
    await w.stop();
  }
});
