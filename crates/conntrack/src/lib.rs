//! fastables-conntrack: connection tracking and NAT bindings.
#![deny(unsafe_code)]
