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
/// Chunks per batch when sealing a stream of unknown length (a reader): 1 MiB in flight per
/// batch, two batches at a time, so an agent streaming a generator holds about 2 MiB here.
pub const READER_BATCH_CHUNKS: usize = 16;
