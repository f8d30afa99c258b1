//! Writes the UDP payloads of every capture under a folder as fuzz seeds, read
//! with the agent's own pcap reader (Ethernet, Linux cooked, raw IP and loopback
//! captures alike): `fuzz/seed` runs it for the decoder, netflow and sflow targets.
//!
//! `cargo run -p flow-agent --example fuzz_seed -- CAPTURES_DIR CORPUS_DIR`

use std::hash::{DefaultHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use flow_agent::decode::Protocol;
use flow_agent::pcap::read_udp_datagrams;

fn main() -> ExitCode {
    let args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [captures, corpus] = args.as_slice() else {
        eprintln!("usage: fuzz_seed CAPTURES_DIR CORPUS_DIR");
        return ExitCode::FAILURE;
    };
    let mut files = Vec::new();
    collect_captures(captures, &mut files);
    files.sort();
    for file in &files {
        // Deliberately invalid captures are seeds too, as far as they can be read.
        let datagrams = match read_udp_datagrams(file) {
            Ok(datagrams) => datagrams,
            Err(error) => {
                eprintln!("fuzz_seed: skipped {error}");
                continue;
            }
        };
        for datagram in &datagrams {
            let payload = &datagram.payload;
            // The decoder target reads its first byte as the exporter to pretend to be.
            let mut decoder_seed = vec![0];
            decoder_seed.extend_from_slice(payload);
            let mut seeds = vec![("decoder", decoder_seed)];
            match Protocol::detect(payload) {
                Some(Protocol::Sflow) => seeds.push(("sflow", payload.clone())),
                Some(_) => seeds.push(("netflow", payload.clone())),
                None => {}
            }
            for (target, seed) in seeds {
                if let Err(error) = write_seed(&corpus.join(target), &seed) {
                    eprintln!("fuzz_seed: cannot write a {target} seed: {error}");
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    ExitCode::SUCCESS
}

/// Every `*.pcap` below `dir`.
fn collect_captures(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for path in entries.flatten().map(|entry| entry.path()) {
        if path.is_dir() {
            collect_captures(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "pcap") {
            files.push(path);
        }
    }
}

/// Writes a seed named after its content, so that the same bytes are one seed.
fn write_seed(dir: &Path, seed: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut hasher = DefaultHasher::new();
    hasher.write(seed);
    std::fs::write(dir.join(format!("{:016x}", hasher.finish())), seed)
}
