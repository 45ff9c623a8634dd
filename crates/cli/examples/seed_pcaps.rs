//! Writes the input pcaps of the offline seed demo (`./demo.sh`):
//! `DIR/eth0.pcap` and `DIR/docker0.pcap`, built with fastables-packet's
//! frame builders (the same frames the scenario tests use).
//!
//! Usage: `cargo run -p fastables-cli --example seed_pcaps -- DIR`

#[path = "../tests/common/seed.rs"]
mod seed;

use std::path::PathBuf;
use std::process::ExitCode;

use fastables_offline::pcap::PcapWriter;

fn write(path: &std::path::Path, frames: &[(u64, Vec<u8>)]) -> Result<(), String> {
    let mut w = PcapWriter::create(path).map_err(|e| e.to_string())?;
    for (us, f) in frames {
        w.write_frame(us * 1000, f).map_err(|e| e.to_string())?;
    }
    w.flush().map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: seed_pcaps DIR");
        return ExitCode::from(2);
    };
    let input = seed::demo_input();
    let res = std::fs::create_dir_all(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))
        .and_then(|()| write(&dir.join("eth0.pcap"), &input.eth0))
        .and_then(|()| write(&dir.join("docker0.pcap"), &input.docker0));
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("seed_pcaps: {e}");
            ExitCode::FAILURE
        }
    }
}
