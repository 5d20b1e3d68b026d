//! Server-rendered pages: every value escaped, no inline script or style, readable without
//! JavaScript, every action a link, a button or a form field (reachable by keyboard). Every
//! link, form action and asset is under `base`, this run's random path prefix (`/s/<32 hex>`,
//! without the trailing slash), which no page outside the prefix ever names.

use crate::client::{EnvelopeHeader, MyGrant, OpenGrant};
use crate::clock;
use crate::ids::hex;

use super::{Opened, SHOW_MAX};

/// HTML-escapes text for element content and quoted attributes.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page(base: &str, title: &str, body: &str, script: bool) -> String {
    let base = esc(base);
    let script = if script {
        format!("<script src=\"{base}/static/app.js\" defer></script>")
    } else {
        String::new()
    };
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>{t} · sealrelay</title><link rel=\"stylesheet\" href=\"{base}/static/style.css\">{script}</head>\
<body><header><nav aria-label=\"sealrelay\"><strong>sealrelay</strong> \
<a href=\"{base}/\">Inbox</a> <a href=\"{base}/approvals\">Approvals</a> <a href=\"{base}/grants\">My grants</a> \
<a href=\"{base}/receipt\">Check a receipt</a></nav></header><main><h1>{t}</h1>{body}</main></body></html>",
        t = esc(title)
    )
}

/// The answer to any path outside this run's prefix: no link, no asset, nothing of the prefix.
pub const NOT_FOUND: &str = "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>Not found</title></head><body><main><h1>Not found</h1></main></body></html>";

/// A page with one message (errors, refusals).
pub fn message(base: &str, title: &str, text: &str) -> String {
    page(
        base,
        title,
        &format!("<p class=\"note\">{}</p>", esc(text)),
        false,
    )
}

fn status_cell(h: &EnvelopeHeader) -> String {
    match &h.problem {
        None if h.other_key_serial.is_some() => format!(
            "<span class=\"ok\">verified</span>: {}",
            esc(&h.other_key_note().unwrap_or_default())
        ),
        None => "<span class=\"ok\">verified</span>".to_owned(),
        Some(p) => format!(
            "<span class=\"bad\">unverifiable</span>: {} <em>(it will not be opened)</em>",
            esc(p)
        ),
    }
}

fn approver(h: &EnvelopeHeader) -> String {
    match (&h.approver, h.approved_at) {
        (Some(a), Some(t)) => format!("{} at {}", esc(&a.to_string()), clock::rfc3339(t)),
        _ => "none".to_owned(),
    }
}

fn agent(h: &EnvelopeHeader) -> String {
    let agent = h
        .agent
        .as_ref()
        .map_or_else(|| "?".to_owned(), |a| esc(&a.to_string()));
    match &h.sealed_by {
        // Who sealed it at the data (docs/sources.md), beside the agent that asked it to.
        Some(_) => format!(
            "{agent}<br><span class=\"sealed-by\">{}</span>",
            esc(&h.provenance())
        ),
        None => agent,
    }
}

/// The inbox: who, what, why and the verification status of each envelope. The table carries
/// the prefix (`data-base`) for the script's fetches and links.
pub fn inbox(
    base: &str,
    list: &[EnvelopeHeader],
    safety: Option<&str>,
    alerts: &[String],
) -> String {
    let b = esc(base);
    let mut rows = String::new();
    for h in list {
        let id = hex(h.envelope_id);
        rows.push_str(&format!(
            "<tr data-envelope=\"{id}\"><td><a href=\"{b}/envelope/{id}\">{short}</a></td><td>{agent}</td><td>{res}</td><td>{purpose}</td>\
<td>{asked}</td><td>{approver}</td><td>{bytes}</td><td>{received}</td><td>{status}</td></tr>",
            short = short_envelope(&id),
            agent = agent(h),
            res = esc(&h.resource),
            purpose = esc(&h.purpose),
            asked = clock::rfc3339(h.asked),
            approver = approver(h),
            bytes = h.length,
            received = clock::rfc3339(h.received_at),
            status = status_cell(h),
        ));
    }
    let empty = if list.is_empty() {
        "<p id=\"empty\">Your inbox is empty.</p>"
    } else {
        ""
    };
    // The safety number of this identity's keys, to compare with what others see for it.
    let safety = safety
        .map(|n| {
            format!(
                "<p id=\"safety\">Your key's safety number: <code>{}</code> (the same as <code>sealrelay keys show</code>; compare it with what others see for you)</p>",
                esc(n)
            )
        })
        .unwrap_or_default();
    let alerts = alert_banner(alerts);
    page(
        base,
        "Inbox",
        &format!(
            "{alerts}<p>What agents sent you, sealed to your key. Check who sent it, for what and why before you open it.</p>{safety}{empty}\
<table id=\"inbox\" data-base=\"{b}\"><thead><tr><th scope=\"col\">Envelope</th><th scope=\"col\">From (agent)</th><th scope=\"col\">Resource</th>\
<th scope=\"col\">Purpose</th><th scope=\"col\">Asked</th><th scope=\"col\">Approved by</th><th scope=\"col\">Bytes</th>\
<th scope=\"col\">Received</th><th scope=\"col\">Verification</th></tr></thead><tbody>{rows}</tbody></table>\
<p class=\"hint\">New envelopes appear here as they arrive (or reload the page).</p>"
        ),
        true,
    )
}

fn header_table(h: &EnvelopeHeader) -> String {
    format!(
        "<dl class=\"header\"><dt>Envelope</dt><dd>{id}</dd><dt>From (agent)</dt><dd>{agent}</dd>\
<dt>Resource</dt><dd>{res}</dd><dt>Purpose</dt><dd>{purpose}</dd><dt>Asked</dt><dd>{asked}</dd>\
<dt>Approved by</dt><dd>{approver}</dd><dt>Size</dt><dd>{bytes} bytes</dd><dt>Received</dt><dd>{received}</dd>\
<dt>Verification</dt><dd id=\"verification\">{status}</dd></dl>",
        id = hex(h.envelope_id),
        agent = agent(h),
        res = esc(&h.resource),
        purpose = esc(&h.purpose),
        asked = clock::rfc3339(h.asked),
        approver = approver(h),
        bytes = h.length,
        received = clock::rfc3339(h.received_at),
        status = status_cell(h),
    )
}

/// Keys enrolled under this person's name that their keys did not make: first, unmissable (on
/// the inbox and on each envelope before it is opened).
fn alert_banner(alerts: &[String]) -> String {
    if alerts.is_empty() {
        return String::new();
    }
    let items: String = alerts
        .iter()
        .map(|a| format!("<li>{}</li>", esc(a)))
        .collect();
    format!(
        "<div id=\"key-alert\" class=\"alert\" role=\"alert\"><strong>A key you did not make was enrolled under your name.</strong><ul>{items}</ul>\
<p><code>sealrelay keys watch --acknowledge</code> marks these as seen; they stay in your history.</p></div>"
    )
}

/// An envelope before it is opened: the key alerts, the header, and the button to open it
/// (when it verifies and was sealed to this identity's key).
pub fn header_page(base: &str, h: &EnvelopeHeader, alerts: &[String]) -> String {
    let action = if let (true, Some(note)) = (h.verified(), h.other_key_note()) {
        format!("<p class=\"note\">Not opened here: {}.</p>", esc(&note))
    } else if h.openable() {
        format!(
            "<form method=\"post\" action=\"{}/envelope/{}/open\"><button id=\"open\" type=\"submit\">Open: fetch, verify, decrypt here, and sign a receipt</button></form>",
            esc(base),
            hex(h.envelope_id)
        )
    } else {
        "<p class=\"bad\">This envelope does not verify and will not be opened. Fetching it with \
`sealrelay fetch` files an <code>undecryptable</code> receipt.</p>"
            .to_owned()
    };
    page(
        base,
        "Envelope",
        &format!("{}{}{action}", alert_banner(alerts), header_table(h)),
        false,
    )
}

/// The plaintext to show in the page: UTF-8 text up to [`SHOW_MAX`] bytes, else nothing.
pub fn shown_text(o: &Opened) -> Option<String> {
    if !o.delivered || o.plaintext_len > SHOW_MAX {
        return None;
    }
    let bytes = std::fs::read(&o.path).ok()?;
    String::from_utf8(bytes).ok()
}

/// An opened envelope: the header, the content (escaped text or a download), the receipt.
pub fn opened(base: &str, o: &Opened, text: Option<&str>) -> String {
    let b = esc(base);
    let id = hex(o.header.envelope_id);
    let content = match (o.delivered, text) {
        (true, Some(t)) => format!(
            "<h2>Content</h2><pre id=\"content\">{}</pre><p><a href=\"{b}/envelope/{id}/content\">Download</a></p>",
            esc(t)
        ),
        (true, None) => format!(
            "<h2>Content</h2><p>{} bytes that are not shown as text. <a id=\"download\" href=\"{b}/envelope/{id}/content\">Download</a></p>",
            o.plaintext_len
        ),
        (false, _) => format!(
            "<h2>Not opened</h2><p class=\"bad\">{}</p>",
            esc(o.problem.as_deref().unwrap_or("it could not be opened"))
        ),
    };
    let receipt = format!(
        "<h2>Receipt</h2><p id=\"receipt\">Your signed <strong>{}</strong> receipt is entry <strong>{}</strong> of the relay's log (tree size {}), its inclusion proof verified. Saved beside the content as <code>{}.receipt</code>.</p>",
        if o.delivered { "delivered" } else { "undecryptable" },
        o.receipt_index,
        o.tree_size,
        esc(&o.path.display().to_string()),
    );
    page(
        base,
        "Envelope",
        &format!("{}{content}{receipt}", header_table(&o.header)),
        false,
    )
}

/// One line about a grant, for messages.
pub fn grant_line(g: &OpenGrant) -> String {
    format!(
        "{} asked {} for {} ({})",
        g.grant.user, g.grant.agent, g.grant.resource, g.grant.purpose
    )
}

/// Grants awaiting this approver: the whole grant, and approve or deny.
pub fn approvals(base: &str, list: &[(OpenGrant, u8)], said: Option<&str>) -> String {
    let b = esc(base);
    let mut body = String::new();
    if let Some(s) = said {
        body.push_str(&format!("<p class=\"note\" id=\"said\">{}</p>", esc(s)));
    }
    if list.is_empty() {
        body.push_str("<p>No grants await your approval.</p>");
    }
    for (g, class) in list {
        let id = hex(g.grant.grant_id);
        body.push_str(&format!(
            "<section class=\"grant\" data-grant=\"{id}\"><h2>{res}</h2><dl><dt>Grant</dt><dd>{id}</dd>\
<dt>Requester</dt><dd>{user}</dd><dt>Agent</dt><dd>{agent}</dd><dt>Resource</dt><dd>{res}</dd>\
<dt>Purpose</dt><dd>{purpose}</dd><dt>Classification</dt><dd>{class}</dd><dt>Asked</dt><dd>{asked}</dd>\
<dt>Expires</dt><dd>{expires}</dd><dt>Max bytes</dt><dd>{max}</dd><dt>SHA-256</dt><dd><code>{digest}</code></dd></dl>\
<form method=\"post\" action=\"{b}/approvals/{id}/approve\"><button type=\"submit\" class=\"approve\">Approve</button></form>\
<form method=\"post\" action=\"{b}/approvals/{id}/deny\"><label for=\"reason-{id}\">Reason</label> \
<input id=\"reason-{id}\" name=\"reason\" maxlength=\"512\"> <button type=\"submit\" class=\"deny\">Deny</button></form></section>",
            res = esc(&g.grant.resource),
            user = esc(&g.grant.user.to_string()),
            agent = esc(&g.grant.agent.to_string()),
            purpose = esc(&g.grant.purpose),
            asked = clock::rfc3339(g.grant.created),
            expires = clock::rfc3339(g.grant.expires),
            max = g.grant.max_bytes,
            digest = hex(crate::core::directory::sha256(&g.grant.encode())),
        ));
    }
    page(base, "Approvals", &body, false)
}

/// The grants this user made: open, sent, delivered, expired, denied.
pub fn grants(base: &str, list: &[MyGrant]) -> String {
    let mut rows = String::new();
    for g in list {
        rows.push_str(&format!(
            "<tr><td>{id}</td><td>{agent}</td><td>{res}</td><td>{purpose}</td><td>{asked}</td><td>{expires}</td>\
<td>{state}</td><td>{decided}</td><td>{envelope}</td><td>{receipt}</td></tr>",
            id = &hex(g.grant.grant_id)[..12],
            agent = esc(&g.grant.agent.to_string()),
            res = esc(&g.grant.resource),
            purpose = esc(&g.grant.purpose),
            asked = clock::rfc3339(g.grant.created),
            expires = clock::rfc3339(g.grant.expires),
            state = g.progress.as_str(),
            decided = g
                .decided_by
                .as_ref()
                .map_or_else(String::new, |d| esc(&d.to_string())),
            envelope = g
                .envelope_id
                .map_or_else(String::new, |e| short_envelope(&hex(e))),
            receipt = g
                .receipt_index
                .map_or_else(String::new, |i| format!("log entry {i}")),
        ));
    }
    page(
        base,
        "My grants",
        &format!(
            "<table id=\"grants\"><thead><tr><th scope=\"col\">Grant</th><th scope=\"col\">Agent</th><th scope=\"col\">Resource</th>\
<th scope=\"col\">Purpose</th><th scope=\"col\">Asked</th><th scope=\"col\">Expires</th><th scope=\"col\">State</th>\
<th scope=\"col\">Approved or denied by</th><th scope=\"col\">Envelope</th><th scope=\"col\">Receipt</th></tr></thead><tbody>{rows}</tbody></table>"
        ),
        false,
    )
}

/// The receipt check: paste a receipt file, verified offline with this identity's keys.
pub fn receipt(base: &str, said: Option<Result<String, String>>) -> String {
    let b = esc(base);
    let result = match said {
        None => String::new(),
        Some(Ok(s)) => format!("<p class=\"ok\" id=\"verdict\">{}</p>", esc(&s)),
        Some(Err(s)) => format!("<p class=\"bad\" id=\"verdict\">{}</p>", esc(&s)),
    };
    page(
        base,
        "Check a receipt",
        &format!(
            "{result}<form method=\"post\" action=\"{b}/receipt\"><label for=\"receipt\">A receipt file (JSON), as `fetch` saves it</label>\
<textarea id=\"receipt\" name=\"receipt\" rows=\"12\" required></textarea><button type=\"submit\">Verify offline</button></form>\
<p class=\"hint\">Checked here with the authority and log keys your identity pins; nothing is sent to the relay.</p>"
        ),
        false,
    )
}

/// An envelope's label in a list: the end of its id. Its first twelve digits are the
/// millisecond its upload began (`EnvelopeId::ordered`), the same for envelopes that arrive
/// together; the end is random.
fn short_envelope(id: &str) -> String {
    format!("…{}", id.get(id.len().saturating_sub(12)..).unwrap_or(id))
}

#[cfg(test)]
mod tests {
    /// Helper-found: the label was the id's first twelve digits, which are only the
    /// millisecond, so envelopes that arrived together looked the same.
    #[test]
    fn envelopes_of_one_millisecond_have_different_labels() {
        let a = crate::ids::EnvelopeId::ordered(1_765_000_000_000).unwrap();
        let b = crate::ids::EnvelopeId::ordered(1_765_000_000_000).unwrap();
        let (a, b) = (crate::ids::hex(a), crate::ids::hex(b));
        assert_eq!(a[..12], b[..12]);
        assert_ne!(super::short_envelope(&a), super::short_envelope(&b));
        assert!(a.ends_with(super::short_envelope(&a).trim_start_matches('…')));
    }

    #[test]
    fn escaping_covers_markup_and_quotes() {
        assert_eq!(
            super::esc("<script>alert('x') & \"y\"</script>"),
            "&lt;script&gt;alert(&#39;x&#39;) &amp; &quot;y&quot;&lt;/script&gt;"
        );
    }

    /// The browser shows who sealed an envelope, as the terminal does: a source's, beside the
    /// agent that dispatched it; nothing more for an envelope the agent sealed itself.
    #[test]
    fn the_inbox_says_which_source_sealed_an_envelope() {
        let id = |kind, name| crate::ids::SpiffeId::new("example.org", kind, name).unwrap();
        let mut h = crate::client::EnvelopeHeader {
            envelope_id: crate::ids::EnvelopeId([1; 16]),
            agent: Some(id(crate::ids::PartyKind::Agent, "research-bot")),
            resource: "customers/acme".into(),
            purpose: "p".into(),
            asked: 0,
            approver: None,
            approved_at: None,
            length: 10,
            received_at: 0,
            problem: None,
            other_key_serial: None,
            sealed_by: Some(id(crate::ids::PartyKind::Source, "crm")),
        };
        let base = "/s/0123456789abcdef0123456789abcdef";
        let html = super::inbox(base, std::slice::from_ref(&h), None, &[]);
        assert!(
            html.contains("<span class=\"sealed-by\">sealed by source crm at the data, for research-bot</span>"),
            "{html}"
        );
        h.sealed_by = None;
        let html = super::inbox(base, std::slice::from_ref(&h), None, &[]);
        assert!(!html.contains("sealed-by"), "{html}");
        // Helper-found: the Open button was offered for an envelope sealed to another of the
        // person's keys, and answered with a bare error; the note says why and what to do.
        assert!(super::header_page(base, &h, &[]).contains("id=\"open\""));
        h.other_key_serial = Some(1);
        let html = super::header_page(base, &h, &[]);
        assert!(!html.contains("id=\"open\""), "{html}");
        assert!(html.contains("asked with your key of serial 1"), "{html}");
    }

    /// threat: the ui cookie reaching other loopback ports. Every link, form and asset a page
    /// names is under the run's prefix (where the cookie's `Path` lets it go), and the 404 for
    /// paths outside it names none.
    #[test]
    fn every_link_form_and_asset_is_under_the_prefix() {
        let base = "/s/0123456789abcdef0123456789abcdef";
        let pages = [
            super::message(base, "Refused", "no"),
            super::inbox(base, &[], Some("12345 67890 12345 67890 12345 67890"), &[]),
            super::receipt(base, None),
            super::receipt(base, Some(Err("x".to_owned()))),
            super::grants(base, &[]),
            super::approvals(base, &[], Some("done")),
        ];
        let under = format!("{base}/");
        let mut seen = 0;
        for html in &pages {
            for attr in ["href=\"", "src=\"", "action=\"", "data-base=\""] {
                for (i, _) in html.match_indices(attr) {
                    let url = &html[i + attr.len()..];
                    let url = &url[..url.find('"').unwrap_or(url.len())];
                    seen += 1;
                    assert!(
                        url.starts_with(&under) || url == base,
                        "{attr}{url} is outside the prefix"
                    );
                }
            }
        }
        assert!(seen > 20, "only {seen} URLs were checked");
        assert!(!super::NOT_FOUND.contains("href") && !super::NOT_FOUND.contains("/s/"));
    }
}
