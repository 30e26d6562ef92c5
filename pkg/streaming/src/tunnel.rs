//! Port-forward for kubectl 1.31+: SPDY tunnelled in WebSocket binary messages
//! (`SPDY/3.1+portforward.k8s.io`). Each message carries raw bytes of the client's SPDY
//! session; they are written to the runtime's SPDY connection as they are, and its bytes
//! go back as binary messages. No SPDY is parsed here: kubectl and containerd speak it
//! end to end.

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::Error;

/// Bytes read from the runtime per message.
const CHUNK: usize = 32 * 1024;

/// Relays until either side closes.
///
/// # Errors
/// The first I/O or WebSocket error of either direction.
pub async fn run<S, B>(ws: WebSocketStream<S>, backend: B) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut sink, mut messages) = ws.split();
    let (mut from_runtime, mut to_runtime) = tokio::io::split(backend);
    let up = async {
        while let Some(msg) = messages.next().await {
            match msg? {
                Message::Binary(b) => to_runtime.write_all(&b).await?,
                Message::Close(_) => break,
                // Pings are answered by the WebSocket layer; text is not part of the protocol.
                _ => {}
            }
        }
        to_runtime.shutdown().await?;
        Ok::<_, Error>(())
    };
    let down = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = from_runtime.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            sink.send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
                .await?;
        }
        sink.send(Message::Close(Some(CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        })))
        .await?;
        Ok::<_, Error>(())
    };
    tokio::select! {
        r = up => r,
        r = down => r,
    }
}
