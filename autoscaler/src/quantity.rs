//! Kubernetes resource quantities (`250m`, `0.5`, `1Gi`, `128M`, `1e3`), as
//! `k8s.io/apimachinery/pkg/api/resource` reads them: a decimal number with an optional
//! binary-SI (`Ki` … `Ei`), decimal-SI (`n`, `u`, `m`, `k`, `M` … `E`) or exponent (`e3`)
//! suffix. Only non-negative values are read here (requests cannot be negative).

/// The quantity in whole units, rounded up (`1.5Ki` → 1536, `0.1` → 1); `None` when invalid.
pub fn units(text: &str) -> Option<u64> {
    scaled(text, 1.0)
}

/// The quantity in thousandths, rounded up (CPU: `250m` → 250, `0.5` → 500).
pub fn millis(text: &str) -> Option<u64> {
    scaled(text, 1000.0)
}

fn scaled(text: &str, by: f64) -> Option<u64> {
    let v = value(text)? * by;
    // Beyond what an i64 quantity can hold: invalid.
    (v.is_finite() && v < 9.2e18).then(|| v.ceil() as u64)
}

fn value(text: &str) -> Option<f64> {
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number = number.strip_prefix('+').unwrap_or(number);
    let digits_ok = !number.is_empty()
        && number != "."
        && number.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && number.bytes().filter(|b| *b == b'.').count() <= 1;
    if !digits_ok {
        return None;
    }
    let n: f64 = number.parse().ok()?;
    let multiplier = match suffix {
        "" => 1.0,
        "Ki" => 1024f64,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        s => {
            let exp = s.strip_prefix(['e', 'E'])?;
            let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            10f64.powi(exp.parse::<i32>().ok()?)
        }
    };
    Some(n * multiplier)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_in_millicores() {
        assert_eq!(millis("250m"), Some(250));
        assert_eq!(millis("0.5"), Some(500));
        assert_eq!(millis("2"), Some(2000));
        assert_eq!(millis("1e-1"), Some(100));
        assert_eq!(millis("100u"), Some(1), "rounded up");
    }

    #[test]
    fn memory_in_bytes() {
        assert_eq!(units("128Mi"), Some(128 << 20));
        assert_eq!(units("1G"), Some(1_000_000_000));
        assert_eq!(units("1.5Ki"), Some(1536));
        assert_eq!(units("1e3"), Some(1000));
        assert_eq!(units("+7"), Some(7));
    }

    #[test]
    fn garbage_is_refused() {
        for bad in [
            "", "m", "-1", "1.2.3", "12MB", "1e", "1x", "ten", ".", "1E+", "9e30",
        ] {
            assert_eq!(units(bad), None, "{bad:?}");
        }
    }
}
