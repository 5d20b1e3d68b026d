// sealrelay ui: new envelopes appear in the inbox without a reload, as soon as they arrive. Text only (textContent),
// no HTML from the server is ever inserted, and the page works without this script.
"use strict";
(function () {
  const inbox = document.getElementById("inbox");
  const table = inbox && inbox.querySelector("tbody");
  // This run's random path prefix (docs/ui.md): every URL of the app lives under it, and the
  // cookie goes nowhere else.
  const base = inbox && inbox.dataset.base;
  if (!table || !base) return;
  function cell(row, text) {
    const td = document.createElement("td");
    td.textContent = text;
    row.appendChild(td);
    return td;
  }
  async function poll() {
    try {
      const r = await fetch(base + "/api/inbox", { credentials: "same-origin", cache: "no-store" });
      if (!r.ok) return;
      const list = await r.json();
      for (const h of list) {
        if (table.querySelector('tr[data-envelope="' + h.envelope_id + '"]')) continue;
        const row = document.createElement("tr");
        row.dataset.envelope = h.envelope_id;
        const first = document.createElement("td");
        const link = document.createElement("a");
        link.href = base + "/envelope/" + h.envelope_id;
        // The end of the id (its start is only the millisecond it arrived), as the server shows it.
        link.textContent = "…" + h.envelope_id.slice(-12);
        first.appendChild(link);
        row.appendChild(first);
        cell(row, h.agent || "?");
        cell(row, h.resource);
        cell(row, h.purpose);
        cell(row, h.asked);
        cell(row, h.approver ? h.approver + " at " + h.approved_at : "none");
        cell(row, String(h.bytes));
        cell(row, h.received);
        const status = cell(row, h.verified ? "verified" : "unverifiable: " + h.problem + " (it will not be opened)");
        status.className = h.verified ? "ok" : "bad";
        table.appendChild(row);
        const empty = document.getElementById("empty");
        if (empty) empty.remove();
      }
    } catch (e) {
      // The relay or this server is away: the next arrival lists again.
    }
  }
  // This server follows the inbox over one subscription to the relay and answers
  // /api/inbox/next as soon as an envelope has arrived; the page lists the inbox then.
  function sleep(ms) {
    return new Promise(function (resolve) { setTimeout(resolve, ms); });
  }
  async function follow() {
    let seen = null;
    for (;;) {
      try {
        const q = seen === null ? "" : "?after=" + seen;
        const r = await fetch(base + "/api/inbox/next" + q, { credentials: "same-origin", cache: "no-store" });
        if (!r.ok) { await sleep(3000); continue; }
        const arrived = (await r.json()).arrived;
        if (arrived !== seen) {
          seen = arrived;
          await poll();
        }
      } catch (e) {
        // This server is away: try again shortly.
        await sleep(3000);
      }
    }
  }
  follow();
})();
