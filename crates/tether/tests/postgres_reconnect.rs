//! The PostgreSQL store survives its connections being killed under a running server:
//! PostgreSQL itself ends every backend of this server (`pg_terminate_backend`, as a
//! restart or a failover would), writes after that succeed (a few may first be refused
//! with `unavailable`, which says "retry"), nothing acknowledged is lost, and a watcher
//! that stayed connected gets every change in order.
//!
//! Restarting the shared PostgreSQL itself would break every other test using it, so
//! only this server's connections are ended: they carry an `application_name` of their
//! own. Needs `TETHER_TEST_POSTGRES`; without it the test prints a notice and passes
//! without running. The schema is new per run and dropped at the end.

mod common;

use common::{Client, TestServer};
use serde_json::json;
use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Ends every backend of `application` (with `kill`) or only lists them; returns
/// their process ids.
async fn backends(postgres: &str, application: &str, kill: bool) -> BTreeSet<i32> {
    let (client, connection) = tokio_postgres::connect(postgres, tokio_postgres::NoTls)
        .await
        .expect("the test connects to PostgreSQL");
    let task = tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT pid, CASE WHEN $2 THEN pg_terminate_backend(pid) END
             FROM pg_stat_activity
             WHERE datname = current_database() AND application_name = $1
               AND pid <> pg_backend_pid()",
            &[&application, &kill],
        )
        .await
        .expect("pg_stat_activity");
    drop(client);
    let _ = task.await;
    rows.iter().map(|r| r.get(0)).collect()
}

async fn drop_schema(postgres: &str, schema: &str) {
    if let Ok((client, connection)) = tokio_postgres::connect(postgres, tokio_postgres::NoTls).await
    {
        let task = tokio::spawn(connection);
        let _ = client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
            .await;
        drop(client);
        let _ = task.await;
    }
}

/// Creates `id`, retrying what is refused as `unavailable`; returns the refusals.
async fn create(c: &mut Client, id: &str) -> usize {
    let mut refused = 0;
    loop {
        let r = c
            .request(json!({"type": "create", "resource": "k", "id": id, "data": {"id": id}}))
            .await;
        match r["code"].as_str() {
            None => return refused,
            // An earlier try committed after all (the connection died during COMMIT).
            Some("already_exists") if refused > 0 => return refused,
            Some("unavailable") if refused < 20 => {
                refused += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Some(_) => panic!("create {id} after {refused} refusals: {r}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_are_replaced_and_nothing_acknowledged_is_lost() {
    let Some(postgres) = common::service("TETHER_TEST_POSTGRES", "PostgreSQL reconnect test")
    else {
        return;
    };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let schema = format!("tt_kill_{}_{nanos:x}", std::process::id());
    let application = format!("tether-killtest-{}-{nanos:x}", std::process::id());
    let separator = if postgres.contains('?') { '&' } else { '?' };
    let store = format!("{postgres}{separator}schema={schema}&application_name={application}");
    let server = TestServer::start_with(|c| c.store = Some(store)).await;

    let (mut watcher, _) = Client::canonical(&server.url("/ws")).await;
    let snap = watcher
        .request(json!({"type": "subscribe", "sub": "k", "resource": "k"}))
        .await;
    assert_eq!(snap["type"], "snapshot", "{snap}");
    let (mut writer, _) = Client::canonical(&server.url("/ws")).await;

    let ids: Vec<String> = (0..40).map(|i| format!("r{i:02}")).collect();
    for id in &ids[..20] {
        assert_eq!(create(&mut writer, id).await, 0, "before the kill");
    }
    let killed = backends(&postgres, &application, true).await;
    assert!(
        !killed.is_empty(),
        "the server's connections were not found"
    );
    let mut refusals = 0;
    for id in &ids[20..] {
        refusals += create(&mut writer, id).await;
    }
    let now = backends(&postgres, &application, false).await;
    eprintln!(
        "{} connections killed, {} new ones; {refusals} writes refused before one succeeded",
        killed.len(),
        now.len()
    );
    assert!(
        !now.is_empty() && now.is_disjoint(&killed),
        "killed {killed:?}, now {now:?}"
    );
    // Each dead pooled connection may fail one request before it is replaced.
    assert!(
        refusals <= killed.len() + 1,
        "{refusals} refusals for {} killed connections",
        killed.len()
    );

    // Everything acknowledged is there, and the watcher saw each create once, in order.
    let all = writer
        .request(json!({"type": "all", "resource": "k"}))
        .await;
    let stored: BTreeSet<&str> = all["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(stored, ids.iter().map(String::as_str).collect());
    let mut last = 0;
    for id in &ids {
        let put = watcher.recv_type("PUT").await;
        assert_eq!(put["id"], json!(id), "{put}");
        let pos = put["pos"].as_u64().unwrap();
        assert!(pos > last, "positions rise: {pos} after {last}");
        last = pos;
    }
    server.server.stop().await.unwrap();
    drop_schema(&postgres, &schema).await;
}
