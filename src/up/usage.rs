//! CPU and memory of revision instances, read from `/proc`, for the HPA class under
//! `sluice up`.
//!
//! An instance is a process group (the runtime starts each one as a group leader), so its
//! usage is that of every process in the group: `utime + stime` (clock ticks) and resident
//! pages from `/proc/<pid>/stat`. One scan of `/proc` per sample covers all instances. CPU is
//! a rate: the ticks used since the instance's previous sample over the time between, in
//! percent of one core (100 = one core busy); an instance's first sample only sets the mark.

use std::collections::HashMap;
use std::time::Duration;

use nix::unistd::{SysconfVar, sysconf};
use tokio::time::Instant;

/// One process group's totals at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct GroupTotals {
    ticks: u64,
    rss_pages: u64,
}

/// One instance's usage.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InstanceUsage {
    /// CPU in percent of one core over the last interval.
    pub cpu_percent: f64,
    /// Resident memory in MiB.
    pub memory_mib: f64,
}

/// Samples process groups' CPU and memory; remembers each group's last CPU mark.
#[derive(Debug)]
pub struct UsageSampler {
    ticks_per_second: f64,
    page_bytes: f64,
    marks: HashMap<u32, (Instant, u64)>,
}

impl Default for UsageSampler {
    fn default() -> Self {
        let tck = sysconf(SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100);
        let page = sysconf(SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .unwrap_or(4096);
        UsageSampler {
            ticks_per_second: tck as f64,
            page_bytes: page as f64,
            marks: HashMap::new(),
        }
    }
}

impl UsageSampler {
    /// The usage of each process group led by one of `leaders` (instance pids), at `now`.
    /// Groups seen for the first time (no CPU mark yet) and groups that are gone are left out.
    pub fn sample(&mut self, now: Instant, leaders: &[u32]) -> HashMap<u32, InstanceUsage> {
        if leaders.is_empty() {
            self.marks.clear();
            return HashMap::new();
        }
        let totals = scan_groups(leaders);
        let mut out = HashMap::new();
        for (&leader, t) in &totals {
            let previous = self.marks.insert(leader, (now, t.ticks));
            let Some((at, ticks)) = previous else {
                continue;
            };
            let elapsed = now.saturating_duration_since(at);
            if elapsed < Duration::from_millis(100) {
                // Too short to measure: keep the older mark.
                self.marks.insert(leader, (at, ticks));
                continue;
            }
            // Members that exit take their ticks with them: never negative.
            let used = t.ticks.saturating_sub(ticks) as f64 / self.ticks_per_second;
            out.insert(
                leader,
                InstanceUsage {
                    cpu_percent: 100.0 * used / elapsed.as_secs_f64(),
                    memory_mib: t.rss_pages as f64 * self.page_bytes / (1024.0 * 1024.0),
                },
            );
        }
        self.marks.retain(|leader, _| totals.contains_key(leader));
        out
    }
}

/// Sums every process of `/proc` into its process group, for the groups of `leaders`.
fn scan_groups(leaders: &[u32]) -> HashMap<u32, GroupTotals> {
    let mut totals: HashMap<u32, GroupTotals> = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return totals;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        // A process may exit between listing and reading: skip it.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((pgrp, ticks, rss_pages)) = parse_stat(&stat) else {
            continue;
        };
        if leaders.contains(&pgrp) {
            let t = totals.entry(pgrp).or_default();
            t.ticks += ticks;
            t.rss_pages += rss_pages;
        }
    }
    totals
}

/// `(pgrp, utime + stime, rss)` from a `/proc/<pid>/stat` line. The command name (field 2)
/// may hold spaces and parentheses: fields are counted from its closing parenthesis.
fn parse_stat(stat: &str) -> Option<(u32, u64, u64)> {
    let after = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Field 3 (state) is fields[0]; pgrp is field 5, utime 14, stime 15, rss 24.
    let field = |n: usize| fields.get(n - 3).copied();
    let pgrp = field(5)?.parse().ok()?;
    let utime: u64 = field(14)?.parse().ok()?;
    let stime: u64 = field(15)?.parse().ok()?;
    let rss: i64 = field(24)?.parse().ok()?;
    Some((pgrp, utime + stime, u64::try_from(rss).unwrap_or(0)))
}

/// The niceness of a process (field 19 of its stat line), for status and tests.
pub fn niceness(pid: u32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19 - 3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let line = "4242 (my (odd) app) S 1 4242 4242 0 -1 4194304 100 0 0 0 \
                    250 50 0 0 30 10 2 0 12345 104857600 2560 18446744073709551615 \
                    0 0 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        assert_eq!(parse_stat(line), Some((4242, 300, 2560)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 1"), None);
    }

    #[tokio::test]
    async fn a_busy_process_group_shows_cpu_and_memory() {
        let mut child = tokio::process::Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("sh");
        let pid = child.id().expect("running");
        let mut sampler = UsageSampler::default();
        let start = Instant::now();
        assert!(
            sampler.sample(start, &[pid]).is_empty(),
            "the first sample only marks"
        );
        let mut seen = None;
        // Poll (bounded) until a second sample has an interval to measure.
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if let Some(u) = sampler.sample(Instant::now(), &[pid]).get(&pid) {
                seen = Some(*u);
                break;
            }
        }
        let _ = child.kill().await;
        let u = seen.expect("a measurement");
        assert!(u.cpu_percent > 10.0, "a spinning shell uses CPU: {u:?}");
        assert!(u.memory_mib > 0.1, "{u:?}");
        assert_eq!(niceness(std::process::id()).map(|n| n >= 0), Some(true));
    }
}
