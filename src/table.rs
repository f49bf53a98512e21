//! Plain-text tables and human durations for CLI output (`kubectl get` style:
//! upper-case headers, left-aligned columns, three spaces between them, no
//! trailing blanks).

use std::fmt::Write as _;
use std::time::Duration;

/// Gap between columns.
const GAP: &str = "   ";

/// A table built row by row, rendered with every column as wide as its
/// widest cell.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new<I, S>(headers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row. Missing cells render empty; extra cells are kept and
    /// widen the table.
    pub fn row<I, S>(&mut self, cells: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.rows.push(cells.into_iter().map(Into::into).collect());
    }

    /// Number of rows (headers excluded).
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether no row was added.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The table as lines of text, each ending in a newline.
    pub fn render(&self) -> String {
        let columns = self
            .rows
            .iter()
            .map(Vec::len)
            .chain([self.headers.len()])
            .max()
            .unwrap_or(0);
        let mut widths = vec![0; columns];
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            for (w, cell) in widths.iter_mut().zip(line) {
                *w = (*w).max(width(cell));
            }
        }
        let mut out = String::new();
        for line in std::iter::once(&self.headers).chain(&self.rows) {
            let mut text = String::new();
            for (i, w) in widths.iter().enumerate() {
                let cell = line.get(i).map(String::as_str).unwrap_or("");
                if i > 0 {
                    text.push_str(GAP);
                }
                text.push_str(cell);
                text.extend(std::iter::repeat_n(' ', w - width(cell)));
            }
            out.push_str(text.trim_end());
            out.push('\n');
        }
        out
    }
}

impl std::fmt::Display for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.render())
    }
}

/// Display width of a cell: one column per character (Sluice's own output is
/// ASCII; names from users may not be, and are rarely wide).
fn width(s: &str) -> usize {
    s.chars().count()
}

/// A duration as an age, two units at most, the way `kubectl` prints them:
/// `850ms`, `42s`, `3m12s`, `5h7m`, `2d4h`.
pub fn age(d: Duration) -> String {
    let s = d.as_secs();
    let mut out = String::new();
    let _ = match s {
        0 => write!(out, "{}ms", d.subsec_millis()),
        1..60 => write!(out, "{s}s"),
        60..3600 => write!(out, "{}m{}s", s / 60, s % 60),
        3600..86400 => write!(out, "{}h{}m", s / 3600, s % 3600 / 60),
        _ => write!(out, "{}d{}h", s / 86400, s % 86400 / 3600),
    };
    out
}

/// A short latency: `850µs`, `3.2ms`, `1.25s`.
pub fn latency(d: Duration) -> String {
    let us = d.as_micros();
    if us < 1000 {
        format!("{us}µs")
    } else if us < 1_000_000 {
        format!("{:.1}ms", us as f64 / 1000.0)
    } else {
        format!("{:.2}s", d.as_secs_f64())
    }
}

/// A byte count: `512B`, `1.5KiB`, `3.0MiB`.
pub fn bytes(n: u64) -> String {
    const KIB: f64 = 1024.0;
    let f = n as f64;
    if n < 1024 {
        format!("{n}B")
    } else if f < KIB * KIB {
        format!("{:.1}KiB", f / KIB)
    } else {
        format!("{:.1}MiB", f / (KIB * KIB))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_on_the_widest_cell() {
        let mut t = Table::new(["NAME", "VERSION", "STATE"]);
        t.row(["a", "v1", "ACKED"]);
        t.row(["longer-name", "v12", "NACKED"]);
        assert_eq!(
            t.render(),
            "NAME          VERSION   STATE\n\
             a             v1        ACKED\n\
             longer-name   v12       NACKED\n"
        );
    }

    #[test]
    fn no_trailing_blanks_and_missing_cells_render_empty() {
        let mut t = Table::new(["A", "B", "C"]);
        t.row(["x"]);
        t.row(["y", "", "zzzz"]);
        let out = t.render();
        assert!(out.lines().all(|l| l == l.trim_end()), "{out:?}");
        assert_eq!(out, "A   B   C\nx\ny       zzzz\n");
    }

    #[test]
    fn non_ascii_cells_count_characters() {
        let mut t = Table::new(["N", "X"]);
        t.row(["héllo", "1"]);
        t.row(["a", "2"]);
        assert_eq!(t.render(), "N       X\nhéllo   1\na       2\n");
    }

    #[test]
    fn ages_use_two_units_at_most() {
        assert_eq!(age(Duration::from_millis(850)), "850ms");
        assert_eq!(age(Duration::from_secs(42)), "42s");
        assert_eq!(age(Duration::from_secs(3 * 60 + 12)), "3m12s");
        assert_eq!(age(Duration::from_secs(60)), "1m0s");
        assert_eq!(age(Duration::from_secs(5 * 3600 + 7 * 60 + 59)), "5h7m");
        assert_eq!(age(Duration::from_secs(2 * 86400 + 4 * 3600 + 1)), "2d4h");
    }

    #[test]
    fn latencies_and_sizes_are_short() {
        assert_eq!(latency(Duration::from_micros(850)), "850µs");
        assert_eq!(latency(Duration::from_micros(3240)), "3.2ms");
        assert_eq!(latency(Duration::from_millis(1250)), "1.25s");
        assert_eq!(bytes(512), "512B");
        assert_eq!(bytes(1536), "1.5KiB");
        assert_eq!(bytes(3 << 20), "3.0MiB");
    }
}
