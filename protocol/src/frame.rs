//! The control protocol's frames over an async stream: a 4-byte big-endian length, checked
//! against [`MAX_FRAME_LEN`](crate::wire::MAX_FRAME_LEN) before the body is allocated, then the
//! body. The same framing over blocking streams is [`crate::wire::read_frame`] and
//! [`crate::wire::write_frame`]; the messages are [`crate::wire`]'s.

use std::io;

use crate::wire::{FRAME_HEADER_LEN, WireError, body_read, frame_header, header_read};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Read one frame's body. A clean end of stream before the header is [`WireError::Closed`];
/// anywhere else it is [`WireError::TruncatedFrame`]. A length over the maximum is
/// [`WireError::FrameTooLarge`], reported before any of the body is read.
pub async fn read_frame<R: AsyncRead + Unpin>(reader: &mut R) -> Result<Vec<u8>, WireError> {
    let mut header = [0u8; FRAME_HEADER_LEN];
    let got = read_full(reader, &mut header).await?;
    let len = header_read(got, header)?;
    let mut body = vec![0u8; len];
    let got = read_full(reader, &mut body).await?;
    body_read(got, len)?;
    Ok(body)
}

/// Write one frame and flush it.
pub async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    body: &[u8],
) -> Result<(), WireError> {
    let header = frame_header(body.len())?;
    writer.write_all(&header).await?;
    writer.write_all(body).await?;
    writer.flush().await?;
    Ok(())
}

async fn read_full<R: AsyncRead + Unpin>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..) {
        if rest.is_empty() {
            break;
        }
        match reader.read(rest).await? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use crate::wire::MAX_FRAME_LEN;

    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_lengths_are_checked_first() {
        let mut buf = Vec::new();
        write_frame(&mut buf, b"hello").await.unwrap();
        assert_eq!(read_frame(&mut buf.as_slice()).await.unwrap(), b"hello");

        // A reader that would fail if the body were read proves the check comes first.
        let header = u32::try_from(MAX_FRAME_LEN + 1).unwrap().to_be_bytes();
        let mut reader = tokio::io::AsyncReadExt::chain(&header[..], FailingReader);
        assert!(matches!(
            read_frame(&mut reader).await,
            Err(WireError::FrameTooLarge { .. })
        ));

        assert!(matches!(
            read_frame(&mut &[0u8, 0, 0, 9, 1][..]).await,
            Err(WireError::TruncatedFrame { missing: 8 })
        ));
        assert!(matches!(
            read_frame(&mut &[][..]).await,
            Err(WireError::Closed)
        ));
    }

    struct FailingReader;

    impl AsyncRead for FailingReader {
        fn poll_read(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            _: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            panic!("the body must not be read")
        }
    }
}
