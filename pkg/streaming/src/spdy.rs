//! SPDY/3.1 framing as Kubernetes uses it (moby/spdystream on both ends): control and data
//! frames, and header blocks compressed with zlib and the protocol's preset dictionary, one
//! compression context per direction for the whole connection.
//!
//! Pure: frames are encoded into and parsed from byte buffers; [`Framer`] keeps the two zlib
//! contexts. No flow control: spdystream neither sends nor honours `WINDOW_UPDATE`, so a peer
//! of it must not wait for one either.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use crate::Error;

/// The protocol version in every control frame.
const VERSION: u16 = 3;

/// `FLAG_FIN` on data and stream frames: the sender is done with the stream.
pub const FLAG_FIN: u8 = 0x01;

/// Largest frame payload accepted (the 24-bit length's limit).
const MAX_LENGTH: usize = (1 << 24) - 1;

/// Largest decompressed header block accepted.
const MAX_HEADER_BLOCK: usize = 1 << 20;

/// Header names of the SPDY/3 dictionary, each preceded by its 32-bit length in it.
const DICTIONARY_NAMES: [&str; 65] = [
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// The dictionary's tail: status codes, common values, dates, MIME types.
const DICTIONARY_TAIL: &str = "100101201202205206300302303304305306307402405406407408409410\
411412413414415416417502504505203 Non-Authoritative Information204 No Content301 Moved \
Permanently400 Bad Request401 Unauthorized403 Forbidden404 Not Found500 Internal Server \
Error501 Not Implemented503 Service UnavailableJan Feb Mar Apr May Jun Jul Aug Sept Oct Nov \
Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMTchunked,text/html,image/png,image/jpg,\
image/gif,application/xml,application/xhtml+xml,text/plain,text/javascript,\
publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.";

/// The SPDY/3 header compression dictionary (1423 bytes, no trailing NUL).
pub fn dictionary() -> Vec<u8> {
    let mut d = Vec::with_capacity(1423);
    for name in DICTIONARY_NAMES {
        d.extend_from_slice(&(name.len() as u32).to_be_bytes());
        d.extend_from_slice(name.as_bytes());
    }
    d.extend_from_slice(DICTIONARY_TAIL.as_bytes());
    d
}

/// Name/value pairs of a header block; names lowercase, several values joined by NUL.
pub type Headers = Vec<(String, String)>;

/// One SPDY frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// Opens a stream.
    SynStream {
        /// Stream id (odd from clients).
        stream: u32,
        /// Flags (`FLAG_FIN`, unidirectional).
        flags: u8,
        /// Headers.
        headers: Headers,
    },
    /// Accepts a stream.
    SynReply {
        /// Stream id.
        stream: u32,
        /// Flags.
        flags: u8,
        /// Headers.
        headers: Headers,
    },
    /// Aborts a stream.
    RstStream {
        /// Stream id.
        stream: u32,
        /// Status code.
        status: u32,
    },
    /// Settings (ignored: no flow control).
    Settings,
    /// Round-trip check; answered with the same id.
    Ping(u32),
    /// The peer stops accepting streams.
    GoAway {
        /// Last stream the peer accepted.
        last_stream: u32,
        /// Status code.
        status: u32,
    },
    /// More headers for a stream.
    Headers {
        /// Stream id.
        stream: u32,
        /// Flags.
        flags: u8,
        /// Headers.
        headers: Headers,
    },
    /// Flow control (ignored, as spdystream does).
    WindowUpdate {
        /// Stream id.
        stream: u32,
        /// Window increment.
        delta: u32,
    },
    /// Stream data.
    Data {
        /// Stream id.
        stream: u32,
        /// `FLAG_FIN` when the sender is done.
        flags: u8,
        /// Payload.
        data: Bytes,
    },
}

/// Encodes and decodes frames of one connection (its two header compression contexts).
pub struct Framer {
    compress: Compress,
    decompress: Decompress,
    dictionary: Vec<u8>,
}

impl Default for Framer {
    fn default() -> Self {
        Framer::new()
    }
}

impl Framer {
    /// A framer for a new connection.
    pub fn new() -> Framer {
        let dictionary = dictionary();
        let mut compress = Compress::new(Compression::best(), true);
        // Cannot fail for a fresh zlib stream.
        let _ = compress.set_dictionary(&dictionary);
        Framer {
            compress,
            decompress: Decompress::new(true),
            dictionary,
        }
    }

    /// Appends `frame`'s wire form to `out`.
    ///
    /// # Errors
    /// [`Error::Spdy`] if header compression fails or the frame is too large.
    pub fn encode(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), Error> {
        match frame {
            Frame::Data {
                stream,
                flags,
                data,
            } => {
                if data.len() > MAX_LENGTH {
                    return Err(Error::Spdy("data frame too large".into()));
                }
                out.put_u32(stream & 0x7fff_ffff);
                out.put_u32((u32::from(*flags) << 24) | data.len() as u32);
                out.put_slice(data);
            }
            Frame::SynStream {
                stream,
                flags,
                headers,
            } => {
                let mut body = BytesMut::new();
                body.put_u32(*stream & 0x7fff_ffff);
                body.put_u32(0); // associated stream
                body.put_u16(0); // priority 0, slot 0
                body.put_slice(&self.header_block(headers)?);
                control(out, 1, *flags, &body)?;
            }
            Frame::SynReply {
                stream,
                flags,
                headers,
            } => {
                let mut body = BytesMut::new();
                body.put_u32(*stream & 0x7fff_ffff);
                body.put_slice(&self.header_block(headers)?);
                control(out, 2, *flags, &body)?;
            }
            Frame::RstStream { stream, status } => {
                let mut body = BytesMut::new();
                body.put_u32(*stream & 0x7fff_ffff);
                body.put_u32(*status);
                control(out, 3, 0, &body)?;
            }
            Frame::Settings => control(out, 4, 0, &0u32.to_be_bytes())?,
            Frame::Ping(id) => control(out, 6, 0, &id.to_be_bytes())?,
            Frame::GoAway {
                last_stream,
                status,
            } => {
                let mut body = BytesMut::new();
                body.put_u32(*last_stream & 0x7fff_ffff);
                body.put_u32(*status);
                control(out, 7, 0, &body)?;
            }
            Frame::Headers {
                stream,
                flags,
                headers,
            } => {
                let mut body = BytesMut::new();
                body.put_u32(*stream & 0x7fff_ffff);
                body.put_slice(&self.header_block(headers)?);
                control(out, 8, *flags, &body)?;
            }
            Frame::WindowUpdate { stream, delta } => {
                let mut body = BytesMut::new();
                body.put_u32(*stream & 0x7fff_ffff);
                body.put_u32(*delta & 0x7fff_ffff);
                control(out, 9, 0, &body)?;
            }
        }
        Ok(())
    }

    /// Takes one whole frame off the front of `buf`, if it holds one.
    ///
    /// # Errors
    /// [`Error::Spdy`] for a malformed frame, another protocol version or a bad header block.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, Error> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let length = (u32::from_be_bytes([0, buf[5], buf[6], buf[7]])) as usize;
        if buf.len() < 8 + length {
            return Ok(None);
        }
        let mut frame = buf.split_to(8 + length);
        let first = frame.get_u32();
        let flags = frame.get_u8();
        frame.advance(3);
        let mut body = frame.freeze();
        if first & 0x8000_0000 == 0 {
            return Ok(Some(Frame::Data {
                stream: first,
                flags,
                data: body,
            }));
        }
        let version = ((first >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(Error::Spdy(format!("unsupported SPDY version {version}")));
        }
        let kind = (first & 0xffff) as u16;
        let need = |body: &Bytes, n: usize| {
            if body.len() < n {
                Err(Error::Spdy(format!("control frame {kind} too short")))
            } else {
                Ok(())
            }
        };
        let frame = match kind {
            1 => {
                need(&body, 10)?;
                let stream = body.get_u32() & 0x7fff_ffff;
                body.advance(6);
                let headers = self.parse_block(&body)?;
                Frame::SynStream {
                    stream,
                    flags,
                    headers,
                }
            }
            2 | 8 => {
                need(&body, 4)?;
                let stream = body.get_u32() & 0x7fff_ffff;
                let headers = self.parse_block(&body)?;
                if kind == 2 {
                    Frame::SynReply {
                        stream,
                        flags,
                        headers,
                    }
                } else {
                    Frame::Headers {
                        stream,
                        flags,
                        headers,
                    }
                }
            }
            3 => {
                need(&body, 8)?;
                Frame::RstStream {
                    stream: body.get_u32() & 0x7fff_ffff,
                    status: body.get_u32(),
                }
            }
            4 => Frame::Settings,
            6 => {
                need(&body, 4)?;
                Frame::Ping(body.get_u32())
            }
            7 => {
                need(&body, 8)?;
                Frame::GoAway {
                    last_stream: body.get_u32() & 0x7fff_ffff,
                    status: body.get_u32(),
                }
            }
            9 => {
                need(&body, 8)?;
                Frame::WindowUpdate {
                    stream: body.get_u32() & 0x7fff_ffff,
                    delta: body.get_u32() & 0x7fff_ffff,
                }
            }
            other => return Err(Error::Spdy(format!("unknown control frame type {other}"))),
        };
        Ok(Some(frame))
    }

    /// The compressed header block of `headers` (flushed, so the peer can read it whole).
    fn header_block(&mut self, headers: &Headers) -> Result<Vec<u8>, Error> {
        let mut plain = Vec::new();
        plain.extend_from_slice(&(headers.len() as u32).to_be_bytes());
        for (k, v) in headers {
            let k = k.to_ascii_lowercase();
            plain.extend_from_slice(&(k.len() as u32).to_be_bytes());
            plain.extend_from_slice(k.as_bytes());
            plain.extend_from_slice(&(v.len() as u32).to_be_bytes());
            plain.extend_from_slice(v.as_bytes());
        }
        let mut out = Vec::with_capacity(plain.len() + 64);
        let mut input = &plain[..];
        loop {
            out.reserve(256);
            let before = self.compress.total_in();
            self.compress
                .compress_vec(input, &mut out, FlushCompress::Sync)
                .map_err(|e| Error::Spdy(format!("compressing headers: {e}")))?;
            let used = (self.compress.total_in() - before) as usize;
            input = &input[used..];
            // Done once all input is in and the flush had room to finish.
            if input.is_empty() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }

    /// Decompresses and parses one header block.
    fn parse_block(&mut self, block: &[u8]) -> Result<Headers, Error> {
        let bad = |m: String| Error::Spdy(format!("header block: {m}"));
        let mut plain = Vec::with_capacity(block.len() * 4 + 64);
        let mut input = block;
        loop {
            plain.reserve(1024);
            let (in_before, out_before) = (self.decompress.total_in(), plain.len());
            match self
                .decompress
                .decompress_vec(input, &mut plain, FlushDecompress::Sync)
            {
                Ok(Status::StreamEnd) => break,
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    let used = (self.decompress.total_in() - in_before) as usize;
                    input = &input[used..];
                    self.decompress
                        .set_dictionary(&self.dictionary)
                        .map_err(|e| bad(e.to_string()))?;
                    continue;
                }
                Err(e) => return Err(bad(e.to_string())),
            }
            let used = (self.decompress.total_in() - in_before) as usize;
            input = &input[used..];
            if plain.len() > MAX_HEADER_BLOCK {
                return Err(bad("too large".into()));
            }
            if input.is_empty() && plain.len() < plain.capacity() {
                break;
            }
            if used == 0 && plain.len() == out_before && plain.len() < plain.capacity() {
                break;
            }
        }
        let mut b = Bytes::from(plain);
        let take = |b: &mut Bytes| -> Result<Bytes, Error> {
            if b.len() < 4 {
                return Err(bad("truncated".into()));
            }
            let n = b.get_u32() as usize;
            if b.len() < n {
                return Err(bad("truncated".into()));
            }
            Ok(b.split_to(n))
        };
        if b.len() < 4 {
            return Err(bad("truncated".into()));
        }
        let count = b.get_u32();
        let mut headers = Vec::new();
        for _ in 0..count {
            let k = take(&mut b)?;
            let v = take(&mut b)?;
            headers.push((
                String::from_utf8_lossy(&k).into_owned(),
                String::from_utf8_lossy(&v).into_owned(),
            ));
        }
        Ok(headers)
    }
}

/// Appends a control frame of `kind` with `body`.
fn control(out: &mut BytesMut, kind: u16, flags: u8, body: &[u8]) -> Result<(), Error> {
    if body.len() > MAX_LENGTH {
        return Err(Error::Spdy("control frame too large".into()));
    }
    out.put_u16(0x8000 | VERSION);
    out.put_u16(kind);
    out.put_u32((u32::from(flags) << 24) | body.len() as u32);
    out.put_slice(body);
    Ok(())
}

/// The value of header `name` in `headers`.
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dictionary_is_the_spec_one() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        assert!(d.starts_with(b"\x00\x00\x00\x07options\x00\x00\x00\x04head"));
        assert!(d.ends_with(b",*,enq=0."));
        // The zlib dictionary id (adler32) spdystream's zlib writes in its stream header.
        let mut a: u32 = 1;
        let mut b: u32 = 0;
        for &x in &d {
            a = (a + u32::from(x)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    #[test]
    fn frames_round_trip_with_shared_compression_state() {
        let mut client = Framer::new();
        let mut server = Framer::new();
        let frames = vec![
            Frame::SynStream {
                stream: 1,
                flags: 0,
                headers: vec![("streamtype".into(), "error".into())],
            },
            Frame::SynStream {
                stream: 3,
                flags: 0,
                headers: vec![
                    ("streamtype".into(), "data".into()),
                    ("port".into(), "8080".into()),
                    ("requestid".into(), "0".into()),
                ],
            },
            Frame::Data {
                stream: 3,
                flags: FLAG_FIN,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Ping(1),
            Frame::RstStream {
                stream: 3,
                status: 5,
            },
            Frame::GoAway {
                last_stream: 0,
                status: 0,
            },
            Frame::WindowUpdate {
                stream: 1,
                delta: 100,
            },
        ];
        let mut wire = BytesMut::new();
        for f in &frames {
            client.encode(f, &mut wire).unwrap();
        }
        // Arrives in small pieces.
        let mut got = Vec::new();
        let mut buf = BytesMut::new();
        for chunk in wire.chunks(7) {
            buf.extend_from_slice(chunk);
            while let Some(f) = server.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn reads_header_blocks_of_reference_zlib() {
        // Two SYN_REPLY header blocks as zlib itself (level 9, the SPDY dictionary, sync
        // flush) writes them, as Go's compress/zlib does in spdystream.
        let blocks: [&[u8]; 2] = [
            &[
                120, 249, 227, 198, 167, 194, 2, 166, 35, 70, 112, 58, 43, 41, 74, 77, 204, 133,
                22, 37, 192, 20, 155, 146, 95, 90, 2, 0, 0, 0, 255, 255,
            ],
            &[194, 41, 151, 90, 84, 4, 0, 0, 0, 255, 255],
        ];
        let mut f = Framer::new();
        for (i, (block, want)) in blocks.iter().zip(["stdout", "stderr"]).enumerate() {
            let mut body = BytesMut::new();
            body.put_u32(i as u32 * 2 + 1);
            body.put_slice(block);
            let mut wire = BytesMut::new();
            control(&mut wire, 2, 0, &body).unwrap();
            let Some(Frame::SynReply { headers, .. }) = f.decode(&mut wire).unwrap() else {
                panic!("not a SYN_REPLY");
            };
            assert_eq!(headers, vec![("streamtype".to_string(), want.to_string())]);
        }
    }

    #[test]
    fn rejects_other_versions() {
        let mut f = Framer::new();
        let mut buf = BytesMut::from(&[0x80, 0x02, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 1][..]);
        assert!(f.decode(&mut buf).is_err());
    }
}
