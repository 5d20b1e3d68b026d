//! The STREAM payload's chunk sizes, shared by `stream` (the format) and `pipeline` (the
//! batches its worker threads take shares of).

/// Plaintext bytes per chunk.
pub const CHUNK: usize = 64 * 1024;
/// Authentication tag bytes per chunk.
pub const TAG: usize = 16;
/// Ciphertext bytes of a full chunk.
pub const SLOT: usize = CHUNK + TAG;
/// Chunks per batch: 64 chunks = 4 MiB of plaintext in flight per batch.
pub const BATCH_CHUNKS: usize = 64;
