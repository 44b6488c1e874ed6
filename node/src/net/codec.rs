//! The request-response codec: whole messages as bytes, one per stream, size-bounded.
//!
//! Decoding and signature checks happen above, in the event loop, through
//! `protocol::messages`, so that every refusal is logged with its reason and a test can send
//! hand-crafted bytes. Here we only enforce the size bounds: reading stops one byte past the
//! limit and the stream is refused.

use std::io;

use futures::prelude::*;
use libp2p::StreamProtocol;
use protocol::messages::{MAX_REQUEST, MAX_RESPONSE};

/// The one request-response protocol.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/mbc-node/rpc/1");

/// Reads and writes whole messages as bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

async fn read_bounded<T: AsyncRead + Unpin + Send>(io: &mut T, max: usize) -> io::Result<Vec<u8>> {
    let mut buf = Vec::new();
    io.take(max as u64 + 1).read_to_end(&mut buf).await?;
    if buf.len() > max {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message exceeds the {max}-byte limit"),
        ));
    }
    Ok(buf)
}

async fn write_all<T: AsyncWrite + Unpin + Send>(io: &mut T, bytes: Vec<u8>) -> io::Result<()> {
    io.write_all(&bytes).await?;
    io.close().await
}

impl libp2p::request_response::Codec for RawCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        // libp2p reports a failed read only at debug level and without an event, so the
        // refusal is logged here (the peer is not known at this layer).
        read_bounded(io, MAX_REQUEST)
            .await
            .inspect_err(|e| tracing::warn!("refused request: {e}"))
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<Vec<u8>> {
        let response = read_bounded(io, MAX_RESPONSE).await?;
        if response.is_empty() {
            // A peer that refuses a stream (e.g. an oversized request) closes it unanswered.
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the peer closed the stream without answering",
            ));
        }
        Ok(response)
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()> {
        write_all(io, req).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()> {
        write_all(io, res).await
    }
}
