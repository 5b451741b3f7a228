//! Who may use the proxy: only the broker it runs in.
//!
//! The proxy listens inside the follower broker's JVM, so on a PLAINTEXT inter-broker listener it can tell
//! whether a connection comes from its own process: the kernel lists every TCP socket of the network
//! namespace in `/proc/net/tcp` and `/proc/net/tcp6` with its inode, and `/proc/self/fd` links to
//! `socket:[inode]` for every socket the process holds. An accepted connection whose client end (local
//! address = the accepted socket's peer, remote address = its local address) is one of this process's
//! sockets comes from this broker; anything else is refused before a byte of it is read.
//!
//! The check runs once per accepted connection. [`CallerCheck`] is where a principal-based check (the
//! broker's inter-broker identity on TLS or SASL listeners) slots in.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// How callers are checked (`replication.fast.auth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallerCheck {
    /// Only connections from this process (the broker) are served (default).
    Process,
    /// Every connection is served (tests that play the follower from another process).
    None,
}

impl CallerCheck {
    /// Whether the connection from `peer` to `local` may be served; `Err` names why not.
    pub fn check(self, peer: SocketAddr, local: SocketAddr) -> Result<(), String> {
        match self {
            CallerCheck::None => Ok(()),
            CallerCheck::Process => own_connection(peer, local),
        }
    }
}

/// Whether the client end of the connection `peer` → `local` is a socket of this process.
pub fn own_connection(peer: SocketAddr, local: SocketAddr) -> Result<(), String> {
    let mut inode = None;
    for (file, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let table = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) if v6 && e.kind() == std::io::ErrorKind::NotFound => continue, // no IPv6 in this kernel
            Err(e) => return Err(format!("cannot read {file}: {e}")),
        };
        if let Some(i) = find_inode(&table, v6, peer, local) {
            inode = Some(i);
            break;
        }
    }
    let inode = inode.ok_or("the client socket is not in this network namespace's TCP tables")?;
    let ours = own_socket_inodes().map_err(|e| format!("cannot read /proc/self/fd: {e}"))?;
    if ours.contains(&inode) {
        Ok(())
    } else {
        Err(format!("the client socket inode={inode} belongs to another process"))
    }
}

/// The inode of the socket whose local address is `client` and remote address `server` in a
/// `/proc/net/tcp{,6}` table (0 inodes — sockets already closed — do not count).
pub fn find_inode(table: &str, v6: bool, client: SocketAddr, server: SocketAddr) -> Option<u64> {
    for line in table.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 {
            continue;
        }
        let (Some(l), Some(r)) = (parse_addr(f[1], v6), parse_addr(f[2], v6)) else { continue };
        if same(l, client) && same(r, server) {
            match f[9].parse::<u64>() {
                Ok(inode) if inode != 0 => return Some(inode),
                _ => continue,
            }
        }
    }
    None
}

/// Equal addresses, an IPv4 address matching its IPv4-mapped IPv6 form (a Java client on a dual-stack
/// socket connects to an IPv4 proxy from `::ffff:a.b.c.d`).
fn same(a: SocketAddr, b: SocketAddr) -> bool {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    a.port() == b.port() && canon(a.ip()) == canon(b.ip())
}

/// `0100007F:1F90` (IPv4: one 32-bit word as the kernel holds it, in hex; port in hex) or 32 hex digits
/// (IPv6: four such words).
fn parse_addr(s: &str, v6: bool) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word =
        |i: usize| -> Option<[u8; 4]> { Some(u32::from_str_radix(ip.get(i * 8..i * 8 + 8)?, 16).ok()?.to_ne_bytes()) };
    let ip = if v6 {
        if ip.len() != 32 {
            return None;
        }
        let mut b = [0u8; 16];
        for i in 0..4 {
            b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
        }
        IpAddr::V6(Ipv6Addr::from(b))
    } else {
        if ip.len() != 8 {
            return None;
        }
        IpAddr::V4(Ipv4Addr::from(word(0)?))
    };
    Some(SocketAddr::new(ip, port))
}

/// Inodes of the sockets this process holds.
fn own_socket_inodes() -> std::io::Result<HashSet<u64>> {
    let mut out = HashSet::new();
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Ok(entry) = entry else { continue };
        let Ok(target) = std::fs::read_link(entry.path()) else { continue }; // closed meanwhile
        let t = target.to_string_lossy();
        if let Some(inode) = t.strip_prefix("socket:[").and_then(|r| r.strip_suffix(']')) {
            if let Ok(i) = inode.parse() {
                out.insert(i);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_tcp_lines_are_parsed_both_families() {
        let v4 = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
                  0: 0500007F:D431 0163007F:2384 01 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0\n\
                  1: 0500007F:D432 0163007F:2384 06 00000000:00000000 03:00000000 00000000     0        0 0 3 0\n";
        let client: SocketAddr = format!("127.0.0.5:{}", 0xD431).parse().unwrap();
        let server: SocketAddr = format!("127.0.99.1:{}", 0x2384).parse().unwrap();
        if cfg!(target_endian = "little") {
            assert_eq!(find_inode(v4, false, client, server), Some(4242));
            // a TIME_WAIT entry (inode 0) is no socket of anyone
            let tw: SocketAddr = format!("127.0.0.5:{}", 0xD432).parse().unwrap();
            assert_eq!(find_inode(v4, false, tw, server), None);
            assert_eq!(find_inode(v4, false, server, client), None);
            let v6 = "  sl  local_address                         remote_address                        st\n\
                      0: 0000000000000000FFFF00000500007F:D431 0000000000000000FFFF00000163007F:2384 01 00000000:00000000 00:00000000 00000000  1000        0 777 1 0\n";
            assert_eq!(find_inode(v6, true, client, server), Some(777));
        }
    }

    #[test]
    fn a_connection_from_this_process_passes_and_the_check_can_be_switched_off() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, peer) = l.accept().unwrap();
        assert_eq!(CallerCheck::Process.check(peer, s.local_addr().unwrap()), Ok(()));
        // an address no socket has is refused, unless the check is off
        let nobody: SocketAddr = "127.0.0.1:1".parse().unwrap();
        assert!(CallerCheck::Process.check(nobody, s.local_addr().unwrap()).is_err());
        assert_eq!(CallerCheck::None.check(nobody, s.local_addr().unwrap()), Ok(()));
        drop(c);
    }
}
