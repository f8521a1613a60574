package io.weightloader.backend.nccl;

/** One tensor to send or receive: its name (for messages), device address and byte count. */
record NcclOp(String tensor, long address, long bytes) {
}
