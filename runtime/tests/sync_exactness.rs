//! Exact invalidation over the wire (`docs/reference/invariants.md`, invariants 3 and 4), checked
//! at random: random notes across a few organizations, random subscriptions
//! (`notes:list`, `notes:range` with random bounds, and `notes:count`, whose
//! result often survives a write that hits it) spread over a few connections,
//! then a sequence of random writes (inserts, patches of each
//! field, patches that change nothing, deletes) and query-set changes.
//!
//! After each write, every connection is fenced with a mutation of its own (its
//! read-your-writes Transition comes after anything the write caused), and:
//!
//! - the subscriptions that were sent a result are exactly those whose result
//!   changed, compared with a fresh evaluation over HTTP;
//! - every pushed result equals that fresh evaluation, at an `endVersion.ts` no
//!   older than the write;
//! - the worker re-ran exactly the distinct queries whose read set the write
//!   hit (by a model of the index ranges each query scans), no more.
//!
//! Seeds are fixed so a failure reproduces; `LIVEBASE_SYNC_SEED=<n>` runs one.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use livebase_schema::protocol::StateModification;
use livebase_schema::{obj, Value};
use livebase_testkit::{add, remove, Client, TestServer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const SEEDS: [u64; 3] = [7, 1_000_003, 20_240_611];
const ORGS: [&str; 3] = ["o1", "o2", "o3"];
const BODIES: [&str; 2] = ["x", "y"];
const CONNECTIONS: usize = 4;
const INITIAL_NOTES: usize = 12;
const STEPS: usize = 50;
/// `n` takes values 0..N_VALUES, so ranges and writes collide often.
const N_VALUES: u32 = 10;

#[derive(Clone, Debug, PartialEq)]
struct Note {
    org: &'static str,
    n: f64,
    body: &'static str,
}

#[derive(Clone, Debug, PartialEq)]
enum Query {
    List(&'static str),
    /// `lo <= n < hi` in one organization.
    Range(&'static str, f64, f64),
    /// Reads what `List` reads but returns only the length, so a write can hit
    /// it and leave its result unchanged.
    Count(&'static str),
}

impl Query {
    fn random(rng: &mut StdRng) -> Query {
        let org = ORGS[rng.random_range(0..ORGS.len())];
        let kind = rng.random_range(0..10);
        if kind < 3 {
            Query::List(org)
        } else if kind < 5 {
            Query::Count(org)
        } else {
            let lo = rng.random_range(0..N_VALUES);
            let hi = rng.random_range(lo + 1..=N_VALUES + 1);
            Query::Range(org, f64::from(lo), f64::from(hi))
        }
    }

    fn path(&self) -> &'static str {
        match self {
            Query::List(_) => "notes:list",
            Query::Range(..) => "notes:range",
            Query::Count(_) => "notes:count",
        }
    }

    fn args(&self) -> Value {
        match self {
            Query::List(org) | Query::Count(org) => obj! { "organizationId" => *org },
            Query::Range(org, lo, hi) => {
                obj! { "organizationId" => *org, "lo" => *lo, "hi" => *hi }
            }
        }
    }

    /// What the worker shares evaluations by (all callers are anonymous).
    fn key(&self) -> String {
        format!("{self:?}")
    }

    /// Whether this note lies in the index range the query scans.
    fn reads(&self, note: &Note) -> bool {
        match self {
            Query::List(org) | Query::Count(org) => note.org == *org,
            Query::Range(org, lo, hi) => note.org == *org && *lo <= note.n && note.n < *hi,
        }
    }
}

struct Sub {
    conn: usize,
    query_id: u32,
    query: Query,
    /// The last result this subscriber was sent.
    last: Value,
}

/// One random write: the mutation to send and the note before and after it.
struct Write {
    path: &'static str,
    args: Value,
    id: Option<String>,
    before: Option<Note>,
    after: Option<Note>,
}

fn random_note(rng: &mut StdRng) -> Note {
    Note {
        org: ORGS[rng.random_range(0..ORGS.len())],
        n: f64::from(rng.random_range(0..N_VALUES)),
        body: BODIES[rng.random_range(0..BODIES.len())],
    }
}

fn random_write(rng: &mut StdRng, notes: &BTreeMap<String, Note>) -> Write {
    let pick = rng.random_range(0..10);
    if notes.is_empty() || pick < 3 {
        let note = random_note(rng);
        return Write {
            path: "notes:add",
            args: obj! { "organizationId" => note.org, "body" => note.body, "n" => note.n },
            id: None,
            before: None,
            after: Some(note),
        };
    }
    let ids: Vec<&String> = notes.keys().collect();
    let id = ids[rng.random_range(0..ids.len())].clone();
    let before = notes[&id].clone();
    if pick < 5 {
        return Write {
            path: "notes:remove",
            args: obj! { "id" => id.as_str() },
            id: Some(id),
            before: Some(before),
            after: None,
        };
    }
    // A patch of a random subset of the fields, each to a random value (often
    // the current one, so some patches change nothing at all).
    let other = random_note(rng);
    let mut after = before.clone();
    let mut fields = obj! { "id" => id.as_str() };
    let Value::Object(patch) = &mut fields else {
        unreachable!()
    };
    if rng.random_bool(0.5) {
        after.org = other.org;
        patch.insert("organizationId".into(), Value::from(other.org));
    }
    if rng.random_bool(0.6) {
        after.n = other.n;
        patch.insert("n".into(), Value::from(other.n));
    }
    if rng.random_bool(0.5) {
        after.body = other.body;
        patch.insert("body".into(), Value::from(other.body));
    }
    Write {
        path: "notes:set",
        args: fields,
        id: Some(id),
        before: Some(before),
        after: Some(after),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_go_to_exactly_the_subscriptions_whose_results_changed() {
    let seeds: Vec<u64> = match std::env::var("LIVEBASE_SYNC_SEED") {
        Ok(s) => vec![s.parse().expect("LIVEBASE_SYNC_SEED is a number")],
        Err(_) => SEEDS.to_vec(),
    };
    for seed in seeds {
        run(seed).await;
    }
}

async fn fresh(server: &TestServer, query: &Query) -> Value {
    support::query(server, query.path(), query.args())
        .await
        .unwrap_or_else(|e| panic!("{query:?} failed: {e}"))
}

fn live_keys(subs: &[Sub]) -> BTreeSet<String> {
    subs.iter().map(|s| s.query.key()).collect()
}

async fn run(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let server = TestServer::start(support::registry()).await;
    let mut writer = server.client().await;
    let mut notes: BTreeMap<String, Note> = BTreeMap::new();
    for _ in 0..INITIAL_NOTES {
        let note = random_note(&mut rng);
        let args = obj! { "organizationId" => note.org, "body" => note.body, "n" => note.n };
        let done = writer.mutation("notes:add", args).await.expect("notes:add");
        let id = done.value.as_str().expect("an id").to_string();
        notes.insert(id, note);
    }

    let mut conns: Vec<Client> = Vec::new();
    let mut subs: Vec<Sub> = Vec::new();
    let mut next_query_id = 0u32;
    for conn in 0..CONNECTIONS {
        let mut client = server.client().await;
        let mut batch = Vec::new();
        for _ in 0..rng.random_range(2..=5) {
            batch.push((next_query_id, Query::random(&mut rng)));
            next_query_id += 1;
        }
        let adds = batch
            .iter()
            .map(|(id, q)| add(*id, q.path(), q.args()))
            .collect();
        let t = client.modify(adds).await;
        for (query_id, query) in batch {
            let value = t.updated(query_id).expect("a first result").clone();
            assert_eq!(
                value,
                fresh(&server, &query).await,
                "seed {seed}: first result"
            );
            subs.push(Sub {
                conn,
                query_id,
                query,
                last: value,
            });
        }
        conns.push(client);
    }

    // What the run exercised, printed at the end (`--nocapture`).
    let (mut writes, mut idle_writes, mut pushes, mut reruns, mut unchanged) = (0, 0, 0, 0, 0);
    for step in 0..STEPS {
        let context = format!("seed {seed}, step {step}");
        if rng.random_bool(0.15) {
            change_query_set(
                &server,
                &mut rng,
                &mut conns,
                &mut subs,
                &mut next_query_id,
                &context,
            )
            .await;
            continue;
        }

        let write = random_write(&mut rng, &notes);
        let context = format!("{context}: {} {:?}", write.path, write.args);
        let before_evaluations = server.evaluations();
        // Most writes come from a connection without queries; some from a
        // subscriber, whose own push and response then interleave.
        let by = rng.random_range(0..CONNECTIONS * 3);
        let client = if by < CONNECTIONS {
            &mut conns[by]
        } else {
            &mut writer
        };
        let done = client
            .mutation(write.path, write.args.clone())
            .await
            .unwrap_or_else(|e| panic!("{context}: {e:?}"));
        match (&write.id, &write.after) {
            (None, Some(note)) => {
                let id = done.value.as_str().expect("an id").to_string();
                notes.insert(id, note.clone());
            }
            (Some(id), Some(note)) => {
                notes.insert(id.clone(), note.clone());
            }
            (Some(id), None) => {
                notes.remove(id);
            }
            (None, None) => unreachable!(),
        }

        // The model: which distinct queries' read sets the write hit. A patch
        // that changes nothing writes nothing.
        let wrote = write.before != write.after;
        let hits = |q: &Query| {
            wrote
                && (write.before.as_ref().is_some_and(|n| q.reads(n))
                    || write.after.as_ref().is_some_and(|n| q.reads(n)))
        };
        let hit_keys: BTreeSet<String> = subs
            .iter()
            .filter(|s| hits(&s.query))
            .map(|s| s.query.key())
            .collect();

        // Fence every connection and collect what each was sent.
        let mut pushed: BTreeMap<(usize, u32), Value> = BTreeMap::new();
        for (conn, client) in conns.iter_mut().enumerate() {
            let fence = client
                .mutation("notes:noop", obj! {})
                .await
                .expect("notes:noop");
            for t in client.transitions_until(fence.ts).await {
                for m in t.modifications {
                    match m {
                        StateModification::QueryUpdated {
                            query_id, value, ..
                        } => {
                            assert!(
                                t.end.ts >= done.ts,
                                "{context}: a push older than the write"
                            );
                            let again = pushed.insert(
                                (conn, query_id.0),
                                Arc::unwrap_or_clone(value).into_value(),
                            );
                            assert!(again.is_none(), "{context}: query {query_id} pushed twice");
                        }
                        other => panic!("{context}: unexpected {other:?}"),
                    }
                }
            }
        }

        let distinct: BTreeMap<String, &Query> =
            subs.iter().map(|s| (s.query.key(), &s.query)).collect();
        let mut fresh_by_key: BTreeMap<String, Value> = BTreeMap::new();
        for (key, query) in distinct {
            fresh_by_key.insert(key, fresh(&server, query).await);
        }
        let changed: BTreeSet<(usize, u32)> = subs
            .iter()
            .filter(|s| fresh_by_key[&s.query.key()] != s.last)
            .map(|s| (s.conn, s.query_id))
            .collect();
        let got: BTreeSet<(usize, u32)> = pushed.keys().copied().collect();
        assert_eq!(
            got, changed,
            "{context}: pushed vs changed (connection, query id)"
        );
        for s in &mut subs {
            let now = &fresh_by_key[&s.query.key()];
            if let Some(value) = pushed.get(&(s.conn, s.query_id)) {
                assert_eq!(
                    value, now,
                    "{context}: pushed {:?} differs from fresh",
                    s.query
                );
                assert!(
                    hit_keys.contains(&s.query.key()),
                    "{context}: changed without a hit"
                );
            }
            s.last = now.clone();
        }
        assert_eq!(
            server.evaluations() - before_evaluations,
            hit_keys.len() as u64,
            "{context}: re-runs vs read sets hit {hit_keys:?}"
        );
        writes += 1;
        idle_writes += usize::from(hit_keys.is_empty());
        pushes += pushed.len();
        reruns += hit_keys.len();
        unchanged += subs
            .iter()
            .filter(|s| {
                hit_keys.contains(&s.query.key()) && !pushed.contains_key(&(s.conn, s.query_id))
            })
            .count();
    }
    eprintln!(
        "seed {seed}: {writes} writes ({idle_writes} hit no query), {reruns} re-runs, \
         {pushes} pushes, {unchanged} re-run subscriptions left unchanged and not sent"
    );
    server.shutdown().await;
}

/// Adds a random query to, or removes one from, a random connection.
async fn change_query_set(
    server: &TestServer,
    rng: &mut StdRng,
    conns: &mut [Client],
    subs: &mut Vec<Sub>,
    next_query_id: &mut u32,
    context: &str,
) {
    let conn = rng.random_range(0..conns.len());
    let own: Vec<usize> = (0..subs.len()).filter(|&i| subs[i].conn == conn).collect();
    let before_evaluations = server.evaluations();
    if own.is_empty() || rng.random_bool(0.6) {
        let query = Query::random(rng);
        let shared = live_keys(subs).contains(&query.key());
        let query_id = *next_query_id;
        *next_query_id += 1;
        let t = conns[conn]
            .modify(vec![add(query_id, query.path(), query.args())])
            .await;
        assert_eq!(t.query_ids(), vec![query_id], "{context}: adding {query:?}");
        let value = t.updated(query_id).expect("a first result").clone();
        assert_eq!(
            value,
            fresh(server, &query).await,
            "{context}: first result of {query:?}"
        );
        assert_eq!(
            server.evaluations() - before_evaluations,
            u64::from(!shared),
            "{context}: a query already live is shared, not re-run"
        );
        subs.push(Sub {
            conn,
            query_id,
            query,
            last: value,
        });
    } else {
        let sub = subs.remove(own[rng.random_range(0..own.len())]);
        let t = conns[conn].modify(vec![remove(sub.query_id)]).await;
        assert_eq!(t.query_ids(), vec![sub.query_id], "{context}: removing");
        assert!(matches!(
            t.modifications[0],
            StateModification::QueryRemoved { .. }
        ));
        assert_eq!(server.evaluations(), before_evaluations);
    }
    let live = server
        .stats()
        .live_queries
        .load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        live,
        live_keys(subs).len() as u64,
        "{context}: live shared queries"
    );
}
