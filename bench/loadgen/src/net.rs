//! Opening client connections from chosen loopback source addresses.
//!
//! One source address offers about 28,000 ephemeral ports here, so tests with many
//! connections bind each socket to one of 127.0.0.2, 127.0.0.3, ... (all of 127/8 is
//! loopback) before connecting.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::WebSocketStream;

pub type Ws = WebSocketStream<TcpStream>;

/// Source addresses `127.0.0.<first>` .. for `count` addresses.
pub fn sources(first: u8, count: u8) -> Vec<Ipv4Addr> {
    (0..count.max(1))
        .map(|i| Ipv4Addr::new(127, 0, 0, first.saturating_add(i)))
        .collect()
}

/// Refuses anything but a loopback target: the harness must never load another host.
pub fn check_loopback(addr: SocketAddr) -> Result<(), String> {
    if addr.ip().is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "{addr} is not a loopback address; benchmarks only target this machine"
        ))
    }
}

/// Opens a WebSocket to `addr` + `path`, from `source` when given. Small buffers keep
/// the client's own memory low when it holds thousands of idle connections.
pub async fn connect(
    addr: SocketAddr,
    path: &str,
    source: Option<Ipv4Addr>,
    timeout: Duration,
) -> Result<Ws, String> {
    check_loopback(addr)?;
    let open = async {
        let socket = TcpSocket::new_v4().map_err(|e| format!("socket: {e}"))?;
        if let Some(ip) = source {
            socket
                .bind(SocketAddr::new(IpAddr::V4(ip), 0))
                .map_err(|e| format!("bind {ip}: {e}"))?;
        }
        let stream = socket
            .connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("nodelay: {e}"))?;
        let config = WebSocketConfig::default().read_buffer_size(4096);
        let url = format!("ws://{addr}{path}");
        let (ws, _) = tokio_tungstenite::client_async_with_config(url, stream, Some(config))
            .await
            .map_err(|e| format!("handshake {addr}{path}: {e}"))?;
        Ok(ws)
    };
    tokio::time::timeout(timeout, open)
        .await
        .map_err(|_| format!("connecting to {addr}{path} took over {timeout:?}"))?
}
