//! Envoy's stderr (its log), line by line, into `tracing` (target `envoy`) at Envoy's own
//! level; its stdout (the access log: `config-kourier`'s `enable-service-access-logging`, one
//! line per request) verbatim onto Sluice's own stdout, as Kourier's gateway container prints
//! it.

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// The `--log-format` Envoy is started with: `[level][logger] message`. `tracing` adds its own
/// timestamp, so Envoy's is left out.
pub(super) const LOG_FORMAT: &str = "[%l][%n] %v";

/// Which of Envoy's output streams a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Stream {
    /// Standard output (Envoy writes little there).
    Stdout,
    /// Standard error, where Envoy's log goes.
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Envoy's log levels (spdlog's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Severity {
    Trace,
    Debug,
    Info,
    Warning,
    Error,
    /// Envoy's `critical`: logged as a `tracing` error with `critical = true`.
    Critical,
}

impl Severity {
    fn parse(level: &str) -> Option<Severity> {
        Some(match level {
            "trace" => Severity::Trace,
            "debug" => Severity::Debug,
            "info" => Severity::Info,
            "warning" | "warn" => Severity::Warning,
            "error" => Severity::Error,
            "critical" => Severity::Critical,
            _ => return None,
        })
    }
}

/// A log line split per [`LOG_FORMAT`].
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Parsed<'a> {
    pub severity: Severity,
    pub logger: &'a str,
    pub message: &'a str,
}

/// Splits `[level][logger] message`; `None` for lines in any other shape.
pub(super) fn parse_line(line: &str) -> Option<Parsed<'_>> {
    let rest = line.strip_prefix('[')?;
    let (level, rest) = rest.split_once("][")?;
    let severity = Severity::parse(level)?;
    let (logger, message) = rest.split_once(']')?;
    Some(Parsed {
        severity,
        logger,
        message: message.strip_prefix(' ').unwrap_or(message),
    })
}

/// Forwards every line of `reader` until EOF (Envoy exited) or a read error.
///
/// Lines not in Envoy's log format (a message's continuation, or output from before logging
/// is set up, e.g. a command-line error) take the previous line's level; on stderr the first
/// such line is a warning.
pub(super) async fn forward<R: AsyncRead + Unpin>(reader: R, pid: u32, stream: Stream) {
    let mut reader = BufReader::new(reader);
    let mut previous = match stream {
        Stream::Stdout => Severity::Info,
        Stream::Stderr => Severity::Warning,
    };
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) => return,
            Ok(_) => {}
            Err(error) => {
                tracing::debug!(target: "envoy", pid, stream = stream.name(), %error, "stopped reading Envoy output");
                return;
            }
        }
        if stream == Stream::Stdout {
            use std::io::Write as _;
            // One write per line, so lines from several Envoys (or threads) never interleave.
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(&buf);
            if !buf.ends_with(b"\n") {
                let _ = out.write_all(b"\n");
            }
            let _ = out.flush();
            continue;
        }
        let text = String::from_utf8_lossy(&buf);
        let line = text.trim_end_matches(['\n', '\r']);
        if line.is_empty() {
            continue;
        }
        match parse_line(line) {
            Some(parsed) => {
                previous = parsed.severity;
                emit(parsed.severity, pid, parsed.logger, parsed.message);
            }
            None => emit(previous, pid, stream.name(), line),
        }
    }
}

/// One `tracing` event; the macros need the level as a constant, hence the match.
fn emit(severity: Severity, pid: u32, logger: &str, message: &str) {
    match severity {
        Severity::Trace => tracing::trace!(target: "envoy", pid, logger, "{message}"),
        Severity::Debug => tracing::debug!(target: "envoy", pid, logger, "{message}"),
        Severity::Info => tracing::info!(target: "envoy", pid, logger, "{message}"),
        Severity::Warning => tracing::warn!(target: "envoy", pid, logger, "{message}"),
        Severity::Error => tracing::error!(target: "envoy", pid, logger, "{message}"),
        Severity::Critical => {
            tracing::error!(target: "envoy", pid, logger, critical = true, "{message}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_envoy_log_lines() {
        assert_eq!(
            parse_line("[warning][config] gRPC config stream closed: 14, no healthy upstream"),
            Some(Parsed {
                severity: Severity::Warning,
                logger: "config",
                message: "gRPC config stream closed: 14, no healthy upstream",
            })
        );
        assert_eq!(
            parse_line("[critical][main] error initializing config '/x': [a][b] c"),
            Some(Parsed {
                severity: Severity::Critical,
                logger: "main",
                message: "error initializing config '/x': [a][b] c",
            })
        );
        assert_eq!(
            parse_line("[info][admin]"),
            Some(Parsed {
                severity: Severity::Info,
                logger: "admin",
                message: "",
            })
        );
        for (level, severity) in [
            ("trace", Severity::Trace),
            ("debug", Severity::Debug),
            ("error", Severity::Error),
        ] {
            let line = format!("[{level}][main] m");
            assert_eq!(parse_line(&line).map(|p| p.severity), Some(severity));
        }
    }

    #[test]
    fn other_lines_are_not_parsed() {
        for line in [
            "PARSE ERROR: Argument: --bogus",
            "[2026-01-01 00:00:00.000][info][main] other format",
            "[loud][main] unknown level",
            "[info]main] broken",
            "",
        ] {
            assert_eq!(parse_line(line), None, "{line:?}");
        }
    }

    #[tokio::test]
    async fn forward_reads_to_eof_including_invalid_utf8() {
        let input: &[u8] = b"[info][main] a\n\xff\xfe not utf-8\n\n[error][main] b";
        // Completes (EOF) without panicking; output goes to whatever subscriber is set.
        forward(input, 1, Stream::Stderr).await;
    }
}
