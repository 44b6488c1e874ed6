//! Loopback ports for nodes that are configured now and listen later (the demo's nodes, the
//! test suite's).
//!
//! A port the kernel hands out for port 0 is drawn from its ephemeral range, the same range it
//! draws from for every outgoing connection and every other port-0 bind (a dashboard, the local
//! API). Between the moment a node's listen address is written into its configuration and the
//! moment it binds, such a port can be taken, and the node then does not start. [`free`] takes
//! ports from below that range instead, which the kernel never hands out by itself.

use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Result, bail};

/// Linux's default ephemeral range, when /proc does not say.
const EPHEMERAL: (u32, u32) = (32_768, 60_999);

/// How many ports below the ephemeral range are used.
const SPAN: u32 = 10_000;

/// A free TCP port on 127.0.0.1 outside the kernel's ephemeral range, checked free by binding
/// it. Within one process no port is handed out twice; the first is drawn from the process id
/// so that two processes on one machine rarely meet. Falls back to a kernel-chosen port when
/// the ephemeral range leaves no room.
pub fn free() -> Result<u16> {
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let Some((low, high)) = outside(ephemeral_range()) else {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        return Ok(l.local_addr()?.port());
    };
    let span = high - low;
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id() % span,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..span {
        let port = low + NEXT.fetch_add(1, Ordering::SeqCst) % span;
        let Ok(port) = u16::try_from(port) else {
            continue;
        };
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port on 127.0.0.1 in {low}..{high}")
}

/// The kernel's ephemeral range, first and last port.
fn ephemeral_range() -> (u32, u32) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut parts = text.split_whitespace().map(|p| p.parse::<u32>().ok());
            Some((parts.next()??, parts.next()??))
        })
        .unwrap_or(EPHEMERAL)
}

/// Ports `low..high` outside the ephemeral range `first..=last`: the [`SPAN`] below it, or
/// those above it when it starts too low; `None` when neither has room.
fn outside((first, last): (u32, u32)) -> Option<(u32, u32)> {
    if first >= SPAN + 1_024 {
        Some((first - SPAN, first))
    } else if last + 1 + SPAN / 2 <= 65_536 {
        Some((last + 1, 65_536))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_lie_outside_the_ephemeral_range_and_are_never_handed_out_twice() {
        assert_eq!(outside((32_768, 60_999)), Some((22_768, 32_768)));
        assert_eq!(outside((1_024, 40_000)), Some((40_001, 65_536)));
        assert_eq!(outside((1_024, 65_535)), None);
        let (first, last) = ephemeral_range();
        let ports: Vec<u16> = (0..50).map(|_| free().unwrap()).collect();
        let mut distinct = ports.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), ports.len());
        if outside((first, last)).is_some() {
            assert!(
                ports
                    .iter()
                    .all(|&p| !(first..=last).contains(&u32::from(p)))
            );
        }
    }
}
