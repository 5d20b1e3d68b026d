//! Stores benchmark (run by `bash benches/stores.sh`, which starts a PostgreSQL server of its
//! own): 1 KiB submissions and full round trips on the embedded store and on PostgreSQL with
//! one and with two relay nodes, in one run, with the same clients. Writes the STORES section
//! of docs/benchmarks.md.

mod common;

use common::*;

/// CPU seconds of a PostgreSQL server: its postmaster and every process it started (the
/// relay's connections stay open, so their backends are all counted).
fn server_cpu_secs(postmaster: &str) -> f64 {
    let mut total = cpu_secs(postmaster);
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(1));
        if ppid == Some(postmaster) {
            total += cpu_secs(&pid);
        }
    }
    total
}

/// A new database on the benchmark's server, as a URL.
fn database(admin_url: &str, name: &str) -> String {
    let (admin, sql) = (admin_url.to_owned(), format!("CREATE DATABASE {name}"));
    std::thread::spawn(move || {
        let mut c = postgres::Client::connect(&admin, postgres::NoTls).or_fail("connect");
        c.batch_execute(&sql).or_fail("create database");
    })
    .join()
    .unwrap_or_else(|_| fail("create database"));
    let (prefix, _) = admin_url
        .rsplit_once('/')
        .unwrap_or_else(|| fail("SEALRELAY_BENCH_POSTGRES: a URL ending in /DATABASE"));
    format!("{prefix}/{name}")
}

struct Row {
    label: &'static str,
    sub_rate: f64,
    p50: f64,
    p99: f64,
    relay_cpu_sub: f64,
    db_cpu_sub: f64,
    rt_rate: f64,
    relay_cpu_rt: f64,
    db_cpu_rt: f64,
}

fn main() {
    let admin_url = std::env::var("SEALRELAY_BENCH_POSTGRES").unwrap_or_else(|_| {
        fail("SEALRELAY_BENCH_POSTGRES is not set: run bash benches/stores.sh, which starts a PostgreSQL server")
    });
    let postmaster = std::env::var("SEALRELAY_BENCH_POSTGRES_PID").unwrap_or_default();
    let db_cpu = || {
        if postmaster.is_empty() {
            0.0
        } else {
            server_cpu_secs(&postmaster)
        }
    };
    let (root, bin, tmp, ids) = bench_world();
    let base = tmp.path();
    let (users, agents) = ids.split_at(32);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .or_fail("runtime");
    let per_agent: usize = std::env::var("SEALRELAY_BENCH_PER_AGENT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let per_user = 20;

    let setups: [(&str, Option<&str>, usize); 3] = [
        ("embedded store (redb), 1 node", None, 1),
        ("PostgreSQL, 1 node", Some("bench_one"), 1),
        ("PostgreSQL, 2 nodes", Some("bench_two"), 2),
    ];
    let mut rows = Vec::new();
    for (label, db, nodes) in setups {
        let url = db.map(|name| database(&admin_url, name));
        let envs: Vec<(&str, &str)> = url
            .as_deref()
            .map(|u| vec![("SEALRELAY_STORE", u)])
            .unwrap_or_default();
        let relays: Vec<Relay> = (0..nodes)
            .map(|i| {
                let data = format!("data-{}-{i}", db.unwrap_or("redb"));
                Relay::start_env(&bin, base, &data, &[], &envs)
            })
            .collect();
        let addrs: Vec<String> = relays.iter().map(|r| r.addr.clone()).collect();
        let pids: Vec<String> = relays.iter().map(|r| r.child.id().to_string()).collect();
        let relay_cpu = || pids.iter().map(|p| cpu_secs(p)).sum::<f64>();

        let db0 = db_cpu();
        let (sub_rate, p50, p99, n_sub, relay_cpu_sub, _) =
            rt.block_on(submissions(&addrs, users, agents, per_agent, base, &pids));
        // (The database's CPU over the submissions includes the untimed grants before them.)
        let db_cpu_sub = if url.is_some() {
            (db_cpu() - db0) / n_sub as f64 * 1e6
        } else {
            0.0
        };
        let (r0, d0) = (relay_cpu(), db_cpu());
        let (rt_rate, n_rt) = rt.block_on(round_trips(
            &addrs,
            users,
            agents,
            per_user,
            base.to_path_buf(),
        ));
        let relay_cpu_rt = (relay_cpu() - r0) / n_rt as f64 * 1000.0;
        let db_cpu_rt = if url.is_some() {
            (db_cpu() - d0) / n_rt as f64 * 1000.0
        } else {
            0.0
        };
        eprintln!(
            "{label}: {n_sub} submissions at {sub_rate:.0}/s (p50 {p50:.2} ms, p99 {p99:.2} ms); {n_rt} round trips at {rt_rate:.0}/s"
        );
        rows.push(Row {
            label,
            sub_rate,
            p50,
            p99,
            relay_cpu_sub,
            db_cpu_sub,
            rt_rate,
            relay_cpu_rt,
            db_cpu_rt,
        });
        drop(relays);
    }

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_default();
    let pg_version = std::env::var("SEALRELAY_BENCH_POSTGRES_VERSION").unwrap_or_default();
    let n_sub = per_agent * agents.len();
    let n_rt = per_user * users.len();
    let mut body = format!(
        "## Stores: the embedded store and PostgreSQL\n\n\
Measured on {cores} cores ({cpu}) by `bash benches/stores.sh`, all rows in one run with the same\n\
clients (one process, 32 users and 32 agents): release `sealrelay serve` processes on 127.0.0.1,\n\
and for the PostgreSQL rows a {pg_version} server the script starts in a temporary directory\n\
(default settings: `fsync` and `synchronous_commit` on) on the same machine. Two nodes share\n\
the one database; in the round trips each pair's user speaks to one node and its agent to the\n\
other. Clients, relay nodes and the database all share the same {cores} cores, so a second node\n\
adds no CPU here: the two-node rows show what crossing nodes costs, not how far they scale.\n\n\
| store | 1 KiB submissions ({n_sub}, 32 agents) | p50 / p99 | relay / database CPU per submission | round trips ({n_rt}, 32 pairs) | relay / database CPU per round trip |\n\
|---|---:|---:|---:|---:|---:|\n"
    );
    for r in &rows {
        let db_sub = if r.db_cpu_sub > 0.0 {
            format!("{:.0} µs", r.db_cpu_sub)
        } else {
            "–".into()
        };
        let db_rt = if r.db_cpu_rt > 0.0 {
            format!("{:.2} ms", r.db_cpu_rt)
        } else {
            "–".into()
        };
        body.push_str(&format!(
            "| {} | {:.0}/s | {:.2} / {:.2} ms | {:.0} µs / {db_sub} | {:.0}/s | {:.2} ms / {db_rt} |\n",
            r.label, r.sub_rate, r.p50, r.p99, r.relay_cpu_sub, r.rt_rate, r.relay_cpu_rt
        ));
    }
    body.push_str(
        "\nEvery acknowledged request is durable in each row: redb fsyncs each group commit; \
PostgreSQL commits each batch with `synchronous_commit` on (its WAL flushed). On PostgreSQL \
each write batch also takes the log's advisory lock and brings the node's tree up to the \
database's, and every read is a round trip to the server.\n",
    );
    replace_section(&root.join("docs/benchmarks.md"), "STORES", &body);
}
