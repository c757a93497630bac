//! TLS for the TCP binds when `--certfile` is set: the certificate and key read
//! with rustls (ring provider), and a connection's TLS state over its socket,
//! driven without blocking by the event loop's reads and writes.

use std::io::{self, IoSlice, Read, Write};
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};

/// Most plaintext taken per write: bounds what rustls holds encrypted and unsent.
const WRITE_STEP: usize = 64 * 1024;

/// The server's TLS configuration from PEM files: `certfile` holds the chain
/// (server certificate first) and, without `keyfile`, the key. Errors are one
/// line naming the file and the cause.
pub fn load(certfile: &Path, keyfile: Option<&Path>) -> Result<Arc<ServerConfig>, String> {
    let cert_pem = read(certfile, "certfile")?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("certfile {}: {}", certfile.display(), pem_error(&e)))?;
    if certs.is_empty() {
        return Err(format!(
            "certfile {}: no PEM certificate (BEGIN CERTIFICATE) in it",
            certfile.display()
        ));
    }
    let (key_path, key_pem, setting) = match keyfile {
        Some(k) => (k, read(k, "keyfile")?, "keyfile"),
        None => (certfile, cert_pem, "certfile"),
    };
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| match e {
        pem::Error::NoItemsFound => format!(
            "{setting} {}: no PEM private key in it{}",
            key_path.display(),
            if keyfile.is_none() {
                " (name the key with --keyfile)"
            } else {
                ""
            }
        ),
        e => format!("{setting} {}: {}", key_path.display(), pem_error(&e)),
    })?;
    // ring builds with gcc alone (aws-lc-rs needs cmake); rustls marks it
    // deprecated for having no post-quantum key exchange, which it then lacks.
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("certfile {}: {e}", certfile.display()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => format!(
                "{setting} {}: the private key does not match the certificate in {}",
                key_path.display(),
                certfile.display()
            ),
            e => format!("{setting} {}: unusable key: {e}", key_path.display()),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

fn read(path: &Path, setting: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{setting} {}: cannot read it: {e}", path.display()))
}

fn pem_error(e: &pem::Error) -> String {
    match e {
        pem::Error::Io(e) => format!("cannot read it: {e}"),
        e => format!("not valid PEM: {e:?}"),
    }
}

/// A TLS connection over a non-blocking TCP socket.
pub struct TlsStream {
    pub tcp: mio::net::TcpStream,
    conn: ServerConnection,
}

impl TlsStream {
    pub fn new(tcp: mio::net::TcpStream, config: &Arc<ServerConfig>) -> io::Result<TlsStream> {
        let conn = ServerConnection::new(config.clone()).map_err(io::Error::other)?;
        Ok(TlsStream { tcp, conn })
    }

    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Send the encrypted output rustls holds; `WouldBlock` while the socket is full.
    fn write_pending(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            match self.conn.write_tls(&mut self.tcp) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Send the rest, as far as the socket takes it now.
    fn write_some_pending(&mut self) -> io::Result<()> {
        match self.write_pending() {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            r => r,
        }
    }

    /// Our close_notify, then the TCP shutdown.
    pub fn shutdown(&mut self, how: std::net::Shutdown) -> io::Result<()> {
        if how != std::net::Shutdown::Read {
            self.conn.send_close_notify();
            let _ = self.write_some_pending();
        }
        self.tcp.shutdown(how)
    }

    /// Take `n` bytes of plaintext (0 meaning the socket is full), then send
    /// what the socket takes.
    fn took(&mut self, n: usize) -> io::Result<usize> {
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.write_some_pending()?;
        Ok(n)
    }
}

/// Fills `buf` as far as the socket has data: a short read means the socket
/// said WouldBlock (or ended), as for a plain socket, so the edge-triggered
/// loop need not read again. 0 is the end (close_notify, or the TCP end
/// without it: the HTTP framing tells a cut request).
impl Read for TlsStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut got = 0;
        loop {
            match self.conn.reader().read(&mut buf[got..]) {
                Ok(0) => return Ok(got),
                Ok(n) => {
                    got += n;
                    if got == buf.len() {
                        return Ok(got);
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(got),
                Err(e) => return Err(e),
            }
            match self.conn.read_tls(&mut self.tcp) {
                Ok(0) => return Ok(got),
                Ok(_) => {
                    let processed = self.conn.process_new_packets();
                    // Handshake messages, or the alert that says why not.
                    let sent = self.write_some_pending();
                    if let Err(e) = processed {
                        return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                    }
                    sent?;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) if got > 0 => return Ok(got),
                Err(e) => return Err(e),
            }
        }
    }
}

/// Plaintext in, encrypted out as far as the socket takes it; while earlier
/// output still waits for the socket, no more is taken (`WouldBlock`).
/// `flush` sends what is still held: `WouldBlock` until it is all out.
impl Write for TlsStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        self.write_pending()?;
        let n = self
            .conn
            .writer()
            .write(&buf[..buf.len().min(WRITE_STEP)])?;
        self.took(n)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.write_pending()?;
        let mut n = 0;
        let mut writer = self.conn.writer();
        for b in bufs {
            if n >= WRITE_STEP {
                break;
            }
            let k = writer.write(&b[..b.len().min(WRITE_STEP - n)])?;
            n += k;
            if k < b.len() {
                break;
            }
        }
        if n == 0 && bufs.iter().all(|b| b.is_empty()) {
            return Ok(0);
        }
        self.took(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_pending()
    }
}
