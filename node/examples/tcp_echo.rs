//! The baseline of `scripts/bench-net.sh`: a plain TCP echo on loopback, no encryption, no
//! multiplexing, no signatures: the floor for a request-response round trip.
//!
//! `tcp_echo serve PORT` echoes fixed-size messages; `tcp_echo ping ADDR COUNT SIZE` sends
//! COUNT messages of SIZE bytes one after another and prints `{"p50_us":..,"p99_us":..}`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Instant;

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("serve") => {
            let listener = TcpListener::bind(("127.0.0.1", args[2].parse::<u16>().unwrap()))?;
            println!("ready");
            for stream in listener.incoming() {
                let mut s = stream?;
                s.set_nodelay(true)?;
                std::thread::spawn(move || {
                    let mut buf = [0u8; 65536];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
            Ok(())
        }
        Some("ping") => {
            let (count, size): (usize, usize) =
                (args[3].parse().unwrap(), args[4].parse().unwrap());
            let mut s = TcpStream::connect(&args[2])?;
            s.set_nodelay(true)?;
            let out = vec![0x5au8; size];
            let mut back = vec![0u8; size];
            let mut micros = Vec::with_capacity(count);
            for _ in 0..count {
                let t = Instant::now();
                s.write_all(&out)?;
                s.read_exact(&mut back)?;
                micros.push(t.elapsed().as_secs_f64() * 1e6);
            }
            micros.sort_by(f64::total_cmp);
            let q = |p: f64| micros[((micros.len() - 1) as f64 * p).round() as usize];
            println!("{{\"p50_us\":{:.1},\"p99_us\":{:.1}}}", q(0.5), q(0.99));
            Ok(())
        }
        _ => {
            eprintln!("usage: tcp_echo serve PORT | tcp_echo ping ADDR COUNT SIZE");
            std::process::exit(2)
        }
    }
}
