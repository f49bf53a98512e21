//! Revision logs: every instance's stdout and stderr, and the runtime's own notes about it
//! (started, exited, restarting), appended line by line to one file per revision,
//! `STATE_DIR/logs/<namespace>/<revision>.log`. This is what `sluice logs REVISION` reads.
//!
//! Each line is `<UTC time> <instance> <stream>: <text>`, e.g.
//! `2025-06-01T12:00:00.123Z hello-00001-0 stdout: listening on 41234`, where the stream is
//! `stdout`, `stderr` or `sluice` (the runtime's notes). Instances share the file; each line is
//! written with one append, so lines of different instances do not mix. Files are not rotated.

use std::io::{self, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::fs::{File, OpenOptions};
use tokio::io::{
    AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWrite, AsyncWriteExt, BufReader,
};
use tokio::sync::Mutex;

/// Longer output lines are split into pieces of this many bytes.
const MAX_LINE: usize = 16 * 1024;

/// How often [`follow`] looks for new output.
const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// The log file of a revision: `state_dir/logs/<namespace>/<revision>.log`.
///
/// Names are used as single path components: characters other than ASCII letters, digits,
/// `.`, `-` and `_` become `_`, and a name of only dots (or an empty one) is replaced by
/// underscores, so no name can leave the logs directory.
pub fn log_path(state_dir: &Path, namespace: &str, revision: &str) -> PathBuf {
    state_dir
        .join("logs")
        .join(component(namespace))
        .join(format!("{}.log", component(revision)))
}

fn component(name: &str) -> String {
    if name.chars().all(|c| c == '.') {
        return "_".repeat(name.len().max(1));
    }
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The end of a log file, as [`tail`] read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tail {
    /// The last lines (or the whole file), as bytes: apps may write anything.
    pub text: Vec<u8>,
    /// The file's length when read: where [`follow`] continues.
    pub end: u64,
}

/// Reads the last `lines` lines of a log file (all of it with `None`).
///
/// A missing file is an `io::ErrorKind::NotFound` error: the revision has not run yet (or
/// under another state directory).
pub async fn tail(path: &Path, lines: Option<usize>) -> io::Result<Tail> {
    let mut file = File::open(path).await?;
    let end = file.metadata().await?.len();
    let Some(lines) = lines else {
        let mut text = Vec::new();
        file.take(end).read_to_end(&mut text).await?;
        return Ok(Tail { text, end });
    };
    // Read backwards in chunks until the chunk holds `lines` full lines (plus the newline
    // before them) or the file's start is reached.
    if lines == 0 {
        return Ok(Tail {
            text: Vec::new(),
            end,
        });
    }
    // Read backwards in chunks until the text read holds `lines` whole lines and the newline
    // before them, or the file's start is reached.
    const CHUNK: u64 = 8192;
    let mut text: Vec<u8> = Vec::new();
    let mut pos = end;
    loop {
        let body = text.strip_suffix(b"\n").unwrap_or(&text);
        let newlines = body.iter().filter(|&&b| b == b'\n').count();
        if newlines >= lines {
            let start = nth_newline(body, newlines - lines + 1).map_or(0, |i| i + 1);
            text.drain(..start);
            return Ok(Tail { text, end });
        }
        if pos == 0 {
            return Ok(Tail { text, end });
        }
        let read = CHUNK.min(pos);
        pos -= read;
        file.seek(SeekFrom::Start(pos)).await?;
        let mut chunk = vec![0; usize::try_from(read).unwrap_or(0)];
        file.read_exact(&mut chunk).await?;
        chunk.extend_from_slice(&text);
        text = chunk;
    }
}

/// The byte offset of the `n`-th newline (1-based); `None` for `n == 0` or too few newlines.
fn nth_newline(bytes: &[u8], n: usize) -> Option<usize> {
    if n == 0 {
        return None;
    }
    bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(n - 1)
        .map(|(i, _)| i)
}

/// Copies what is appended to a log file after byte `from` to `out`, as it arrives (like
/// `tail -f`). Waits for a missing file to appear and starts over if the file shrinks.
///
/// Runs until writing to `out` fails; end it by dropping the future (e.g. in a `select!`
/// with Ctrl-C).
pub async fn follow<W: AsyncWrite + Unpin>(path: &Path, from: u64, out: &mut W) -> io::Result<()> {
    let mut offset = from;
    let mut buf = vec![0; 64 * 1024];
    loop {
        match File::open(path).await {
            Ok(mut file) => {
                let len = file.metadata().await?.len();
                if len < offset {
                    offset = 0; // truncated or replaced
                }
                if len > offset {
                    file.seek(SeekFrom::Start(offset)).await?;
                    let mut left = len - offset;
                    while left > 0 {
                        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                        let n = file.read(&mut buf[..want]).await?;
                        if n == 0 {
                            break;
                        }
                        out.write_all(&buf[..n]).await?;
                        offset += n as u64;
                        left -= n as u64;
                    }
                    out.flush().await?;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => offset = 0,
            Err(e) => return Err(e),
        }
        tokio::time::sleep(FOLLOW_POLL).await;
    }
}

/// One instance's writer into its revision's log.
#[derive(Debug, Clone)]
pub(super) struct InstanceLog {
    /// `None` when the file could not be opened: lines then go to `tracing`.
    file: Option<Arc<Mutex<File>>>,
    instance: String,
}

impl InstanceLog {
    /// Opens (appending, creating directories) the log for instance `instance`.
    pub async fn open(path: &Path, instance: &str) -> Self {
        let opened = async {
            if let Some(dir) = path.parent() {
                tokio::fs::create_dir_all(dir).await?;
            }
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .await
        }
        .await;
        let file = match opened {
            Ok(file) => Some(Arc::new(Mutex::new(file))),
            Err(error) => {
                tracing::warn!(
                    path = %path.display(),
                    %error,
                    instance,
                    "cannot open the revision log; its output goes to Sluice's own log"
                );
                None
            }
        };
        InstanceLog {
            file,
            instance: instance.to_owned(),
        }
    }

    /// Appends one line from `stream` (`stdout`, `stderr`, `sluice`).
    pub async fn line(&self, stream: &str, text: &[u8]) {
        let text = String::from_utf8_lossy(text);
        let text = text.strip_suffix('\r').unwrap_or(&text);
        let Some(file) = &self.file else {
            tracing::info!(target: "revision", instance = %self.instance, stream, "{text}");
            return;
        };
        let line = format!(
            "{} {} {stream}: {text}\n",
            timestamp(SystemTime::now()),
            self.instance
        );
        let mut file = file.lock().await;
        let written = async {
            file.write_all(line.as_bytes()).await?;
            file.flush().await
        }
        .await;
        if let Err(error) = written {
            tracing::warn!(instance = %self.instance, %error, "cannot write the revision log");
        }
    }

    /// Appends a note from the runtime itself.
    pub async fn note(&self, text: &str) {
        self.line("sluice", text.as_bytes()).await;
    }
}

/// Copies `reader` (a child's stdout or stderr) into the log, line by line, until it closes.
pub(super) async fn forward(
    reader: impl AsyncRead + Unpin,
    log: InstanceLog,
    stream: &'static str,
) {
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        let buf = match reader.fill_buf().await {
            Ok(buf) => buf,
            Err(error) => {
                tracing::debug!(%error, stream, "reading instance output failed");
                break;
            }
        };
        if buf.is_empty() {
            break;
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                line.extend_from_slice(&buf[..i]);
                reader.consume(i + 1);
                log.line(stream, &line).await;
                line.clear();
            }
            None => {
                let n = buf.len();
                line.extend_from_slice(buf);
                reader.consume(n);
                if line.len() >= MAX_LINE {
                    log.line(stream, &line).await;
                    line.clear();
                }
            }
        }
    }
    if !line.is_empty() {
        log.line(stream, &line).await;
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` in UTC.
fn timestamp(now: SystemTime) -> String {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_paths_stay_inside_the_logs_directory() {
        let dir = Path::new("/state");
        assert_eq!(
            log_path(dir, "default", "hello-00001"),
            Path::new("/state/logs/default/hello-00001.log")
        );
        assert_eq!(
            log_path(dir, "..", "../../etc/passwd"),
            Path::new("/state/logs/__/.._.._etc_passwd.log")
        );
        assert_eq!(log_path(dir, "", "."), Path::new("/state/logs/_/_.log"));
    }

    #[test]
    fn timestamps_are_utc_rfc3339() {
        assert_eq!(timestamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_251_199_123); // leap year, Feb 29
        assert_eq!(timestamp(t), "2024-02-29T23:59:59.123Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(timestamp(t), "2000-02-29T00:00:00.000Z");
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sluice-logs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[tokio::test]
    async fn tail_returns_the_last_lines() {
        let dir = temp_dir("tail");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("r.log");
        let mut content = String::new();
        for i in 0..5000 {
            content.push_str(&format!("line {i}\n"));
        }
        std::fs::write(&path, &content).unwrap();
        let all = tail(&path, None).await.unwrap();
        assert_eq!(all.text, content.as_bytes());
        assert_eq!(all.end, content.len() as u64);
        let last = tail(&path, Some(3)).await.unwrap();
        assert_eq!(last.text, b"line 4997\nline 4998\nline 4999\n");
        assert_eq!(tail(&path, Some(0)).await.unwrap().text, b"");
        assert_eq!(
            tail(&path, Some(10_000)).await.unwrap().text,
            content.as_bytes()
        );

        std::fs::write(&path, "a\nb").unwrap(); // no trailing newline
        assert_eq!(tail(&path, Some(1)).await.unwrap().text, b"b");
        assert_eq!(tail(&path, Some(2)).await.unwrap().text, b"a\nb");
        std::fs::write(&path, "").unwrap();
        assert_eq!(tail(&path, Some(2)).await.unwrap().text, b"");
        let missing = tail(&dir.join("missing.log"), Some(1)).await.unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn instance_lines_are_prefixed_and_follow_sees_them() {
        let dir = temp_dir("follow");
        let path = log_path(&dir, "ns", "rev");
        let log = InstanceLog::open(&path, "rev-0").await;
        let (mut writer, reader) = tokio::io::duplex(1024);
        let forwarder = tokio::spawn(forward(reader, log.clone(), "stdout"));
        writer.write_all(b"hello\r\nworld\npartial").await.unwrap();
        drop(writer);
        forwarder.await.unwrap();
        log.note("exited").await;

        let text = String::from_utf8(tail(&path, None).await.unwrap().text).unwrap();
        let lines: Vec<&str> = text.lines().map(|l| l.split_once(' ').unwrap().1).collect();
        assert_eq!(
            lines,
            [
                "rev-0 stdout: hello",
                "rev-0 stdout: world",
                "rev-0 stdout: partial",
                "rev-0 sluice: exited"
            ]
        );

        let start = tail(&path, Some(0)).await.unwrap().end;
        let (mut out, mut seen) = tokio::io::duplex(4096);
        let follower_path = path.clone();
        let follower = tokio::spawn(async move { follow(&follower_path, start, &mut out).await });
        log.note("more").await;
        let mut got = vec![0; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), seen.read(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert!(String::from_utf8_lossy(&got[..n]).ends_with("rev-0 sluice: more\n"));
        follower.abort();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
