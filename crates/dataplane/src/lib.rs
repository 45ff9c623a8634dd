//! fastables-dataplane: the pipeline, routing, interfaces, neighbors, ICMP generation.
#![deny(unsafe_code)]
