//! Readiness probes against one instance: a TCP connect, or an HTTP `GET` answered with a 2xx
//! or 3xx status, as the kubelet's probes.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::spec::ReadinessProbe;

/// What to probe for one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    /// A TCP connect.
    Tcp(SocketAddr),
    /// An HTTP/1.1 `GET path`.
    Http {
        /// Where to connect.
        addr: SocketAddr,
        /// The request path, starting with `/`.
        path: String,
    },
}

impl Target {
    /// The target for an instance listening on `port` (see [`ReadinessProbe`] for ports).
    pub fn new(probe: &ReadinessProbe, container_port: u16, port: u16) -> Target {
        let addr = |probe_port: Option<u16>| {
            let port = match probe_port {
                Some(p) if p != container_port && p != 0 => p,
                _ => port,
            };
            SocketAddr::from((Ipv4Addr::LOCALHOST, port))
        };
        match probe {
            ReadinessProbe::Default => Target::Tcp(addr(None)),
            ReadinessProbe::TcpSocket { port } => Target::Tcp(addr(*port)),
            ReadinessProbe::HttpGet { path, port } => Target::Http {
                addr: addr(*port),
                path: if path.starts_with('/') {
                    path.clone()
                } else {
                    format!("/{path}")
                },
            },
        }
    }

    /// Probes once; `true` when the instance is ready. Gives up after `timeout`.
    pub async fn check(&self, timeout: Duration) -> bool {
        tokio::time::timeout(timeout, self.check_inner())
            .await
            .unwrap_or(false)
    }

    async fn check_inner(&self) -> bool {
        match self {
            Target::Tcp(addr) => TcpStream::connect(addr).await.is_ok(),
            Target::Http { addr, path } => http_get(*addr, path)
                .await
                .is_some_and(|status| (200..400).contains(&status)),
        }
    }
}

/// Sends `GET path` and returns the response's status code.
async fn http_get(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).await.ok()?;
    // The path comes from the revision's YAML: keep it on the request line.
    let path: String = path
        .chars()
        .filter(|c| !c.is_control() && *c != ' ')
        .collect();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: kube-probe/sluice\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.contains(&b'\n') && head.len() < 1024 {
        let n = stream.read(&mut buf).await.ok()?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    parse_status(&head)
}

/// The status code of an HTTP/1.x status line: `HTTP/1.1 200 OK`.
fn parse_status(head: &[u8]) -> Option<u16> {
    let line = head.split(|&b| b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_ascii_whitespace();
    if !parts.next()?.starts_with("HTTP/1.") {
        return None;
    }
    let code = parts.next()?;
    if code.len() != 3 {
        return None;
    }
    code.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[test]
    fn targets_use_the_instance_port_unless_another_is_named() {
        let tcp = |port| Target::Tcp(SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
        assert_eq!(Target::new(&ReadinessProbe::Default, 8080, 4000), tcp(4000));
        let on = |port| ReadinessProbe::TcpSocket { port };
        assert_eq!(Target::new(&on(None), 8080, 4000), tcp(4000));
        assert_eq!(Target::new(&on(Some(8080)), 8080, 4000), tcp(4000));
        assert_eq!(Target::new(&on(Some(9000)), 8080, 4000), tcp(9000));
        let http = ReadinessProbe::HttpGet {
            path: "healthz".into(),
            port: None,
        };
        assert_eq!(
            Target::new(&http, 8080, 4000),
            Target::Http {
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 4000)),
                path: "/healthz".into()
            }
        );
    }

    #[test]
    fn status_lines_parse() {
        assert_eq!(parse_status(b"HTTP/1.1 200 OK\r\n"), Some(200));
        assert_eq!(
            parse_status(b"HTTP/1.0 302 Found\r\nLocation: /\r\n"),
            Some(302)
        );
        assert_eq!(parse_status(b"HTTP/1.1 503\r\n"), Some(503));
        assert_eq!(parse_status(b"SSH-2.0-OpenSSH\r\n"), None);
        assert_eq!(parse_status(b"HTTP/1.1 2000 OK\r\n"), None);
        assert_eq!(parse_status(b""), None);
        assert_eq!(parse_status(&[0xff, 0xfe]), None);
    }

    /// A server that answers every connection with `response` once.
    async fn serve(response: &'static str) -> SocketAddr {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = [0u8; 1024];
                let _ = conn.read(&mut buf).await;
                let _ = conn.write_all(response.as_bytes()).await;
            }
        });
        addr
    }

    #[tokio::test]
    async fn http_probes_accept_2xx_and_3xx_only() {
        let t = Duration::from_secs(2);
        let get = |addr| Target::Http {
            addr,
            path: "/ready".into(),
        };
        let ok = serve("HTTP/1.1 204 No Content\r\n\r\n").await;
        assert!(get(ok).check(t).await);
        let moved = serve("HTTP/1.1 301 Moved\r\nLocation: /x\r\n\r\n").await;
        assert!(get(moved).check(t).await);
        let unavailable = serve("HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
        assert!(!get(unavailable).check(t).await);
        let garbage = serve("hello\n").await;
        assert!(!get(garbage).check(t).await);
        assert!(Target::Tcp(garbage).check(t).await);
    }

    #[tokio::test]
    async fn closed_ports_and_silent_servers_fail() {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let silent = listener.local_addr().unwrap();
        let target = Target::Http {
            addr: silent,
            path: "/".into(),
        };
        // Accepted by the backlog, never answered: the timeout decides.
        assert!(!target.check(Duration::from_millis(200)).await);
        drop(listener);
        assert!(!Target::Tcp(silent).check(Duration::from_secs(1)).await);
    }
}
