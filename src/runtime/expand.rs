//! Kubernetes `$(VAR)` expansion, as the kubelet applies it to a container's `command`, `args`
//! and `env` values.
//!
//! A port of Kubernetes' `third_party/forked/golang/expansion`: `$(NAME)` becomes the value of
//! `NAME` when it is defined and stays as written when it is not; `$$` is an escaped `$`, so
//! `$$(NAME)` gives the literal text `$(NAME)`; a `$` before anything else, and an unclosed
//! `$(`, are kept as they are. Expansion is a single pass: a value that itself contains `$(…)`
//! is not expanded again.

/// Expands `$(NAME)` references in `input` with `lookup`.
pub fn expand<'a>(input: &str, lookup: impl Fn(&str) -> Option<&'a str>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let mut chars = after.chars();
        match chars.next() {
            // A `$` at the very end stays.
            None => {
                out.push('$');
                rest = after;
            }
            // `$$` is an escaped `$`.
            Some('$') => {
                out.push('$');
                rest = &after[1..];
            }
            Some('(') => match after.find(')') {
                Some(close) => {
                    let name = &after[1..close];
                    match lookup(name) {
                        Some(value) => out.push_str(value),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &after[close + 1..];
                }
                // An unclosed reference is kept as written.
                None => {
                    out.push_str("$(");
                    rest = &after[1..];
                }
            },
            // A `$` that does not start a reference is kept, with the character after it.
            Some(c) => {
                out.push('$');
                out.push(c);
                rest = &after[c.len_utf8()..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// Looks `name` up in an ordered list of variables; the last definition wins.
pub fn lookup_in<'a>(vars: &'a [(String, String)], name: &str) -> Option<&'a str> {
    vars.iter()
        .rev()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> Vec<(String, String)> {
        [
            ("PORT", "8080"),
            ("NAME", "world"),
            ("EMPTY", ""),
            ("NAME", "again"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    fn run(input: &str) -> String {
        let vars = vars();
        expand(input, |name| lookup_in(&vars, name))
    }

    /// The cases of Kubernetes' own expansion tests that apply here.
    #[test]
    fn expands_like_kubernetes() {
        let cases = [
            ("", ""),
            ("no refs", "no refs"),
            ("$(PORT)", "8080"),
            ("--port=$(PORT)", "--port=8080"),
            ("$(PORT)$(PORT)", "80808080"),
            ("$(NAME)", "again"),
            ("[$(EMPTY)]", "[]"),
            ("$(UNKNOWN)", "$(UNKNOWN)"),
            ("$(UNKNOWN) $(PORT)", "$(UNKNOWN) 8080"),
            ("$$(PORT)", "$(PORT)"),
            ("$$$(PORT)", "$8080"),
            ("$$$$(PORT)", "$$(PORT)"),
            ("$$", "$"),
            ("$", "$"),
            ("a$", "a$"),
            ("$PORT", "$PORT"),
            ("${PORT}", "${PORT}"),
            ("$(PORT", "$(PORT"),
            ("$(", "$("),
            ("$()", "$()"),
            ("$(PORT)$", "8080$"),
            ("$é$(PORT)", "$é8080"),
            ("ünï $(NAME) cödé", "ünï again cödé"),
            ("$(PORT))", "8080)"),
            ("$($(PORT))", "$($(PORT))"),
        ];
        for (input, want) in cases {
            assert_eq!(run(input), want, "input {input:?}");
        }
    }

    #[test]
    fn values_are_not_expanded_twice() {
        let vars = vec![
            ("A".to_owned(), "$(B)".to_owned()),
            ("B".to_owned(), "b".to_owned()),
        ];
        assert_eq!(expand("$(A)", |n| lookup_in(&vars, n)), "$(B)");
    }
}
