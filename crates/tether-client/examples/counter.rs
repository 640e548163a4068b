//! Typed data and optimistic concurrency: two writers increment one counter; each
//! update says which version it read, and a `version_conflict` means "read again".
//!
//! ```sh
//! cargo run -p tether-client --example counter [-- ws://HOST:PORT/ws]
//! ```

use serde::{Deserialize, Serialize};
use tether_client::{Client, ClientError, ErrorCode, Write};

#[derive(Debug, Serialize, Deserialize)]
struct Counter {
    n: u64,
}

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let url = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:7070/ws".into());
    let n = run(&url, 20).await?;
    println!("counter reached {n}");
    Ok(())
}

/// Increments a fresh counter `times` times from two writers; returns the final value.
pub async fn run(url: &str, times: u64) -> Result<u64, ClientError> {
    let client = Client::connect(url).await?;
    let id = format!("example-{}", std::process::id());
    client.upsert("counters", &id, Counter { n: 0 }).await?;

    let writers = (0..2).map(|_| {
        let (client, id) = (client.clone(), id.clone());
        tokio::spawn(async move {
            for _ in 0..times / 2 {
                increment(&client, &id).await?;
            }
            Ok::<_, ClientError>(())
        })
    });
    for writer in writers.collect::<Vec<_>>() {
        writer
            .await
            .map_err(|e| ClientError::Invalid(e.to_string()))??;
    }
    let record = client
        .get("counters", &id)
        .await?
        .ok_or_else(|| ClientError::Invalid("the counter vanished".into()))?;
    client.delete("counters", &id).await?;
    Ok(record.data_as::<Counter>()?.n)
}

async fn increment(client: &Client, id: &str) -> Result<(), ClientError> {
    loop {
        let Some(record) = client.get("counters", id).await? else {
            return Err(ClientError::Invalid(format!("no counter {id}")));
        };
        let counter: Counter = record.data_as()?;
        let next = serde_json::to_value(Counter { n: counter.n + 1 })
            .map_err(|e| ClientError::Invalid(e.to_string()))?;
        let write = Write::update(
            "counters",
            id,
            next.as_object().cloned().unwrap_or_default(),
        )
        .if_version(record.version);
        match client.write(write).await {
            Ok(_) => return Ok(()),
            // Someone else wrote first: read the new value and try again.
            Err(e) if e.code() == Some(&ErrorCode::VersionConflict) => continue,
            Err(e) => return Err(e),
        }
    }
}
