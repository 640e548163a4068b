//! An engine's background tasks (committer, hub, compactor) live exactly as long as
//! the engine: a process that embeds Tether and stops it, or a test suite starting
//! hundreds of servers, must not keep stores open and tasks spinning behind it.

use std::sync::Arc;
use std::time::Duration;
use tether_bus::LocalBus;
use tether_engine::{Engine, Knobs};
use tether_store::{SqliteStore, Store};

#[tokio::test]
async fn dropping_the_engine_ends_its_tasks_and_releases_the_store() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let before = metrics.num_alive_tasks();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(dir.path().join("t.db")).await.unwrap());
    let engine = Engine::start(store.clone(), Arc::new(LocalBus::new()), Knobs::default())
        .await
        .unwrap();
    assert!(metrics.num_alive_tasks() > before, "the engine runs tasks");
    drop(engine);
    // Bounded wait for the tasks to notice; no timing is asserted, only the end state.
    for _ in 0..200 {
        if metrics.num_alive_tasks() == before && Arc::strong_count(&store) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(metrics.num_alive_tasks(), before, "every engine task ended");
    assert_eq!(
        Arc::strong_count(&store),
        1,
        "nothing but this test holds the store"
    );
}
