//! A server-side WebSocket that holds no buffer while its connection is idle.
//!
//! Idle connections are most of a real-time server's connections, so what one costs
//! while nothing happens decides how many a machine holds. The WebSocket protocol
//! itself (framing, masking, fragmented messages, UTF-8 checks, control frames, limits,
//! the close handshake) is tungstenite's `WebSocketContext`; this file only feeds it:
//!
//! - Reads go into a buffer on the stack of the poll that reads them, and the protocol
//!   consumes them from there. Only bytes it has not consumed when a message is
//!   complete (the start of the next message) are kept, in a buffer that is freed as
//!   soon as they are. A stream wrapper keeping its own read buffer would hold it for
//!   the life of the connection; tungstenite's own keeps whatever it last needed.
//! - Outgoing frames are encoded into one buffer that exists only while the socket has
//!   not taken all of it; everything (data frames, and the pongs and close replies the
//!   protocol queues itself) goes through it in order, so frames never interleave.
//!
//! - The protocol's state itself (about 400 bytes with the buffer it reads frames
//!   into) exists only while a message is in progress: when the socket has nothing
//!   more to read and the client's byte stream stands between whole messages, the
//!   protocol holds nothing but its settings, so it is dropped, and made again from
//!   the limits when the next byte arrives. [`Frames`] follows the frame headers in
//!   the stream beside the protocol to know where it stands.
//!
//! One task drives a connection: [`WebSocket::poll_next`] makes write progress and
//! reads the next message, and there is no separate writer task.

use bytes::Bytes;
use std::io::{self, Cursor, Read, Write};
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::{CloseFrame, Role, WebSocketConfig, WebSocketContext};
use tungstenite::{Error, Message};

/// How much one read takes from the socket at most. It lives on the stack only for
/// the duration of the read, uninitialized: zeroing 16 KiB per read showed in profiles.
const READ_CHUNK: usize = 16 * 1024;

/// A WebSocket over `S`, after the HTTP upgrade.
pub struct WebSocket<S> {
    io: S,
    /// `None` while the connection is between messages with nothing to read (see the
    /// module docs).
    protocol: Option<Box<WebSocketContext>>,
    max_message_bytes: usize,
    frames: Frames,
    /// Bytes read but not yet consumed by the protocol: `None` unless one read brought
    /// the start of a second message (boxed, being rare).
    unread: Option<Box<Unread>>,
    /// Encoded frames the socket has not taken yet; empty (unallocated) when it has
    /// taken everything.
    unwritten: Vec<u8>,
    unwritten_from: usize,
}

/// Read bytes the protocol has not consumed, from `from` on.
struct Unread {
    bytes: Vec<u8>,
    from: usize,
}

impl Unread {
    /// `bytes`, kept unless there are none.
    fn keep(bytes: &[u8]) -> Option<Box<Unread>> {
        (!bytes.is_empty()).then(|| {
            Box::new(Unread {
                bytes: bytes.to_vec(),
                from: 0,
            })
        })
    }
}

/// The protocol's view of the socket: it reads from the bytes at hand (and would
/// block past them) and writes into the outgoing buffer (never blocking).
struct Feed<'a> {
    input: &'a [u8],
    consumed: usize,
    /// The socket said end-of-stream: reading past `input` returns 0, not WouldBlock.
    eof: bool,
    output: &'a mut Vec<u8>,
}

impl<'a> Feed<'a> {
    /// For the protocol's writes (and its view of a socket with nothing to read).
    fn nothing(output: &'a mut Vec<u8>) -> Self {
        Feed {
            input: &[],
            consumed: 0,
            eof: false,
            output,
        }
    }
}

impl Read for Feed<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let rest = &self.input[self.consumed..];
        if rest.is_empty() {
            return if self.eof {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = rest.len().min(buf.len());
        buf[..n].copy_from_slice(&rest[..n]);
        self.consumed += n;
        Ok(n)
    }
}

impl Write for Feed<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Where the client's byte stream stands, read as frame headers and payload lengths
/// only: whether everything read so far is whole messages. The protocol still parses
/// and checks every frame; this only tells when its state may be dropped.
#[derive(Debug, Default)]
struct Frames {
    /// The bytes of a frame header split across reads, until it is whole.
    header: [u8; MAX_HEADER],
    /// How many of `header` are filled, or [`BROKEN`].
    header_len: u8,
    /// A fragmented data message has begun and not ended.
    in_message: bool,
    /// Payload bytes of the current frame not read yet.
    payload_left: u64,
}

/// `header_len` once the bytes do not parse as frames: the protocol will close the
/// connection, and until then it is never dropped.
const BROKEN: u8 = u8::MAX;

/// The longest frame header: two bytes, an eight-byte length, a four-byte mask.
const MAX_HEADER: usize = 14;

impl Frames {
    /// Follows `bytes`, the next ones read from the client.
    fn advance(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && self.header_len != BROKEN {
            if self.payload_left > 0 {
                let n = bytes
                    .len()
                    .min(usize::try_from(self.payload_left).unwrap_or(usize::MAX));
                self.payload_left -= n as u64;
                bytes = &bytes[n..];
                continue;
            }
            let had = usize::from(self.header_len);
            let take = (MAX_HEADER - had).min(bytes.len());
            self.header[had..had + take].copy_from_slice(&bytes[..take]);
            let mut cursor = Cursor::new(&self.header[..had + take]);
            match FrameHeader::parse(&mut cursor) {
                Ok(Some((header, payload))) => {
                    // The header ends within what this call added: it was incomplete
                    // without it.
                    let used = cursor.position() as usize - had;
                    bytes = &bytes[used..];
                    self.header_len = 0;
                    self.payload_left = payload;
                    match header.opcode {
                        OpCode::Data(Data::Continue) => {
                            if header.is_final {
                                self.in_message = false;
                            }
                        }
                        OpCode::Data(_) => self.in_message = !header.is_final,
                        OpCode::Control(_) => {}
                    }
                }
                Ok(None) => {
                    self.header_len = (had + take) as u8;
                    bytes = &[];
                }
                Err(_) => self.header_len = BROKEN,
            }
        }
    }

    /// Everything read so far is whole messages.
    fn between_messages(&self) -> bool {
        self.header_len == 0 && self.payload_left == 0 && !self.in_message
    }
}

/// What the protocol engine is configured with: frame and message limits, and a read
/// buffer of its own that starts empty (see the module docs).
fn config(max_message_bytes: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(0)
        .write_buffer_size(0)
        .max_message_size(Some(max_message_bytes))
        .max_frame_size(Some(max_message_bytes))
}

/// The protocol's state for a connection that had none, or was idle.
fn new_protocol(max_message_bytes: usize) -> Box<WebSocketContext> {
    Box::new(WebSocketContext::new(
        Role::Server,
        Some(config(max_message_bytes)),
    ))
}

impl<S: AsyncRead + AsyncWrite + Unpin> WebSocket<S> {
    /// Wraps a stream whose HTTP upgrade is done; `read_ahead` is what the HTTP layer
    /// had already read past the request (a client may send its first frame at once).
    /// Frames and messages past `max_message_bytes` end the connection (1009).
    pub fn new(io: S, read_ahead: Bytes, max_message_bytes: usize) -> Self {
        let mut frames = Frames::default();
        frames.advance(&read_ahead);
        WebSocket {
            io,
            protocol: None,
            max_message_bytes,
            frames,
            unread: Unread::keep(&read_ahead),
            unwritten: Vec::new(),
            unwritten_from: 0,
        }
    }

    /// Bytes queued for the client that the socket has not taken yet.
    pub fn unwritten(&self) -> usize {
        self.unwritten.len() - self.unwritten_from
    }

    /// Writes what it can, then returns the next message from the client. `None` once
    /// the connection has ended (the close handshake is complete, or the client went
    /// away). With `read` false it only writes, and stays pending.
    pub fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        read: bool,
    ) -> Poll<Option<Result<Message, Error>>> {
        if let Poll::Ready(Err(e)) = self.poll_write(cx) {
            return Poll::Ready(Some(Err(Error::Io(e))));
        }
        if !read {
            return Poll::Pending;
        }
        loop {
            // Even with nothing unread here the protocol may hold whole frames: it
            // reads ahead in small chunks, so one read can take the next frame too.
            // Without its state there is nothing held.
            if self.protocol.is_some() || self.unread.is_some() {
                let protocol = self
                    .protocol
                    .get_or_insert_with(|| new_protocol(self.max_message_bytes));
                let input = self.unread.as_ref().map_or(&[][..], |u| &u.bytes[u.from..]);
                let (consumed, message) = feed(protocol, input, false, &mut self.unwritten);
                if let Some(unread) = &mut self.unread {
                    unread.from += consumed;
                    if unread.from == unread.bytes.len() {
                        self.unread = None;
                    }
                }
                if let Some(message) = message {
                    return Poll::Ready(message);
                }
                if !protocol.can_read() {
                    // The close handshake is over (or the client's close is being
                    // answered): the protocol queues its reply and ends here, so the
                    // server closes the TCP connection first, as RFC 6455 prefers,
                    // rather than waiting on a socket the client will not write to.
                    let mut feed = Feed::nothing(&mut self.unwritten);
                    let _ = protocol.read(&mut feed);
                    return Poll::Ready(None);
                }
            }
            let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut buf = ReadBuf::uninit(&mut chunk);
            match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                Poll::Pending => {
                    self.drop_protocol_if_idle();
                    return Poll::Pending;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Some(Err(Error::Io(e)))),
                Poll::Ready(Ok(())) => {}
            }
            let input = buf.filled();
            self.frames.advance(input);
            let protocol = self
                .protocol
                .get_or_insert_with(|| new_protocol(self.max_message_bytes));
            let (consumed, message) = feed(protocol, input, input.is_empty(), &mut self.unwritten);
            if consumed < input.len() {
                self.unread = Unread::keep(&input[consumed..]);
            }
            if let Some(message) = message {
                return Poll::Ready(message);
            }
        }
    }

    /// Drops the protocol's state when it holds nothing but its settings: the protocol
    /// has taken every byte read (and asked for more), those bytes are whole messages,
    /// and no close was sent or received. Its replies (pongs) were already queued
    /// here, by the read that asked for more.
    fn drop_protocol_if_idle(&mut self) {
        let idle = self.unread.is_none()
            && self.frames.between_messages()
            && self.protocol.as_ref().is_some_and(|p| p.can_write());
        if idle {
            self.protocol = None;
        }
    }

    /// Queues a text message. Refused once a close frame was sent or received.
    pub fn send_text(&mut self, text: &str) -> Result<(), Error> {
        if self.protocol.as_ref().is_some_and(|p| !p.can_write()) {
            return Err(Error::AlreadyClosed);
        }
        let header = FrameHeader {
            opcode: OpCode::Data(Data::Text),
            ..FrameHeader::default()
        };
        header.format(text.len() as u64, &mut self.unwritten)?;
        self.unwritten.extend_from_slice(text.as_bytes());
        Ok(())
    }

    /// Queues a message of any kind through the protocol (pings, echoes).
    pub fn send(&mut self, message: Message) -> Result<(), Error> {
        let protocol = self
            .protocol
            .get_or_insert_with(|| new_protocol(self.max_message_bytes));
        let mut feed = Feed::nothing(&mut self.unwritten);
        protocol.write(&mut feed, message)?;
        protocol.flush(&mut feed)
    }

    /// Queues the close frame (once; later calls and a close after the client's do
    /// nothing). The connection ends when the client answers or goes.
    pub fn close(&mut self, code: u16, reason: &str) {
        let protocol = self
            .protocol
            .get_or_insert_with(|| new_protocol(self.max_message_bytes));
        let mut feed = Feed::nothing(&mut self.unwritten);
        let frame = CloseFrame {
            code: code.into(),
            reason: reason.to_owned().into(),
        };
        // An error here means a close was already sent or answered: nothing to add.
        let _ = protocol.close(&mut feed, Some(frame));
    }

    /// Moves the protocol's own queued frames (a close reply) into the outgoing buffer.
    pub fn flush_protocol(&mut self) {
        if let Some(protocol) = &mut self.protocol {
            let mut feed = Feed::nothing(&mut self.unwritten);
            let _ = protocol.flush(&mut feed);
        }
    }

    /// Writes everything queued, freeing the buffer once the socket has taken it all.
    pub fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.unwritten_from < self.unwritten.len() {
            let n = ready!(
                Pin::new(&mut self.io).poll_write(cx, &self.unwritten[self.unwritten_from..])
            )?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.unwritten_from += n;
        }
        if !self.unwritten.is_empty() {
            self.unwritten = Vec::new();
            self.unwritten_from = 0;
        }
        Pin::new(&mut self.io).poll_flush(cx)
    }

    /// Reads and drops whatever the client has already sent, without waiting for
    /// more: before closing a connection the protocol can no longer follow.
    pub async fn discard_readable(&mut self) {
        self.unread = None;
        std::future::poll_fn(|cx| loop {
            let mut chunk = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
            let mut buf = ReadBuf::uninit(&mut chunk);
            match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
                Poll::Ready(Ok(())) if !buf.filled().is_empty() => continue,
                _ => return Poll::Ready(()),
            }
        })
        .await
    }

    /// Writes everything queued.
    pub async fn flush(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_write(cx)).await
    }

    /// Waits for the next message (see [`WebSocket::poll_next`]).
    pub async fn next(&mut self) -> Option<Result<Message, Error>> {
        std::future::poll_fn(|cx| self.poll_next(cx, true)).await
    }
}

/// Lets `protocol` read from `input` (then the end of the stream, if `eof`), its own
/// frames (pongs, close replies) going to `output`. Returns how much it consumed, and
/// what `poll_next` answers, or `None` when it needs more bytes.
fn feed(
    protocol: &mut WebSocketContext,
    input: &[u8],
    eof: bool,
    output: &mut Vec<u8>,
) -> (usize, Option<Option<Result<Message, Error>>>) {
    let mut feed = Feed {
        input,
        consumed: 0,
        eof,
        output,
    };
    let result = protocol.read(&mut feed);
    let message = match result {
        Err(Error::Io(e)) if e.kind() == io::ErrorKind::WouldBlock => None,
        other => Some(finish(other)),
    };
    (feed.consumed, message)
}

/// The end of the stream, however it came, is `None`; anything else is passed on.
fn finish(result: Result<Message, Error>) -> Option<Result<Message, Error>> {
    match result {
        Ok(message) => Some(Ok(message)),
        Err(Error::ConnectionClosed | Error::AlreadyClosed) => None,
        Err(Error::Protocol(tungstenite::error::ProtocolError::ResetWithoutClosingHandshake)) => {
            None
        }
        Err(e) => Some(Err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::FutureExt;
    use tokio::io::{AsyncWriteExt, DuplexStream};
    use tungstenite::protocol::frame::Frame;

    /// The bytes a client sends for `messages`, framed and masked by the protocol
    /// library in the client role.
    fn client_bytes(messages: Vec<Message>) -> Vec<u8> {
        let mut client = WebSocketContext::new(Role::Client, None);
        let mut out = Vec::new();
        for message in messages {
            let mut feed = Feed::nothing(&mut out);
            client.write(&mut feed, message).unwrap();
            client.flush(&mut feed).unwrap();
        }
        out
    }

    fn fragment(opcode: Data, text: &str, last: bool) -> Message {
        Message::Frame(Frame::message(
            text.as_bytes().to_vec(),
            OpCode::Data(opcode),
            last,
        ))
    }

    /// What `poll_next` has now, without waiting.
    fn ready(ws: &mut WebSocket<DuplexStream>) -> Option<Option<Result<Message, Error>>> {
        std::future::poll_fn(|cx| ws.poll_next(cx, true)).now_or_never()
    }

    fn pair() -> (WebSocket<DuplexStream>, DuplexStream) {
        let (server, client) = tokio::io::duplex(64 * 1024);
        (WebSocket::new(server, Bytes::new(), 1 << 20), client)
    }

    #[tokio::test]
    async fn the_protocol_state_exists_only_while_a_message_is_in_progress() {
        let (mut ws, mut client) = pair();
        assert!(ready(&mut ws).is_none());
        assert!(ws.protocol.is_none(), "a new connection holds none");

        // A header split across reads: the protocol has part of a frame.
        let bytes = client_bytes(vec![Message::text("hello")]);
        client.write_all(&bytes[..1]).await.unwrap();
        assert!(ready(&mut ws).is_none());
        assert!(ws.protocol.is_some(), "half a header is state");
        client.write_all(&bytes[1..]).await.unwrap();
        match ready(&mut ws) {
            Some(Some(Ok(Message::Text(text)))) => assert_eq!(text.as_str(), "hello"),
            other => panic!("expected the text, got {other:?}"),
        }
        assert!(ready(&mut ws).is_none());
        assert!(
            ws.protocol.is_none(),
            "between messages it is dropped again"
        );
    }

    #[tokio::test]
    async fn a_fragmented_message_keeps_it_across_control_frames() {
        let (mut ws, mut client) = pair();
        let first = client_bytes(vec![fragment(Data::Text, "ab", false)]);
        client.write_all(&first).await.unwrap();
        assert!(ready(&mut ws).is_none());
        assert!(ws.protocol.is_some());

        client
            .write_all(&client_bytes(vec![Message::Ping(Bytes::from_static(b"p"))]))
            .await
            .unwrap();
        assert!(matches!(ready(&mut ws), Some(Some(Ok(Message::Ping(_))))));
        assert!(ready(&mut ws).is_none());
        assert!(ws.protocol.is_some(), "the message is still open");
        assert!(ws.unwritten() > 0, "the pong was queued");

        let last = client_bytes(vec![fragment(Data::Continue, "cd", true)]);
        client.write_all(&last).await.unwrap();
        match ready(&mut ws) {
            Some(Some(Ok(Message::Text(text)))) => assert_eq!(text.as_str(), "abcd"),
            other => panic!("expected the whole message, got {other:?}"),
        }
        assert!(ready(&mut ws).is_none());
        assert!(ws.protocol.is_none());
    }

    #[tokio::test]
    async fn a_closing_connection_keeps_it() {
        let (mut ws, _client) = pair();
        ws.close(1000, "bye");
        assert!(ready(&mut ws).is_none());
        assert!(ws.protocol.is_some(), "the close handshake is state");
        assert!(ws.send_text("late").is_err());
    }

    #[test]
    fn frames_follow_headers_split_anywhere() {
        let bytes = client_bytes(vec![
            Message::text("x".repeat(300)),
            fragment(Data::Binary, "a", false),
            Message::Pong(Bytes::new()),
            fragment(Data::Continue, "b", true),
        ]);
        let mut frames = Frames::default();
        for byte in &bytes {
            frames.advance(std::slice::from_ref(byte));
        }
        assert!(frames.between_messages());
        let mut frames = Frames::default();
        frames.advance(&bytes[..bytes.len() - 1]);
        assert!(!frames.between_messages());
    }
}
