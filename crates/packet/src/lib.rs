//! fastables-packet: zero-copy header views over byte slices, checksums, flow keys.
#![deny(unsafe_code)]
