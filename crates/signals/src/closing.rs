//! How a stopping server stops listening without losing a connection.
//!
//! `shutdown(2)` or the last `close(2)` of a listening socket resets every
//! connection in its accept queue: connections the kernel completed, whose
//! clients may well have sent a request, which then never learn whether it ran.
//! So a stop does not begin with either. The master attaches a socket filter
//! that drops new connection attempts (a SYN without ACK) and nothing else: new
//! clients are not let in (they retransmit their SYN, and are refused once the
//! socket is shut down, or served by the next server on the port), while the
//! connections already queued, and handshakes already under way, still arrive.
//! The workers see the filter (the socket itself says the server is stopping,
//! where a worker retired by a reload must instead leave the queue to its
//! peers) and keep accepting; the master shuts the socket down once its queue
//! stays empty.
//!
//! A unix socket is simpler: shut for reading, it refuses `connect(2)` at once
//! and still hands out what is queued, which can then only shrink; the filter
//! (which never runs on it) is attached all the same, as the workers' sign.
#![allow(unsafe_code)]
#![deny(clippy::undocumented_unsafe_blocks)]

use std::io;
use std::os::fd::{AsFd, AsRawFd};

use socket2::{SockFilter, SockRef};

use crate::listening::Listening;

const BPF_LD_B_ABS: u16 = 0x30;
const BPF_ALU_AND_K: u16 = 0x54;
const BPF_JMP_JEQ_K: u16 = 0x15;
const BPF_RET_K: u16 = 0x06;
const TCP_FLAGS_OFFSET: u32 = 13;
const SYN: u32 = 0x02;
const ACK: u32 = 0x10;

/// The filter sees each segment from its TCP header on: drop a SYN that is not
/// also an ACK, keep everything else whole.
const DROP_NEW_CONNECTIONS: [SockFilter; 5] = [
    SockFilter::new(BPF_LD_B_ABS, 0, 0, TCP_FLAGS_OFFSET),
    SockFilter::new(BPF_ALU_AND_K, 0, 0, SYN | ACK),
    SockFilter::new(BPF_JMP_JEQ_K, 0, 1, SYN),
    SockFilter::new(BPF_RET_K, 0, 0, 0),
    SockFilter::new(BPF_RET_K, 0, 0, u32::MAX),
];

/// Master: from now on the kernel completes no new connection on `socket` (for
/// every process sharing it); those it already completed stay in the queue.
pub fn refuse_new_connections(socket: &Listening) -> io::Result<()> {
    let sock = SockRef::from(socket);
    sock.attach_filter(&DROP_NEW_CONNECTIONS)?;
    if socket.is_unix() {
        sock.shutdown(std::net::Shutdown::Read)?;
    }
    Ok(())
}

/// Undo [`refuse_new_connections`]: for a socket inherited from a process that
/// may have been stopping when it handed it over.
pub fn admit_new_connections(socket: &impl AsFd) {
    // ENOENT (no filter attached) is the usual answer.
    let _ = SockRef::from(socket).detach_filter();
}

/// Worker: whether the server is stopping and `socket`'s queue is to be
/// drained, rather than left to other workers.
pub fn refusing_new_connections(socket: &impl AsFd) -> bool {
    attached_filter_len(socket.as_fd().as_raw_fd()) == Some(DROP_NEW_CONNECTIONS.len())
}

/// Connections the kernel completed that nobody has accepted yet.
pub fn queued_connections(socket: &impl AsFd) -> io::Result<u32> {
    tcp_info(socket.as_fd().as_raw_fd()).map(|info| info.tcpi_unacked)
}

/// A listening TCP socket's accept queue: (connections waiting to be accepted,
/// the most it holds: the backlog as the kernel applies it).
pub fn accept_queue(socket: &impl AsFd) -> io::Result<(u32, u32)> {
    tcp_info(socket.as_fd().as_raw_fd()).map(|info| (info.tcpi_unacked, info.tcpi_sacked))
}

/// Linux's `SO_GET_FILTER` (= `SO_ATTACH_FILTER`), not exported by libc here.
const SO_GET_FILTER: libc::c_int = 26;

/// The number of instructions of the filter attached to `fd`, 0 if none.
fn attached_filter_len(fd: libc::c_int) -> Option<usize> {
    // A zero length asks only for the instruction count, returned in `len`.
    let mut len: libc::socklen_t = 0;
    // SAFETY: with a zero length the kernel writes nothing through the null
    // buffer; it only stores the count in `len`, which outlives the call.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            SO_GET_FILTER,
            std::ptr::null_mut(),
            &mut len,
        )
    };
    (rc == 0).then_some(len as usize)
}

/// `TCP_INFO`; for a listening socket, `tcpi_unacked` is its accept queue's length.
fn tcp_info(fd: libc::c_int) -> io::Result<libc::tcp_info> {
    // SAFETY: tcp_info is plain integers, for which all zeroes is valid.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `info`, which is that
    // large and outlives the call.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(info)
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::Duration;

    #[test]
    fn queued_connections_survive_and_new_ones_are_not_let_in() {
        let listener = Listening::Tcp(TcpListener::bind("127.0.0.1:0").unwrap());
        let Ok(crate::listening::ListenAddr::Tcp(addr)) = listener.local_addr() else {
            unreachable!()
        };
        let Listening::Tcp(tcp) = &listener else {
            unreachable!()
        };
        assert!(!refusing_new_connections(&listener));
        let mut queued = TcpStream::connect(addr).unwrap();
        queued.write_all(b"hello").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(queued_connections(&listener).unwrap(), 1);
        // The limit is the backlog std listened with, as the kernel capped it.
        let (queued_now, limit) = accept_queue(&listener).unwrap();
        assert_eq!(queued_now, 1);
        assert!(limit >= 1, "{limit}");

        refuse_new_connections(&listener).unwrap();
        assert!(refusing_new_connections(&listener));
        let late = TcpStream::connect_timeout(&addr, Duration::from_millis(300));
        assert!(late.is_err(), "a SYN after the filter is dropped");

        let (mut accepted, _) = tcp.accept().unwrap();
        let mut buf = [0u8; 5];
        accepted.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        assert_eq!(queued_connections(&listener).unwrap(), 0);

        admit_new_connections(&listener);
        assert!(!refusing_new_connections(&listener));
        TcpStream::connect_timeout(&addr, Duration::from_secs(2)).unwrap();
    }

    #[test]
    fn a_unix_socket_refuses_at_once_and_hands_out_its_queue() {
        use std::os::unix::net::{UnixListener, UnixStream};
        let dir = std::env::temp_dir().join(format!("closing-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let listener = Listening::Unix(UnixListener::bind(&path).unwrap());
        let mut queued = UnixStream::connect(&path).unwrap();
        queued.write_all(b"hi").unwrap();
        refuse_new_connections(&listener).unwrap();
        assert!(refusing_new_connections(&listener));
        let late = UnixStream::connect(&path).unwrap_err();
        assert_eq!(late.kind(), std::io::ErrorKind::ConnectionRefused);
        let Listening::Unix(unix) = &listener else {
            unreachable!()
        };
        unix.set_nonblocking(true).unwrap();
        let (mut accepted, _) = unix.accept().unwrap();
        let mut buf = [0u8; 2];
        accepted.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hi");
        assert_eq!(
            unix.accept().unwrap_err().kind(),
            std::io::ErrorKind::WouldBlock
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
