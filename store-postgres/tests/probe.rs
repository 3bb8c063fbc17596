//! The benchmark's probes of the PostgreSQL server (`probe`): each gives one
//! sample per round, the wake-ups only once the listener has the `NOTIFY`,
//! and a dropped schema is gone.

use livebase_store_postgres::probe;
use livebase_store_postgres::PostgresPersistence;
use livebase_testkit::postgres::{server_url, unique_name};

#[test]
fn round_trips_give_one_sample_per_round() {
    let Some(url) = server_url("probe_round_trips") else {
        return;
    };
    let samples = probe::round_trips(&url, 7).unwrap();
    assert_eq!(samples.len(), 7);
}

#[test]
fn notify_wakeups_give_one_sample_per_notify() {
    let Some(url) = server_url("probe_notify_wakeups") else {
        return;
    };
    let samples = probe::notify_wakeups(&url, 5).unwrap();
    assert_eq!(samples.len(), 5);
}

#[tokio::test]
async fn the_probes_run_from_async_code_too() {
    let Some(url) = server_url("probe_from_async_code") else {
        return;
    };
    assert_eq!(probe::round_trips(&url, 2).unwrap().len(), 2);
    assert_eq!(probe::notify_wakeups(&url, 2).unwrap().len(), 2);
}

#[test]
fn insert_commits_time_each_insert_in_a_table_they_drop() {
    let Some(url) = server_url("probe_insert_commits") else {
        return;
    };
    let schema = unique_name("probe");
    assert_eq!(probe::insert_commits(&url, &schema, 6).unwrap().len(), 6);
    // Dropped after: a second run makes it afresh.
    assert_eq!(probe::insert_commits(&url, &schema, 1).unwrap().len(), 1);
    probe::drop_schema(&url, &schema).unwrap();
}

#[test]
fn server_settings_name_the_version_fsync_and_synchronous_commit() {
    let Some(url) = server_url("probe_server_settings") else {
        return;
    };
    let settings = probe::server_settings(&url).unwrap();
    let names: Vec<&str> = settings.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["server_version", "fsync", "synchronous_commit"]);
    assert!(settings.iter().all(|(_, v)| !v.is_empty()));
}

#[test]
fn a_dropped_schema_is_gone_and_opens_empty_again() {
    let Some(url) = server_url("probe_drop_schema") else {
        return;
    };
    let schema = unique_name("probe_drop");
    let p = PostgresPersistence::open_schema(&url, &schema, None).unwrap();
    let mut conn = livebase_store::Persistence::connect(&p).unwrap();
    conn.begin_write().unwrap();
    conn.commit(livebase_schema::Timestamp::new(9)).unwrap();
    drop(conn);
    drop(p);
    probe::drop_schema(&url, &schema).unwrap();
    let p = PostgresPersistence::open_schema(&url, &schema, None).unwrap();
    let mut conn = livebase_store::Persistence::connect(&p).unwrap();
    assert_eq!(conn.begin_read().unwrap(), livebase_schema::Timestamp::ZERO);
    conn.end_read().unwrap();
    drop(conn);
    probe::drop_schema(&url, &schema).unwrap();
}
