//! Quickstart: watch a query, write through the same client, and read the local store.
//!
//! Start a server (`cargo run -p tether -- serve`), then:
//!
//! ```sh
//! cargo run -p tether-client --example todos            # ws://127.0.0.1:7070/ws
//! cargo run -p tether-client --example todos -- ws://HOST:PORT/ws
//! ```

use futures_util::StreamExt;
use serde_json::json;
use tether_client::{Client, ClientError, Event, Query, Target};

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:7070/ws".into());
    run(&url).await
}

pub async fn run(url: &str) -> Result<(), ClientError> {
    // The local store keeps what the subscriptions hold, so reads need no round trip.
    let client = Client::builder(url).local_store(true).connect().await?;
    let mut open = client
        .subscribe(Target::query("todos", Query::new().filter("done", false)))
        .await?;

    // Ids of our own, so the example can run against a server holding other todos.
    let tag = format!("example-{}", std::process::id());
    let (milk, eggs) = (format!("{tag}-milk"), format!("{tag}-eggs"));
    client
        .create(
            "todos",
            Some(&milk),
            json!({"title": "Buy milk", "done": false}),
        )
        .await?;
    client
        .create(
            "todos",
            Some(&eggs),
            json!({"title": "Buy eggs", "done": false}),
        )
        .await?;
    // Done: it leaves the "open" query, which sees a DELETE.
    client.patch("todos", &milk, json!({"done": true})).await?;

    let mut ours = 0;
    while ours < 3 {
        let Some(event) = open.next().await else {
            break;
        };
        match event? {
            Event::Snapshot { records, pos, .. } => {
                println!("{} open todos at position {pos}", records.len())
            }
            Event::Put { record, pos } => {
                ours += usize::from(record.id.starts_with(&tag));
                println!("open  @{pos}: {} {}", record.id, record.data["title"]);
            }
            Event::Delete { id, pos, .. } => {
                ours += usize::from(id.starts_with(&tag));
                println!("done  @{pos}: {id}");
            }
            other => println!("{other:?}"),
        }
    }

    if let Some(store) = client.store() {
        let mine: Vec<_> = store
            .all("todos")
            .into_iter()
            .filter(|r| r.id.starts_with(&tag))
            .collect();
        println!(
            "held locally: {:?}",
            mine.iter().map(|r| &r.id).collect::<Vec<_>>()
        );
    }
    client.delete("todos", &milk).await?;
    client.delete("todos", &eggs).await?;
    client.close().await;
    Ok(())
}
