//! Prints every change to a resource until interrupted, riding out server restarts:
//! the client reconnects and resumes, so nothing is missed or printed twice.
//!
//! ```sh
//! cargo run -p tether-client --example watch -- todos [ws://HOST:PORT/ws]
//! ```

use futures_util::StreamExt;
use tether_client::{Client, ClientError, ConnectionEvent, Event, Target};

#[tokio::main]
async fn main() -> Result<(), ClientError> {
    let mut args = std::env::args().skip(1);
    let resource = args.next().unwrap_or_else(|| "todos".into());
    let url = args
        .next()
        .unwrap_or_else(|| "ws://127.0.0.1:7070/ws".into());

    let client = Client::connect(&url).await?;
    let mut news = client.events();
    tokio::spawn(async move {
        while let Ok(event) = news.recv().await {
            match event {
                ConnectionEvent::Disconnected { reason, .. } => eprintln!("lost: {reason}"),
                ConnectionEvent::Connected { resumed: true, .. } => eprintln!("resumed"),
                _ => {}
            }
        }
    });

    let mut changes = client.subscribe(Target::resource(&resource)).await?;
    while let Some(event) = changes.next().await {
        match event? {
            Event::Snapshot { records, pos, .. } => {
                println!("{resource}: {} records at {pos}", records.len())
            }
            Event::Put { record, pos } => println!("@{pos} PUT {} {:?}", record.id, record.data),
            Event::Patch { id, patch, pos, .. } => println!("@{pos} PATCH {id} {patch:?}"),
            Event::Delete { id, pos, .. } => println!("@{pos} DELETE {id}"),
            Event::Resumed { from } => eprintln!("resumed after {from}"),
            Event::Message { .. } => {}
        }
    }
    Ok(())
}
