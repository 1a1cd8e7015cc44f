//! The `/canopy/1` request-response codec. Each frame is preceded by its length as a
//! little-endian u32; a length over the protocol's frame limit is refused before anything is
//! read or allocated for it.
//!
//! A request is always one signed [`Envelope`]. A response is a signed envelope too, except the
//! answer to a chunk request, which travels as the chunk's bytes behind a small header
//! ([`RawChunk`]): the connection already authenticates the peer (Noise or QUIC's TLS), and the
//! chunk is checked against its blake3 name when it arrives, so a signature over it would hash
//! and copy every byte twice more for nothing. The first byte tells the two apart: an envelope
//! frame starts with the wire version
//! ([`WIRE_VERSION`](canopy_protocol::codec::WIRE_VERSION)), a raw chunk with [`CHUNK_FRAME`].

use std::io;

use canopy_protocol::codec::{MAX_CHUNK_SIZE, MAX_FRAME_LEN};
use canopy_protocol::{Digest, Envelope};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

use crate::buffers::CHUNKS;

/// The protocol name on the wire.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/canopy/1");

/// The first byte of a raw chunk frame.
pub const CHUNK_FRAME: u8 = 0xC0;
const _: () = assert!(CHUNK_FRAME != canopy_protocol::codec::WIRE_VERSION);
/// A raw chunk frame's header after the tag: the chunk's name and whether it is present.
const CHUNK_HEADER: usize = 32 + 1;

/// Reads and writes length-prefixed frames: envelopes, and raw chunks in responses.
#[derive(Debug, Clone, Copy, Default)]
pub struct CanopyCodec;

/// A response on `/canopy/1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// A signed message.
    Signed(Box<Envelope>),
    /// The answer to a chunk request: the bytes as stored, checked by the receiver against
    /// the name it asked for.
    Chunk(RawChunk),
}

/// A chunk as it travels in a response: the name asked for, and the bytes if the peer has
/// them. The receiver hashes the bytes on its swarm task, not while reading them: the
/// connection's task, which also decrypts, is what limits a transfer's speed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawChunk {
    /// The name the request asked for.
    pub id: Digest,
    /// The chunk's bytes; `None` when the peer does not have it.
    pub data: Option<Vec<u8>>,
}

/// What a frame's buffer reserves before its bytes arrive, for frames anyone may send.
const INITIAL_FRAME_CAPACITY: usize = 64 << 10;
/// What a response's buffer reserves before its bytes arrive: responses answer this peer's
/// own requests, which it keeps few of, and a whole default-sized chunk then needs no regrowth.
const INITIAL_RESPONSE_CAPACITY: usize = 1 << 20;

/// Reads a length prefix, refusing one over `max`.
async fn read_len<T: AsyncRead + Unpin>(io: &mut T, max: usize) -> io::Result<usize> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the limit of {max}"),
        ));
    }
    Ok(len)
}

/// Appends exactly `len` bytes from `io` to `buf`, which grows with what arrives rather than
/// by what the prefix claims (a peer that announces 17 MiB and sends nothing costs nothing),
/// at most doubling, and is zero-filled once, only where bytes are about to land.
async fn read_into<T: AsyncRead + Unpin>(
    io: &mut T,
    buf: &mut Vec<u8>,
    len: usize,
) -> io::Result<()> {
    let end = buf.len() + len;
    while buf.len() < end {
        let start = buf.len();
        let step = (end - start).min(start.max(INITIAL_FRAME_CAPACITY));
        buf.resize(start + step, 0);
        if let Err(e) = io.read_exact(&mut buf[start..]).await {
            let got = start - (end - len);
            return Err(if e.kind() == io::ErrorKind::UnexpectedEof {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("frame ended within bytes {got} to {} of {len}", got + step),
                )
            } else {
                e
            });
        }
    }
    Ok(())
}

/// Reads one length-prefixed frame of at most `max` bytes.
pub async fn read_frame<T: AsyncRead + Unpin>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let len = read_len(io, max).await?;
    let mut frame = Vec::with_capacity(len.min(INITIAL_FRAME_CAPACITY));
    read_into(io, &mut frame, len).await?;
    Ok(frame)
}

/// Writes one length-prefixed frame.
pub async fn write_frame<T: AsyncWrite + Unpin>(io: &mut T, frame: &[u8]) -> io::Result<()> {
    write_parts(io, &[frame]).await
}

/// Writes one length-prefixed frame made of `parts`, and closes the stream.
async fn write_parts<T: AsyncWrite + Unpin>(io: &mut T, parts: &[&[u8]]) -> io::Result<()> {
    let len = u32::try_from(parts.iter().map(|p| p.len()).sum::<usize>())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    io.write_all(&len.to_le_bytes()).await?;
    for part in parts {
        io.write_all(part).await?;
    }
    io.close().await
}

fn invalid(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

async fn read_envelope<T: AsyncRead + Unpin>(io: &mut T) -> io::Result<Envelope> {
    let frame = read_frame(io, MAX_FRAME_LEN).await?;
    Envelope::from_frame(&frame).map_err(invalid)
}

async fn write_envelope<T: AsyncWrite + Unpin>(io: &mut T, envelope: Envelope) -> io::Result<()> {
    let frame = envelope
        .to_frame()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    write_frame(io, &frame).await
}

/// Reads a response: a raw chunk is read straight into the buffer it is kept in.
async fn read_response<T: AsyncRead + Unpin>(io: &mut T) -> io::Result<Response> {
    let len = read_len(io, MAX_FRAME_LEN).await?;
    let mut tag = [0u8; 1];
    if len == 0 {
        return Err(invalid("empty frame"));
    }
    io.read_exact(&mut tag).await?;
    if tag[0] != CHUNK_FRAME {
        let mut frame = Vec::with_capacity(len.min(INITIAL_FRAME_CAPACITY));
        frame.push(tag[0]);
        read_into(io, &mut frame, len - 1).await?;
        return Envelope::from_frame(&frame)
            .map(|e| Response::Signed(Box::new(e)))
            .map_err(invalid);
    }
    let Some(data_len) = (len - 1).checked_sub(CHUNK_HEADER) else {
        return Err(invalid(format!("chunk frame of {len} bytes has no header")));
    };
    if data_len > MAX_CHUNK_SIZE as usize {
        return Err(invalid(format!(
            "chunk of {data_len} bytes exceeds the limit of {MAX_CHUNK_SIZE}"
        )));
    }
    let mut header = [0u8; CHUNK_HEADER];
    io.read_exact(&mut header).await?;
    let mut name = [0u8; 32];
    name.copy_from_slice(&header[..32]);
    let id = Digest::from_bytes(name);
    let data = match header[32] {
        0 if data_len == 0 => None,
        1 => match CHUNKS.take(data_len) {
            // A reused buffer is overwritten whole (and dropped if the stream fails).
            Some(mut data) => {
                io.read_exact(&mut data).await?;
                Some(data)
            }
            None => {
                let mut data = Vec::with_capacity(data_len.min(INITIAL_RESPONSE_CAPACITY));
                read_into(io, &mut data, data_len).await?;
                Some(data)
            }
        },
        flag => {
            return Err(invalid(format!(
                "chunk frame with presence flag {flag} and {data_len} bytes"
            )));
        }
    };
    Ok(Response::Chunk(RawChunk { id, data }))
}

/// Writes a response; a raw chunk's bytes go out as they are, without a copy.
async fn write_response<T: AsyncWrite + Unpin>(io: &mut T, response: Response) -> io::Result<()> {
    match response {
        Response::Signed(envelope) => write_envelope(io, *envelope).await,
        Response::Chunk(RawChunk { id, data }) => {
            let mut header = [0u8; 1 + CHUNK_HEADER];
            header[0] = CHUNK_FRAME;
            header[1..33].copy_from_slice(id.as_bytes());
            header[33] = u8::from(data.is_some());
            let written = write_parts(io, &[&header, data.as_deref().unwrap_or_default()]).await;
            if let Some(data) = data {
                CHUNKS.give(data);
            }
            written
        }
    }
}

impl libp2p::request_response::Codec for CanopyCodec {
    type Protocol = StreamProtocol;
    type Request = Envelope;
    type Response = Response;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Envelope>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_envelope(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Response>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_response(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        request: Envelope,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_envelope(io, request).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        response: Response,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_response(io, response).await
    }
}

#[cfg(test)]
mod tests {
    use futures::io::Cursor;

    use super::*;

    #[tokio::test]
    async fn oversized_length_refused_before_reading() {
        {
            let mut frame = (u32::MAX).to_le_bytes().to_vec();
            frame.extend([0u8; 16]);
            let err = read_frame(&mut Cursor::new(frame), 1024).await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            let mut ok = Vec::new();
            write_frame(&mut Cursor::new(&mut ok), b"hello")
                .await
                .unwrap();
            assert_eq!(
                read_frame(&mut Cursor::new(ok), 1024).await.unwrap(),
                b"hello"
            );
        }
    }

    /// Issue 17: a frame used to allocate the full length its prefix claimed before a byte of
    /// it arrived; now it grows with what arrives, and a short frame is an error.
    #[tokio::test]
    async fn a_claimed_length_is_not_allocated_before_the_bytes_arrive() {
        let mut frame = (MAX_FRAME_LEN as u32).to_le_bytes().to_vec();
        frame.extend([7u8; 100]);
        let mut reader = Cursor::new(frame);
        let err = read_frame(&mut reader, MAX_FRAME_LEN).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
        assert!(
            err.to_string().contains("within bytes 0 to 65536 of"),
            "{err}"
        );
    }

    async fn round_trip(response: Response) -> io::Result<Response> {
        let mut wire = Vec::new();
        write_response(&mut Cursor::new(&mut wire), response).await?;
        read_response(&mut Cursor::new(wire)).await
    }

    #[tokio::test]
    async fn raw_chunks_and_envelopes_share_the_response_stream() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        for chunk in [
            RawChunk {
                id: Digest::of(&data),
                data: Some(data.clone()),
            },
            RawChunk {
                id: Digest::of(b"absent"),
                data: None,
            },
            RawChunk {
                id: Digest::of(b""),
                data: Some(Vec::new()),
            },
        ] {
            let back = round_trip(Response::Chunk(chunk.clone())).await.unwrap();
            assert_eq!(back, Response::Chunk(chunk));
        }
        let keys = canopy_protocol::Keypair::generate().unwrap();
        let message =
            canopy_protocol::Message::ChunkRequest(canopy_protocol::messages::ChunkRequest {
                id: Digest::of(b"x"),
            });
        let envelope = Envelope::seal(&keys, 3, 1, &message).unwrap();
        let back = round_trip(Response::Signed(Box::new(envelope.clone())))
            .await
            .unwrap();
        assert_eq!(back, Response::Signed(Box::new(envelope)));
    }

    /// Bad raw chunk frames are errors, and nothing is allocated for what they claim.
    #[tokio::test]
    async fn malformed_chunk_frames_are_refused() {
        let frame = |body: &[u8], claimed: usize| {
            let mut f = (claimed as u32).to_le_bytes().to_vec();
            f.extend_from_slice(body);
            f
        };
        let mut header = vec![CHUNK_FRAME];
        header.extend([0u8; 32]);
        // No room for the header.
        let short = frame(&[CHUNK_FRAME, 1, 2], 3);
        // Absent, yet with bytes.
        let mut absent = header.clone();
        absent.extend([0, 9, 9]);
        // A presence flag that is neither 0 nor 1.
        let mut flag = header.clone();
        flag.push(7);
        // Present, claiming more than arrives.
        let mut cut = header.clone();
        cut.push(1);
        cut.extend([5u8; 10]);
        // More than a chunk may be.
        let mut huge = header.clone();
        huge.push(1);
        for (wire, what) in [
            (short, "no header"),
            (frame(&absent, absent.len()), "presence flag 0"),
            (frame(&flag, flag.len()), "presence flag 7"),
            (frame(&cut, cut.len() + 1000), "frame ended"),
            (
                frame(&huge, 1 + CHUNK_HEADER + MAX_CHUNK_SIZE as usize + 1),
                "exceeds the limit",
            ),
            (frame(&[], 0), "empty frame"),
        ] {
            let err = read_response(&mut Cursor::new(wire)).await.unwrap_err();
            assert!(err.to_string().contains(what), "{what}: {err}");
        }
    }
}
