//! Remote command protocol v5 (`v5.channel.k8s.io`, kubectl 1.30+) over WebSocket,
//! translated to SPDY v4 (`v4.channel.k8s.io`) towards the runtime.
//!
//! WebSocket side: every binary message starts with a channel byte — 0 stdin, 1 stdout,
//! 2 stderr, 3 error (a JSON `Status` when the command ends), 4 resize (JSON terminal
//! size) — and v5 adds 255, CLOSE: `[255, n]` half-closes channel `n` (stdin, so `cat` and
//! `tar` in `kubectl cp` see end of input). SPDY side: one stream per channel, opened by us
//! with a `streamType` header as client-go opens them; CLOSE becomes a `FIN` on stdin.
//!
//! The two directions run concurrently and independently, so a client that stops reading
//! cannot stall its own input nor the reverse. The session ends when the runtime closes the
//! connection (after writing the status on the error stream): the WebSocket is then closed
//! normally, which kubectl takes as the end of every stream.

use std::collections::HashMap;

use bytes::{BufMut, Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::spdy::{Frame, Framer, FLAG_FIN};
use crate::{Error, StreamOptions};

/// WebSocket channel of standard input.
pub const STDIN: u8 = 0;
/// WebSocket channel of standard output.
pub const STDOUT: u8 = 1;
/// WebSocket channel of standard error.
pub const STDERR: u8 = 2;
/// WebSocket channel of the final status.
pub const ERROR: u8 = 3;
/// WebSocket channel of terminal resizes.
pub const RESIZE: u8 = 4;
/// v5's CLOSE signal: `[CLOSE, channel]`.
pub const CLOSE: u8 = 255;

/// Frames queued towards the runtime. Small: each may hold a WebSocket message of stdin,
/// and a full queue is backpressure on the client.
const TO_RUNTIME: usize = 16;
/// Frames queued from the runtime towards the client.
const FROM_RUNTIME: usize = 16;
/// Bytes read from the runtime at once.
const READ_CHUNK: usize = 64 * 1024;

/// The SPDY streams to open, in client-go's order: `(channel, streamType)`.
pub fn streams(options: StreamOptions) -> Vec<(u8, &'static str)> {
    let mut out = vec![(ERROR, "error")];
    if options.stdin {
        out.push((STDIN, "stdin"));
    }
    if options.stdout {
        out.push((STDOUT, "stdout"));
    }
    if options.stderr && !options.tty {
        out.push((STDERR, "stderr"));
    }
    if options.tty {
        out.push((RESIZE, "resize"));
    }
    out
}

/// What one WebSocket message from the client asks of the runtime.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    /// Data for a channel.
    Data(u8, Bytes),
    /// CLOSE of a channel.
    Close(u8),
    /// Nothing (empty or unknown message).
    Nothing,
}

/// Parses one binary message of the client.
pub fn input(msg: &Bytes) -> Input {
    match msg.first() {
        None => Input::Nothing,
        Some(&CLOSE) => msg.get(1).map_or(Input::Nothing, |&c| Input::Close(c)),
        Some(&c) => Input::Data(c, msg.slice(1..)),
    }
}

/// Runs one session until the runtime ends it or the client goes away.
///
/// # Errors
/// The runtime refusing a stream, a broken SPDY connection, or a WebSocket error.
pub async fn run<S, B>(
    ws: WebSocketStream<S>,
    backend: B,
    options: StreamOptions,
) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sink, mut messages) = ws.split();
    let (mut rd, mut wr) = tokio::io::split(backend);
    let (to_runtime, mut outbox) = mpsc::channel::<Frame>(TO_RUNTIME);
    let (inbox_tx, mut inbox) = mpsc::channel::<Frame>(FROM_RUNTIME);
    let (ready_tx, mut ready) = watch::channel(false);

    let plan = streams(options);
    let ids: HashMap<u8, u32> = plan
        .iter()
        .enumerate()
        .map(|(i, (ch, _))| (*ch, 2 * i as u32 + 1))
        .collect();
    let channels: HashMap<u32, u8> = ids.iter().map(|(c, i)| (*i, *c)).collect();

    let writer = async move {
        let mut framer = Framer::new();
        let mut buf = BytesMut::new();
        while let Some(frame) = outbox.recv().await {
            buf.clear();
            framer.encode(&frame, &mut buf)?;
            wr.write_all(&buf).await?;
        }
        wr.shutdown().await?;
        Ok::<_, Error>(())
    };
    let pings = to_runtime.clone();
    let reader = async move {
        let mut framer = Framer::new();
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        loop {
            while let Some(frame) = framer.decode(&mut buf)? {
                match frame {
                    // Server pings have even ids; answer them as spdystream does.
                    Frame::Ping(id) => {
                        let _ = pings.send(Frame::Ping(id)).await;
                    }
                    Frame::Settings | Frame::WindowUpdate { .. } => {}
                    other => {
                        if inbox_tx.send(other).await.is_err() {
                            return Ok(());
                        }
                    }
                }
            }
            buf.reserve(READ_CHUNK);
            if rd.read_buf(&mut buf).await? == 0 {
                return Ok::<_, Error>(());
            }
        }
    };
    let opener = to_runtime.clone();
    let open_ids = ids.clone();
    let down = async move {
        let ids = open_ids;
        for (ch, kind) in &plan {
            let frame = Frame::SynStream {
                stream: ids[ch],
                flags: 0,
                headers: vec![("streamtype".into(), (*kind).into())],
            };
            if opener.send(frame).await.is_err() {
                return Err(Error::Spdy("runtime connection closed".into()));
            }
        }
        drop(opener);
        let mut waiting = plan.len();
        let mut early = Vec::new();
        while waiting > 0 {
            match inbox.recv().await {
                Some(Frame::SynReply { .. }) => waiting -= 1,
                Some(Frame::RstStream { stream, status }) => {
                    return Err(Error::Spdy(format!(
                        "runtime refused stream {stream} (status {status})"
                    )))
                }
                Some(f @ Frame::Data { .. }) => early.push(f),
                Some(_) => {}
                None => return Err(Error::Spdy("runtime closed before replying".into())),
            }
        }
        let _ = ready_tx.send(true);
        // As upstream's server: an empty message on the lowest writable channel tells the
        // client the session is established.
        let first = if options.stdout {
            STDOUT
        } else if options.stderr && !options.tty {
            STDERR
        } else {
            ERROR
        };
        sink.send(Message::Binary(Bytes::from(vec![first]))).await?;
        let mut pending = early.into_iter();
        loop {
            let frame = match pending.next() {
                Some(f) => f,
                None => match inbox.recv().await {
                    Some(f) => f,
                    None => break,
                },
            };
            if let Frame::Data { stream, data, .. } = frame {
                let Some(&ch) = channels.get(&stream) else {
                    continue;
                };
                if data.is_empty() {
                    continue;
                }
                let mut msg = BytesMut::with_capacity(data.len() + 1);
                msg.put_u8(ch);
                msg.put_slice(&data);
                sink.send(Message::Binary(msg.freeze())).await?;
            }
        }
        sink.send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await?;
        Ok::<_, Error>(())
    };
    let up = async move {
        if ready.wait_for(|r| *r).await.is_err() {
            return Ok(());
        }
        while let Some(msg) = messages.next().await {
            let bytes = match msg? {
                Message::Binary(b) => b,
                Message::Close(_) => break,
                _ => continue,
            };
            let frame = match input(&bytes) {
                Input::Data(ch @ (STDIN | RESIZE), data) => match ids.get(&ch) {
                    Some(&stream) if !data.is_empty() => Frame::Data {
                        stream,
                        flags: 0,
                        data,
                    },
                    _ => continue,
                },
                Input::Close(STDIN) => match ids.get(&STDIN) {
                    Some(&stream) => Frame::Data {
                        stream,
                        flags: FLAG_FIN,
                        data: Bytes::new(),
                    },
                    None => continue,
                },
                _ => continue,
            };
            if to_runtime.send(frame).await.is_err() {
                break;
            }
        }
        Ok::<_, Error>(())
    };
    let io = async {
        let (w, r) = tokio::join!(writer, reader);
        w.and(r)
    };
    tokio::pin!(io);
    tokio::select! {
        r = down => r,
        r = up => r,
        // Only an I/O error ends the session here; a clean end of both is seen by `down`.
        Err(e) = &mut io => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_follow_the_options() {
        let all = StreamOptions {
            stdin: true,
            stdout: true,
            stderr: true,
            tty: false,
        };
        assert_eq!(
            streams(all),
            vec![
                (ERROR, "error"),
                (STDIN, "stdin"),
                (STDOUT, "stdout"),
                (STDERR, "stderr")
            ]
        );
        let tty = StreamOptions { tty: true, ..all };
        assert_eq!(
            streams(tty),
            vec![
                (ERROR, "error"),
                (STDIN, "stdin"),
                (STDOUT, "stdout"),
                (RESIZE, "resize")
            ]
        );
    }

    #[test]
    fn parses_client_messages() {
        assert_eq!(
            input(&Bytes::from_static(b"\x00abc")),
            Input::Data(STDIN, Bytes::from_static(b"abc"))
        );
        assert_eq!(input(&Bytes::from_static(b"\xff\x00")), Input::Close(STDIN));
        assert_eq!(input(&Bytes::from_static(b"")), Input::Nothing);
        assert_eq!(input(&Bytes::from_static(b"\xff")), Input::Nothing);
    }
    /// A runtime stand-in speaking SPDY with this crate's framer: accepts the streams,
    /// echoes stdin upper-cased on stdout once stdin ends, then writes a status and hangs up.
    async fn fake_runtime(io: tokio::io::DuplexStream) -> Vec<String> {
        let (mut rd, mut wr) = tokio::io::split(io);
        let (mut dec, mut enc) = (Framer::new(), Framer::new());
        let mut buf = BytesMut::new();
        let mut kinds = HashMap::new();
        let mut input = Vec::new();
        let mut out = BytesMut::new();
        'read: loop {
            while let Some(frame) = dec.decode(&mut buf).unwrap() {
                match frame {
                    Frame::SynStream {
                        stream, headers, ..
                    } => {
                        let kind = crate::spdy::header(&headers, "streamtype")
                            .unwrap()
                            .to_string();
                        kinds.insert(kind, stream);
                        let reply = Frame::SynReply {
                            stream,
                            flags: 0,
                            headers: vec![],
                        };
                        enc.encode(&reply, &mut out).unwrap();
                    }
                    Frame::Data {
                        stream,
                        flags,
                        data,
                    } if Some(&stream) == kinds.get("stdin") => {
                        input.extend_from_slice(&data);
                        if flags & FLAG_FIN != 0 {
                            break 'read;
                        }
                    }
                    _ => {}
                }
            }
            wr.write_all(&out).await.unwrap();
            out.clear();
            if rd.read_buf(&mut buf).await.unwrap() == 0 {
                break;
            }
        }
        let upper = Bytes::from(input.to_ascii_uppercase());
        for (kind, data) in [
            ("stdout", upper),
            ("error", Bytes::from_static(b"{\"status\":\"Success\"}")),
        ] {
            let frame = Frame::Data {
                stream: kinds[kind],
                flags: FLAG_FIN,
                data,
            };
            enc.encode(&frame, &mut out).unwrap();
        }
        wr.write_all(&out).await.unwrap();
        wr.shutdown().await.unwrap();
        let mut names: Vec<String> = kinds.into_keys().collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn translates_a_v5_session_with_stdin_close() {
        use tokio_tungstenite::tungstenite::protocol::Role;
        let (ws_server, ws_client) = tokio::io::duplex(1 << 16);
        let (spdy_ours, spdy_theirs) = tokio::io::duplex(1 << 16);
        let runtime = tokio::spawn(fake_runtime(spdy_theirs));
        let options = StreamOptions {
            stdin: true,
            stdout: true,
            stderr: true,
            tty: false,
        };
        let server = tokio::spawn(async move {
            let ws = WebSocketStream::from_raw_socket(ws_server, Role::Server, None).await;
            run(ws, spdy_ours, options).await
        });
        let mut client = WebSocketStream::from_raw_socket(ws_client, Role::Client, None).await;
        // Larger than one frame of either side.
        let payload: Vec<u8> = b"hello ".iter().copied().cycle().take(200_000).collect();
        for chunk in payload.chunks(30_000) {
            let mut msg = vec![STDIN];
            msg.extend_from_slice(chunk);
            client.send(Message::Binary(msg.into())).await.unwrap();
        }
        client
            .send(Message::Binary(vec![CLOSE, STDIN].into()))
            .await
            .unwrap();
        let mut stdout = Vec::new();
        let mut status = Vec::new();
        let mut first = None;
        while let Some(msg) = client.next().await {
            match msg.unwrap() {
                Message::Binary(b) => {
                    first.get_or_insert(b.clone());
                    match b[0] {
                        STDOUT => stdout.extend_from_slice(&b[1..]),
                        ERROR => status.extend_from_slice(&b[1..]),
                        other => panic!("unexpected channel {other}"),
                    }
                }
                Message::Close(f) => {
                    assert_eq!(f.unwrap().code, CloseCode::Normal);
                    break;
                }
                _ => {}
            }
        }
        assert_eq!(
            first.as_deref(),
            Some(&[STDOUT][..]),
            "the empty hello on stdout"
        );
        assert_eq!(stdout, payload.to_ascii_uppercase());
        assert_eq!(status, b"{\"status\":\"Success\"}");
        assert_eq!(
            runtime.await.unwrap(),
            ["error", "stderr", "stdin", "stdout"]
        );
        server.await.unwrap().unwrap();
    }
}
