//! The examples run end to end against a real server, so they cannot rot.

mod common;

#[allow(dead_code)]
#[path = "../examples/todos.rs"]
mod todos;

#[allow(dead_code)]
#[path = "../examples/counter.rs"]
mod counter;

#[tokio::test]
async fn the_todos_example_runs() {
    let s = common::TestServer::start().await;
    tokio::time::timeout(common::WAIT, todos::run(&s.ws()))
        .await
        .expect("the example finishes")
        .unwrap();
}

#[tokio::test]
async fn the_counter_example_counts_every_increment() {
    let s = common::TestServer::start().await;
    let n = tokio::time::timeout(common::WAIT, counter::run(&s.ws(), 20))
        .await
        .expect("the example finishes")
        .unwrap();
    assert_eq!(n, 20);
}
