//! Storage benchmark for codeQ's embedded backend: `redb` vs `fjall`.
//!
//! Two measurements (see docs/storage.md for the workload and the results):
//!
//! * `commit`: group commit. W producer threads run task cycles (create =
//!   insert task, claim = overwrite task, complete = overwrite task + insert
//!   result); every transition goes through a channel to ONE committer thread,
//!   which drains up to `--max-batch` queued transitions, writes them in one
//!   write transaction / batch, makes it durable (`fsync`) or not (`buffered`),
//!   then acks each submitter. Reports transitions/s, the mean batch size and
//!   the per-transition latency (submit to ack) p50/p99.
//! * `recovery`: a child process loads N pending tasks, then closes (or exits
//!   without closing, `--crash`); a second child reopens the store and scans
//!   every record, decoding a few bytes of each. Reports load time, on-disk
//!   size, reopen time, scan time and the scanning process's peak RSS.
//!
//! Usage:
//!   storage-bench commit   [--store redb|fjall|both] [--mode fsync|buffered|both]
//!                          [--writers 1,16,64,256] [--secs 3] [--max-batch 1024]
//!                          [--preload 100000] [--cache-mb 64] [--memtable-mb 64]
//!   storage-bench recovery [--store redb|fjall|both] [--tasks 1000000] [--crash]
//!                          [--buffered] [--cold] [--cache-mb 64] [--memtable-mb 64]
//! `--cold` drops the store's files from the OS page cache before reopening;
//! `--buffered` loads with buffered commits (with `--crash`: what survives).
//! `--cache-mb` bounds both stores' caches; `--memtable-mb` is fjall's memtable size.
//! Data goes to a fresh directory under $TMPDIR, removed afterwards.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use fjall::{KeyspaceCreateOptions, PersistMode};
use redb::{Durability, ReadableDatabase, ReadableTable, TableDefinition};

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const TASKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("tasks");
const RESULTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("results");
const TASK_LEN: usize = 420;
const RESULT_LEN: usize = 150;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Fsync,
    Buffered,
}

/// One state transition: the task record to (over)write, maybe a result record.
struct Transition {
    key: [u8; 16],
    task: Vec<u8>,
    result: Option<Vec<u8>>,
}

enum Store {
    Redb(redb::Database),
    Fjall { db: fjall::Database, tasks: fjall::Keyspace, results: fjall::Keyspace },
}

impl Store {
    /// `memtable_mb` applies to fjall only (its default is 64 MiB per keyspace).
    fn open(kind: &str, dir: &Path, cache_mb: usize, memtable_mb: u64) -> Res<Store> {
        let cache = cache_mb << 20;
        Ok(match kind {
            "redb" => {
                // Default cache is 1 GiB: always bound it.
                let db = redb::Builder::new().set_cache_size(cache).create(dir.join("codeq.redb"))?;
                let tx = db.begin_write()?;
                tx.open_table(TASKS)?;
                tx.open_table(RESULTS)?;
                tx.commit()?;
                Store::Redb(db)
            }
            "fjall" => {
                let db = fjall::Database::builder(dir.join("fjall")).cache_size(cache as u64).open()?;
                let opts = || KeyspaceCreateOptions::default().max_memtable_size(memtable_mb << 20);
                let tasks = db.keyspace("tasks", opts)?;
                let results = db.keyspace("results", opts)?;
                Store::Fjall { db, tasks, results }
            }
            other => return Err(format!("unknown store {other}").into()),
        })
    }

    /// Writes all transitions atomically; durable on return in `Mode::Fsync`.
    fn write<'a>(&self, batch: impl Iterator<Item = &'a Transition>, mode: Mode) -> Res<()> {
        match self {
            Store::Redb(db) => {
                let mut tx = db.begin_write()?;
                tx.set_durability(match mode {
                    Mode::Fsync => Durability::Immediate,
                    Mode::Buffered => Durability::None,
                })?;
                {
                    let mut tasks = tx.open_table(TASKS)?;
                    let mut results = tx.open_table(RESULTS)?;
                    for t in batch {
                        tasks.insert(&t.key[..], &t.task[..])?;
                        if let Some(r) = &t.result {
                            results.insert(&t.key[..], &r[..])?;
                        }
                    }
                }
                tx.commit()?;
            }
            Store::Fjall { db, tasks, results } => {
                let mut b = db.batch().durability(Some(match mode {
                    Mode::Fsync => PersistMode::SyncData,
                    Mode::Buffered => PersistMode::Buffer,
                }));
                for t in batch {
                    b.insert(tasks, &t.key[..], &t.task[..]);
                    if let Some(r) = &t.result {
                        b.insert(results, &t.key[..], &r[..]);
                    }
                }
                b.commit()?;
            }
        }
        Ok(())
    }

    /// Iterates every task, decoding status and priority, as the index rebuild would.
    /// Returns (records, pending keys kept in memory).
    fn scan(&self) -> Res<(u64, Vec<(u128, u8)>)> {
        let mut n = 0u64;
        let mut pending = Vec::new();
        let mut visit = |k: &[u8], v: &[u8]| {
            n += 1;
            if v[0] == b'P' {
                let key = u128::from_be_bytes(k.try_into().unwrap_or([0; 16]));
                pending.push((key, v[1]));
            }
        };
        match self {
            Store::Redb(db) => {
                let tx = db.begin_read()?;
                for kv in tx.open_table(TASKS)?.iter()? {
                    let (k, v) = kv?;
                    visit(k.value(), v.value());
                }
            }
            Store::Fjall { tasks, .. } => {
                for g in tasks.iter() {
                    let (k, v) = g.into_inner()?;
                    visit(&k, &v);
                }
            }
        }
        Ok((n, pending))
    }
}

// ---------------------------------------------------------------- records

fn task_value(id: &uuid::Uuid, status: &str, attempts: u32) -> Vec<u8> {
    let n = u128::from_be_bytes(*id.as_bytes()) as u64;
    let json = format!(
        concat!(
            r#"{{"id":"{id}","command":"generate-report","payload":"{{\"jobId\":\"j-{n:x}\","#,
            r#"\"tenant\":\"acme\",\"report\":\"monthly-revenue\",\"range\":{{\"from\":\"2026-01-01\","#,
            r#"\"to\":\"2026-01-31\"}},\"format\":\"pdf\",\"notify\":[\"ops@example.com\"]}}","#,
            r#""priority":5,"status":"{status}","attempts":{attempts},"maxAttempts":5,"#,
            r#""workerId":"worker-{w}","leaseUntil":"2026-11-27T22:50:00Z","#,
            r#""createdAt":"2026-11-27T22:47:44.123Z","updatedAt":"2026-11-27T22:47:45.456Z"}}"#
        ),
        id = id,
        n = n.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        status = status,
        attempts = attempts,
        w = n % 97,
    );
    // Fixed header decoded by the scan: status letter, priority.
    let mut v = Vec::with_capacity(TASK_LEN);
    v.push(status.as_bytes()[0]);
    v.push(5);
    v.extend_from_slice(json.as_bytes());
    v.resize(TASK_LEN, b' ');
    v
}

fn result_value(id: &uuid::Uuid) -> Vec<u8> {
    let mut v = format!(
        r#"{{"taskId":"{id}","status":"COMPLETED","result":"{{\"url\":\"s3://reports/{id}.pdf\"}}","completedAt":"2026-11-27T22:47:46Z"}}"#
    )
    .into_bytes();
    v.resize(RESULT_LEN, b' ');
    v
}

// ---------------------------------------------------------------- commit bench

struct Ack {
    done: Mutex<bool>,
    cv: Condvar,
}

struct Req {
    t: Transition,
    ack: Arc<Ack>,
}

struct CommitStats {
    transitions: u64,
    secs: f64,
    mean_batch: f64,
    p50_us: u32,
    p99_us: u32,
}

fn preload(store: &Store, n: usize) -> Res<()> {
    for chunk in (0..n).collect::<Vec<_>>().chunks(10_000) {
        let batch: Vec<Transition> = chunk
            .iter()
            .map(|_| {
                let id = uuid::Uuid::now_v7();
                Transition { key: id.into_bytes(), task: task_value(&id, "PENDING", 0), result: None }
            })
            .collect();
        store.write(batch.iter(), Mode::Fsync)?;
    }
    Ok(())
}

fn run_commit(store: Arc<Store>, mode: Mode, writers: usize, secs: f64, max_batch: usize) -> Res<CommitStats> {
    let (tx, rx) = mpsc::channel::<Req>();
    let batches = Arc::new(AtomicU64::new(0));
    let batched = Arc::new(AtomicU64::new(0));
    let committer = {
        let (store, batches, batched) = (store.clone(), batches.clone(), batched.clone());
        std::thread::spawn(move || -> Res<()> {
            let mut pending: Vec<Req> = Vec::with_capacity(max_batch);
            while let Ok(first) = rx.recv() {
                pending.push(first);
                while pending.len() < max_batch {
                    match rx.try_recv() {
                        Ok(r) => pending.push(r),
                        Err(_) => break,
                    }
                }
                store.write(pending.iter().map(|r| &r.t), mode)?;
                batches.fetch_add(1, Ordering::Relaxed);
                batched.fetch_add(pending.len() as u64, Ordering::Relaxed);
                for r in pending.drain(..) {
                    *r.ack.done.lock().map_err(|_| "poisoned")? = true;
                    r.ack.cv.notify_one();
                }
            }
            Ok(())
        })
    };

    let warmup = Duration::from_millis(500);
    let start = Instant::now();
    let (measure_from, deadline) = (start + warmup, start + warmup + Duration::from_secs_f64(secs));
    let producers: Vec<_> = (0..writers)
        .map(|_| {
            let tx = tx.clone();
            std::thread::spawn(move || -> Res<Vec<u32>> {
                let ack = Arc::new(Ack { done: Mutex::new(false), cv: Condvar::new() });
                let mut lat = Vec::new();
                let mut submit = |t: Transition| -> Res<()> {
                    let t0 = Instant::now();
                    *ack.done.lock().map_err(|_| "poisoned")? = false;
                    tx.send(Req { t, ack: ack.clone() })?;
                    let mut done = ack.done.lock().map_err(|_| "poisoned")?;
                    while !*done {
                        done = ack.cv.wait(done).map_err(|_| "poisoned")?;
                    }
                    if t0 >= measure_from {
                        lat.push(t0.elapsed().as_micros() as u32);
                    }
                    Ok(())
                };
                while Instant::now() < deadline {
                    let id = uuid::Uuid::now_v7();
                    let key = id.into_bytes();
                    submit(Transition { key, task: task_value(&id, "PENDING", 0), result: None })?;
                    submit(Transition { key, task: task_value(&id, "IN_PROGRESS", 1), result: None })?;
                    let result = Some(result_value(&id));
                    submit(Transition { key, task: task_value(&id, "COMPLETED", 1), result })?;
                }
                Ok(lat)
            })
        })
        .collect();
    drop(tx);
    let (b0, n0) = wait_until(measure_from, &batches, &batched);
    let mut lat = Vec::new();
    for p in producers {
        lat.extend(p.join().map_err(|_| "producer panicked")??);
    }
    let elapsed = measure_from.elapsed().as_secs_f64();
    committer.join().map_err(|_| "committer panicked")??;
    let (b, n) = (batches.load(Ordering::Relaxed) - b0, batched.load(Ordering::Relaxed) - n0);
    lat.sort_unstable();
    let pct = |p: usize| lat.get(lat.len() * p / 100).copied().unwrap_or(0);
    Ok(CommitStats {
        transitions: lat.len() as u64,
        secs: elapsed,
        mean_batch: n as f64 / b.max(1) as f64,
        p50_us: pct(50),
        p99_us: pct(99),
    })
}

fn wait_until(t: Instant, batches: &AtomicU64, batched: &AtomicU64) -> (u64, u64) {
    std::thread::sleep(t.saturating_duration_since(Instant::now()));
    (batches.load(Ordering::Relaxed), batched.load(Ordering::Relaxed))
}

fn cmd_commit(a: &Args) -> Res<()> {
    let writers: Vec<usize> = a.get("writers", "1,16,64,256").split(',').map(str::parse).collect::<Result<_, _>>()?;
    let secs: f64 = a.get("secs", "3").parse()?;
    let max_batch: usize = a.get("max-batch", "1024").parse()?;
    let preload_n: usize = a.get("preload", "100000").parse()?;
    let cache_mb: usize = a.get("cache-mb", "64").parse()?;
    println!("| store | mode | W | transitions/s | mean batch | p50 ms | p99 ms |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for store_kind in a.stores() {
        for mode in a.modes()? {
            for &w in &writers {
                let dir = TempDir::new()?;
                let store = Arc::new(Store::open(store_kind, &dir.0, cache_mb, a.get("memtable-mb", "64").parse()?)?);
                preload(&store, preload_n)?;
                let s = run_commit(store, mode, w, secs, max_batch)?;
                println!(
                    "| {store_kind} | {} | {w} | {:.0} | {:.1} | {:.2} | {:.2} |",
                    if mode == Mode::Fsync { "fsync" } else { "buffered" },
                    s.transitions as f64 / s.secs,
                    s.mean_batch,
                    s.p50_us as f64 / 1000.0,
                    s.p99_us as f64 / 1000.0,
                );
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- recovery bench

fn open_from_args(a: &Args) -> Res<Store> {
    let dir = Path::new(a.get("dir", ""));
    Store::open(a.get("store", "redb"), dir, a.get("cache-mb", "64").parse()?, a.get("memtable-mb", "64").parse()?)
}

/// Child process: load `--tasks` pending tasks in batches of 1000 (durable, or
/// not with `--buffered`), then close cleanly, or exit without closing with `--crash`.
fn cmd_load(a: &Args) -> Res<()> {
    let store = open_from_args(a)?;
    let n: usize = a.get("tasks", "1000000").parse()?;
    let mode = if a.flag("buffered") { Mode::Buffered } else { Mode::Fsync };
    let t0 = Instant::now();
    let mut batch = Vec::with_capacity(1000);
    for i in 0..n {
        let id = uuid::Uuid::now_v7();
        batch.push(Transition { key: id.into_bytes(), task: task_value(&id, "PENDING", 0), result: None });
        if batch.len() == 1000 || i + 1 == n {
            store.write(batch.iter(), mode)?;
            batch.clear();
        }
    }
    println!("load_s={:.2}", t0.elapsed().as_secs_f64());
    if a.flag("crash") {
        std::mem::forget(store);
        std::process::exit(0);
    }
    let t1 = Instant::now();
    drop(store);
    println!("close_s={:.2}", t1.elapsed().as_secs_f64());
    Ok(())
}

/// Child process: reopen, scan everything, report times and peak RSS.
fn cmd_scan(a: &Args) -> Res<()> {
    let t0 = Instant::now();
    let store = open_from_args(a)?;
    let open = t0.elapsed().as_secs_f64();
    let rss_open = proc_status("VmHWM");
    let t1 = Instant::now();
    let (n, pending) = store.scan()?;
    let scan = t1.elapsed().as_secs_f64();
    println!(
        "open_s={open:.2} scan_s={scan:.2} records={n} pending={} hwm_after_open_mb={} hwm_mb={} rss_mb={}",
        pending.len(),
        rss_open / 1024,
        proc_status("VmHWM") / 1024,
        proc_status("VmRSS") / 1024
    );
    Ok(())
}

fn cmd_recovery(a: &Args) -> Res<()> {
    let exe = std::env::current_exe()?;
    let tasks = a.get("tasks", "1000000");
    let cache_mb = a.get("cache-mb", "64");
    let memtable_mb = a.get("memtable-mb", "64");
    let crash = a.flag("crash");
    println!("| store | close | cache | tasks | load s | disk MB | reopen s | scan s | records found | peak RSS MB (after open / after scan) |");
    println!("|---|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for store in a.stores() {
        let dir = TempDir::new()?;
        let d = dir.0.to_string_lossy().into_owned();
        let sizes = ["--cache-mb", cache_mb, "--memtable-mb", memtable_mb];
        let mut load = vec!["load", "--store", store, "--dir", &d, "--tasks", tasks];
        load.extend(sizes);
        for f in ["crash", "buffered"].into_iter().filter(|f| a.flag(f)) {
            load.push(if f == "crash" { "--crash" } else { "--buffered" });
        }
        let lo = child(&exe, &load)?;
        let disk = dir_size(&dir.0)?;
        if a.flag("cold") {
            evict_page_cache(&dir.0)?;
        }
        let sc = child(&exe, &[&["scan", "--store", store, "--dir", &d][..], &sizes].concat())?;
        eprintln!("{store}: {lo} | {sc}");
        let f = |s: &str, k: &str| -> String {
            s.split_whitespace()
                .find_map(|kv| kv.strip_prefix(&format!("{k}=")[..]).map(str::to_owned))
                .unwrap_or_default()
        };
        println!(
            "| {store} | {}{} | {} | {tasks} | {} | {} | {} | {} | {} | {} / {} |",
            if crash { "crash" } else { "clean" },
            if a.flag("buffered") { " (buffered load)" } else { "" },
            if a.flag("cold") { "cold" } else { "warm" },
            f(&lo, "load_s"),
            disk >> 20,
            f(&sc, "open_s"),
            f(&sc, "scan_s"),
            f(&sc, "records"),
            f(&sc, "hwm_after_open_mb"),
            f(&sc, "hwm_mb"),
        );
    }
    Ok(())
}

fn child(exe: &Path, args: &[&str]) -> Res<String> {
    let out = Command::new(exe).args(args).output()?;
    if !out.status.success() {
        return Err(format!("{args:?} failed: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(String::from_utf8_lossy(&out.stdout).split_whitespace().collect::<Vec<_>>().join(" "))
}

/// Drops this directory's files (only) from the OS page cache: `sync FILE` then
/// `dd iflag=nocache count=0` (POSIX_FADV_DONTNEED on the whole file).
fn evict_page_cache(dir: &Path) -> Res<()> {
    let script = r#"find "$0" -type f | while read -r f; do sync "$f"; dd if="$f" iflag=nocache count=0 status=none; done"#;
    let st = Command::new("sh").arg("-c").arg(script).arg(dir).status()?;
    if !st.success() {
        return Err("evicting the page cache failed".into());
    }
    Ok(())
}

fn proc_status(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn dir_size(p: &Path) -> Res<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(p)? {
        let e = e?;
        let m = e.metadata()?;
        total += if m.is_dir() { dir_size(&e.path())? } else { m.len() };
    }
    Ok(total)
}

// ---------------------------------------------------------------- plumbing

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Res<TempDir> {
        static N: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "storage-bench-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p)?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Args(HashMap<String, String>);

impl Args {
    fn parse(args: &[String]) -> Args {
        let mut m = HashMap::new();
        let mut it = args.iter().peekable();
        while let Some(a) = it.next() {
            if let Some(k) = a.strip_prefix("--") {
                let v = match it.peek() {
                    Some(v) if !v.starts_with("--") => it.next().cloned().unwrap_or_default(),
                    _ => "true".to_owned(),
                };
                m.insert(k.to_owned(), v);
            }
        }
        Args(m)
    }
    fn get<'a>(&'a self, k: &str, default: &'a str) -> &'a str {
        self.0.get(k).map_or(default, String::as_str)
    }
    fn flag(&self, k: &str) -> bool {
        self.0.contains_key(k)
    }
    fn stores(&self) -> Vec<&str> {
        match self.get("store", "both") {
            "both" => vec!["redb", "fjall"],
            s => vec![s],
        }
    }
    fn modes(&self) -> Res<Vec<Mode>> {
        Ok(match self.get("mode", "both") {
            "both" => vec![Mode::Fsync, Mode::Buffered],
            "fsync" => vec![Mode::Fsync],
            "buffered" => vec![Mode::Buffered],
            m => return Err(format!("unknown mode {m}").into()),
        })
    }
}

fn main() -> Res<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let a = Args::parse(argv.get(1..).unwrap_or(&[]));
    match argv.first().map(String::as_str) {
        Some("commit") => cmd_commit(&a),
        Some("recovery") => cmd_recovery(&a),
        Some("load") => cmd_load(&a),
        Some("scan") => cmd_scan(&a),
        _ => Err("usage: storage-bench commit|recovery [--options] (see the doc comment in main.rs)".into()),
    }
}
