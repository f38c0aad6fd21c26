//! The gRPC protocol between coordinator and workers, and the codec that
//! moves parameter vectors over it.
//!
//! Parameters travel as raw little-endian `f32` bytes split into chunks of
//! [`CHUNK_BYTES`], so that a model of any size fits under gRPC's per-message
//! limit and the receiver writes straight into its destination buffer.

#![allow(missing_docs)] // The generated code carries the .proto comments only.

pub mod codec;
pub mod security;

/// Generated messages and service stubs of `proto/admm.proto`.
pub mod pb {
    tonic::include_proto!("admm.v1");
}

pub use codec::{chunk_f32, ChunkAssembler, CodecError, CHUNK_BYTES};

/// Version of the wire protocol; a worker of another version is rejected.
pub const PROTOCOL_VERSION: u32 = 1;

/// The only element type on the wire.
pub const DTYPE_F32: &str = "f32";

/// HTTP/2 settings both ends use for parameter streams.
pub mod tuning {
    /// Stream and connection flow-control windows, in bytes, chosen to hold
    /// many 1 MiB chunks so that a sender seldom waits for a window update.
    pub const WINDOW_BYTES: u32 = 64 << 20;
    /// Largest HTTP/2 frame, in bytes (the protocol's maximum is 16 MiB − 1).
    pub const MAX_FRAME_BYTES: u32 = 1 << 20;
    /// Largest gRPC message either end accepts, in bytes: a chunk plus its
    /// framing, far below the size that would let a peer make us allocate
    /// a whole model in one message.
    pub const MAX_MESSAGE_BYTES: usize = 4 << 20;

    use tonic::transport::{Endpoint, Server};

    /// Applies the parameter-stream settings to a server: TCP_NODELAY,
    /// [`WINDOW_BYTES`] windows and [`MAX_FRAME_BYTES`] frames.
    pub fn configure_server(builder: Server) -> Server {
        builder
            .tcp_nodelay(true)
            .initial_stream_window_size(WINDOW_BYTES)
            .initial_connection_window_size(WINDOW_BYTES)
            .max_frame_size(MAX_FRAME_BYTES)
    }

    /// Applies the parameter-stream settings to a client endpoint:
    /// TCP_NODELAY, [`WINDOW_BYTES`] windows and [`MAX_FRAME_BYTES`] frames.
    /// Each end's maximum frame size limits what its peer sends, so the
    /// client's setting sizes the frames of `FetchRound` streams.
    pub fn configure_endpoint(endpoint: Endpoint) -> Endpoint {
        endpoint
            .tcp_nodelay(true)
            .initial_stream_window_size(WINDOW_BYTES)
            .initial_connection_window_size(WINDOW_BYTES)
            .max_frame_size(MAX_FRAME_BYTES)
    }
}
