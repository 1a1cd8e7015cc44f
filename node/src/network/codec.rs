//! The `/canopy/1` request-response codec: each request and each response is one signed
//! [`Envelope`] frame, preceded by its length as a little-endian u32. A length over the
//! protocol's frame limit is refused before anything is read or allocated for it.

use std::io;

use canopy_protocol::Envelope;
use canopy_protocol::codec::MAX_FRAME_LEN;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;

/// The protocol name on the wire.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/canopy/1");

/// Reads and writes length-prefixed envelope frames.
#[derive(Debug, Clone, Copy, Default)]
pub struct CanopyCodec;

/// What a frame's buffer starts with before its bytes arrive.
const INITIAL_FRAME_CAPACITY: usize = 64 << 10;

/// Reads one length-prefixed frame of at most `max` bytes.
pub async fn read_frame<T: AsyncRead + Unpin>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_le_bytes(len) as usize;
    if len > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds the limit of {max}"),
        ));
    }
    // Grow with what arrives rather than allocating what the prefix claims: a peer that
    // announces 17 MiB and sends nothing costs nothing.
    let mut frame = Vec::with_capacity(len.min(INITIAL_FRAME_CAPACITY));
    io.take(len as u64).read_to_end(&mut frame).await?;
    if frame.len() != len {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("frame ended after {} of {len} bytes", frame.len()),
        ));
    }
    Ok(frame)
}

/// Writes one length-prefixed frame.
pub async fn write_frame<T: AsyncWrite + Unpin>(io: &mut T, frame: &[u8]) -> io::Result<()> {
    let len = u32::try_from(frame.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    io.write_all(&len.to_le_bytes()).await?;
    io.write_all(frame).await?;
    io.close().await
}

async fn read_envelope<T: AsyncRead + Unpin>(io: &mut T) -> io::Result<Envelope> {
    let frame = read_frame(io, MAX_FRAME_LEN).await?;
    Envelope::from_frame(&frame).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

async fn write_envelope<T: AsyncWrite + Unpin>(io: &mut T, envelope: Envelope) -> io::Result<()> {
    let frame = envelope
        .to_frame()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    write_frame(io, &frame).await
}

impl libp2p::request_response::Codec for CanopyCodec {
    type Protocol = StreamProtocol;
    type Request = Envelope;
    type Response = Envelope;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Envelope>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_envelope(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Envelope>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_envelope(io).await
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
        response: Envelope,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_envelope(io, response).await
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
        assert!(err.to_string().contains("after 100 of"), "{err}");
    }
}
