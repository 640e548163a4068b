//! Fuzz harness for the handshake and frame path: arbitrary bytes as a client's side of
//! a connection, served by a real server (`Server::serve_stream`: Tether's own accept
//! path, HTTP parsing, routing, the WebSocket upgrade, frame limits, the session and
//! a dialect codec over a real engine and store) over an in-memory stream. Nothing
//! may panic, and every connection must end once the client's side has.
//!
//! Input layout: the first byte picks a mode and a route.
//! - mode 0: the bytes are the whole connection (HTTP request parsing, routing).
//! - mode 1: a valid upgrade to the route, then the bytes raw (frame parsing).
//! - mode 2: a valid upgrade, then frames built from the bytes so most of them are
//!   well-formed and reach the session and codec: per frame a header byte (FIN and
//!   opcode; bits 4-6 all set add a reserved bit), a length byte, then the payload,
//!   masked with a zero key as a client must.
//!
//! Shared with the normal test suite (`crates/tether/tests/fuzz_regressions.rs`).

use std::cell::RefCell;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Inputs served by one server before it is replaced by a fresh one: the store and the
/// sessions remembered for resume grow with every input, and a fuzzing run of hours
/// must not read that growth as a leak.
const INPUTS_PER_SERVER: u32 = 5_000;

struct Fixture {
    // Dropped in this order: the server's tasks die with the runtime, then the store's
    // directory goes.
    runtime: tokio::runtime::Runtime,
    server: tether::Server,
    routes: Vec<String>,
    served: u32,
    _dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        // tmpfs where there is one: the store fsyncs every commit.
        let dir = if std::path::Path::new("/dev/shm").is_dir() {
            tempfile::tempdir_in("/dev/shm")
        } else {
            tempfile::tempdir()
        }
        .expect("a temporary directory");
        let mut config =
            tether::Config::new("127.0.0.1:0".parse().unwrap(), dir.path().join("data"));
        // Small limits so the fuzzer can reach them.
        config.max_message_bytes = 512;
        config.max_frame_bytes = 2048;
        config.outbox_max_bytes = 64 * 1024;
        config.max_connections_per_ip = 0;
        let server = runtime
            .block_on(tether::start(config))
            .expect("the server starts");
        let mut routes: Vec<String> = tether_dialects::registry()
            .iter()
            .map(|d| d.path().replace("{channel}", "c"))
            .collect();
        routes.push("/api/fuzz".into());
        Fixture {
            runtime,
            server,
            routes,
            served: 0,
            _dir: dir,
        }
    }
}

thread_local! {
    static FIXTURE: RefCell<Option<Fixture>> = const { RefCell::new(None) };
}

pub fn run(data: &[u8]) {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    FIXTURE.with(|cell| {
        let mut cell = cell.borrow_mut();
        if cell.as_ref().is_none_or(|f| f.served >= INPUTS_PER_SERVER) {
            *cell = None; // the old server stops before the new one starts
            *cell = Some(Fixture::new());
        }
        let f = cell.as_mut().expect("just made");
        f.served += 1;
        serve(f, pick, rest);
    });
}

fn serve(f: &Fixture, pick: u8, rest: &[u8]) {
    let route = &f.routes[usize::from(pick >> 2) % f.routes.len()];
    let mut bytes = Vec::new();
    match pick & 3 {
        0 => bytes.extend_from_slice(rest),
        1 => {
            bytes.extend_from_slice(upgrade(route).as_bytes());
            bytes.extend_from_slice(rest);
        }
        _ => {
            bytes.extend_from_slice(upgrade(route).as_bytes());
            frames(rest, &mut bytes);
        }
    }
    f.runtime.block_on(async {
        let (mut client, server_side) = tokio::io::duplex(64 * 1024);
        let peer: SocketAddr = "127.0.0.9:40000".parse().unwrap();
        let served = f.server.serve_stream(server_side, peer);
        // Write and read at once: the server may answer before it has read all.
        let (mut read, mut write) = tokio::io::split(&mut client);
        let writing = async {
            let _ = write.write_all(&bytes).await;
            let _ = write.shutdown().await;
        };
        let reading = async {
            let mut sink = Vec::new();
            let _ = read.read_to_end(&mut sink).await;
        };
        tokio::join!(writing, reading);
        // A panic in the connection's task surfaces here.
        if let Err(e) = served.await {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    });
}

fn upgrade(route: &str) -> String {
    format!(
        "GET {route} HTTP/1.1\r\nHost: fuzz\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

fn frames(mut input: &[u8], out: &mut Vec<u8>) {
    while let [header, len, rest @ ..] = input {
        let len = usize::from(*len).min(rest.len());
        let (payload, tail) = rest.split_at(len);
        // FIN and the opcode as given; a reserved bit only when all three of bits
        // 4-6 are set, so most frames stay valid.
        let rsv = if header & 0x70 == 0x70 { 0x40 } else { 0 };
        out.push((header & 0x8F) | rsv);
        // Masked (as a client must), with a zero key so the payload stays readable.
        match len {
            0..=125 => out.push(0x80 | len as u8),
            _ => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(len as u16).to_be_bytes());
            }
        }
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(payload);
        input = tail;
    }
}
