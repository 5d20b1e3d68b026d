// A small command line over the addon, for the cross-language tests
// (bindings/python/tests/test_interop.py): deliver, fetch or verify, printing JSON.
//   node tool.mjs deliver IDENTITY RELAY GRANT FILE
//   node tool.mjs fetch IDENTITY RELAY ENVELOPE OUT
//   node tool.mjs verify RECEIPT AUTHORITY LOG_KEY

import { pathToFileURL } from 'node:url';
import { AgentClient, UserClient, verifyReceipt, SealrelayError } from '../index.mjs';

const [what, ...args] = process.argv.slice(2);
try {
  let out;
  if (what === 'deliver') {
    const [identity, relay, grant, file] = args;
    out = await new AgentClient(identity, { relay }).deliver(grant, pathToFileURL(file));
  } else if (what === 'fetch') {
    const [identity, relay, envelope, dest] = args;
    out = await new UserClient(identity, { relay }).fetch(envelope, dest);
  } else if (what === 'verify') {
    const [receipt, authority, logKey] = args;
    out = await verifyReceipt(receipt, authority, logKey);
  } else {
    throw new Error(`unknown command ${what}`);
  }
  console.log(JSON.stringify(out));
} catch (e) {
  console.error(`${e instanceof SealrelayError ? e.constructor.name : 'Error'}: ${e.message}`);
  process.exit(1);
}
