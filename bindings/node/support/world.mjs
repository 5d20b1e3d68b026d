// A real relay for the addon's tests: `sealrelay serve` ($SEALRELAY_BIN, else this checkout's
// debug binary) on a free loopback port, with alice, bob (an approver) and research-bot.

import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, statSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const bin = process.env.SEALRELAY_BIN ?? join(root, 'target', 'debug', 'sealrelay');

function cleanEnv() {
  const env = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('SEALRELAY_')) env[k] = v;
  return env;
}

export class World {
  constructor() {
    this.dir = mkdtempSync(join(tmpdir(), 'sealrelay-node-'));
    this.relay = '';
  }
  path(name) {
    return join(this.dir, name);
  }
  /** Runs the CLI in the world's directory; returns { code, stdout, stderr }. */
  cli(args, { check = true } = {}) {
    const env = cleanEnv();
    if (this.relay) env.SEALRELAY_RELAY = this.relay;
    const r = spawnSync(bin, args, { cwd: this.dir, env, encoding: 'utf8' });
    if (check && r.status !== 0) throw new Error(`sealrelay ${args.join(' ')} failed (${r.status}): ${r.stderr}`);
    return { code: r.status, stdout: r.stdout, stderr: r.stderr };
  }
  /** The CLI's error line for a command that fails. */
  cliError(args) {
    const r = this.cli(args, { check: false });
    if (r.code === 0) throw new Error(`sealrelay ${args.join(' ')} succeeded`);
    const line = r.stderr.trim().split('\n').at(-1);
    if (!line.startsWith('error: ')) throw new Error(r.stderr);
    return line.slice('error: '.length);
  }
  dataFiles() {
    const out = [];
    const walk = (d) => {
      for (const n of readdirSync(d)) {
        const p = join(d, n);
        if (statSync(p).isDirectory()) walk(p);
        else out.push(p);
      }
    };
    walk(this.path('data'));
    return out;
  }
  async start() {
    this.cli(['keys', 'init', '--dir', 'keys']);
    this.cli(['user', 'add', 'alice', '--dir', 'keys', '--clearance', '3', '--out', 'alice.id']);
    this.cli(['user', 'add', 'bob', '--dir', 'keys', '--role', 'approver', '--out', 'bob.id']);
    this.cli(['agent', 'add', 'research-bot', '--dir', 'keys', '--scope', 'tickets/*', '--out', 'bot.id']);
    const env = cleanEnv();
    env.SEALRELAY_METRICS_LISTEN = 'off';
    this.proc = spawn(bin, ['serve', '--dir', 'keys', '--data', 'data', '--listen', '127.0.0.1:0'], {
      cwd: this.dir,
      env,
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    const lines = createInterface({ input: this.proc.stdout });
    // The first line, or the reason there is none (serve exited).
    const first = await new Promise((ok, fail) => {
      lines.once('line', ok);
      this.proc.once('exit', (code) => fail(new Error(`sealrelay serve exited (${code}) before listening`)));
    });
    if (!first.startsWith('sealrelay relay listening on')) throw new Error(first);
    this.relay = first.split(' ').at(-1);
    return this;
  }
  async stop() {
    if (this.proc) {
      const exited = new Promise((ok) => this.proc.once('exit', ok));
      this.proc.kill('SIGTERM');
      await exited;
    }
    rmSync(this.dir, { recursive: true, force: true });
  }
}
