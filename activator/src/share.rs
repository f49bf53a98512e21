//! Several activators, one `containerConcurrency`: which pods of a Revision this activator
//! sends to, and how many requests it may have on each.
//!
//! Every activator holds the requests it receives within the capacity it is given, and none
//! knows what the others hold. So the Revision's capacity is split among the activators in
//! its path, the way upstream's throttler does (`assignSlice`, `numActivators`), with one
//! difference where upstream relies on the queue-proxy to hold the excess:
//!
//! - **at least as many pods as activators**: each activator gets its own slice of the pods
//!   (sorted by address; the remainder goes one each to the first activators), each pod with
//!   its whole `containerConcurrency`, so every pod has exactly one activator;
//! - **more activators than pods**: activator `i` uses pod `i mod pods`, and the activators
//!   sharing a pod split its `containerConcurrency` among themselves (upstream gives each of
//!   them the whole of it, and lets the queue-proxy queue the rest).
//!
//! `sluice autoscaler --kube` puts at most `pods × containerConcurrency` activators in a
//! Revision's path, so each has at least one request's room and the shares over all
//! activators add up to exactly `containerConcurrency` on every pod. While views disagree
//! (an activator just taken out of the path still finishing the requests it holds, or a pod
//! gone before the autoscaler narrowed the path) a share may round to nothing; the activator
//! then still gets one request's room on its pod rather than failing what it holds, so for
//! that moment the pod may hold one more per such activator. Every
//! activator computes its own from the same inputs (the Revision's ready pods and the
//! activators its public EndpointSlice names), so no coordination is needed beyond the
//! Kubernetes API. While those inputs change (a pod or an activator comes or goes), an
//! activator's old and new shares can overlap for as long as its requests already in flight
//! on a pod last.

use std::net::{IpAddr, SocketAddr};

/// The pods this activator (`me`) sends to, each with the most requests it may have on it at
/// once (0 = unlimited, when `container_concurrency` is 0).
///
/// `activators` are the activators in the Revision's path; `me` is counted among them even
/// when missing (a stray request during a change gets a share, not the whole pod). Order and
/// duplicates of either list do not matter.
pub fn assign(
    pods: &[SocketAddr],
    container_concurrency: u32,
    activators: &[IpAddr],
    me: IpAddr,
) -> Vec<(SocketAddr, u32)> {
    let mut pods = pods.to_vec();
    pods.sort_unstable();
    pods.dedup();
    let mut activators = activators.to_vec();
    activators.push(me);
    activators.sort_unstable();
    activators.dedup();
    let (n, p) = (activators.len(), pods.len());
    if container_concurrency == 0 || n <= 1 || p == 0 {
        return pods
            .into_iter()
            .map(|pod| (pod, container_concurrency))
            .collect();
    }
    let i = activators.iter().position(|a| *a == me).unwrap_or(0);
    if n <= p {
        let pace = p / n;
        let remainder = p % n;
        let mut mine: Vec<SocketAddr> = pods[i * pace..(i + 1) * pace].to_vec();
        if i < remainder {
            mine.push(pods[p - remainder + i]);
        }
        return mine
            .into_iter()
            .map(|pod| (pod, container_concurrency))
            .collect();
    }
    let pod = i % p;
    let sharers = u32::try_from((n - pod).div_ceil(p)).unwrap_or(u32::MAX);
    let rank = u32::try_from(i / p).unwrap_or(u32::MAX);
    let share = container_concurrency / sharers + u32::from(rank < container_concurrency % sharers);
    vec![(pods[pod], share.max(1))]
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn pods(n: u8) -> Vec<SocketAddr> {
        (0..n)
            .map(|i| SocketAddr::from(([10, 0, 1, i], 8080)))
            .collect()
    }

    fn activators(n: u8) -> Vec<IpAddr> {
        (0..n).map(|i| IpAddr::from([10, 0, 9, i])).collect()
    }

    #[test]
    fn every_pod_gets_exactly_its_concurrency_over_all_activators() {
        for n in 1..=7u8 {
            for p in 1..=9u8 {
                for cc in 1..=6u32 {
                    if u32::from(n) > u32::from(p) * cc {
                        continue; // more activators than the autoscaler puts in the path
                    }
                    let (pods, acts) = (pods(p), activators(n));
                    let mut total: BTreeMap<SocketAddr, u32> = BTreeMap::new();
                    for me in &acts {
                        for (pod, share) in assign(&pods, cc, &acts, *me) {
                            assert!(share > 0, "a pod given with no capacity");
                            *total.entry(pod).or_default() += share;
                        }
                    }
                    for pod in &pods {
                        assert_eq!(
                            total.get(pod).copied(),
                            Some(cc),
                            "{n} activators, {p} pods, cc {cc}: {pod} gets {total:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn enough_pods_split_into_slices_with_the_remainder_to_the_first() {
        let (pods, acts) = (pods(5), activators(2));
        let mine = |a: IpAddr| -> Vec<SocketAddr> {
            assign(&pods, 3, &acts, a)
                .into_iter()
                .map(|(p, c)| {
                    assert_eq!(c, 3, "a pod of one's own has its whole cc");
                    p
                })
                .collect()
        };
        assert_eq!(mine(acts[0]), vec![pods[0], pods[1], pods[4]]);
        assert_eq!(mine(acts[1]), vec![pods[2], pods[3]]);
    }

    #[test]
    fn activators_sharing_a_pod_split_its_concurrency() {
        let (pods, acts) = (pods(1), activators(3));
        let shares: Vec<_> = acts.iter().map(|a| assign(&pods, 5, &acts, *a)).collect();
        assert_eq!(shares[0], vec![(pods[0], 2)]);
        assert_eq!(shares[1], vec![(pods[0], 2)]);
        assert_eq!(shares[2], vec![(pods[0], 1)]);
        // cc 1 over 2 activators (views disagree: the autoscaler puts only one in the path):
        // each keeps one request's room rather than failing what it holds.
        let acts = activators(2);
        assert_eq!(assign(&pods, 1, &acts, acts[0]), vec![(pods[0], 1)]);
        assert_eq!(assign(&pods, 1, &acts, acts[1]), vec![(pods[0], 1)]);
    }

    #[test]
    fn alone_unlimited_or_unlisted() {
        let pods = pods(3);
        let all: Vec<_> = pods.iter().map(|p| (*p, 4)).collect();
        let me = IpAddr::from([10, 0, 9, 200]);
        assert_eq!(assign(&pods, 4, &[], me), all, "the only activator");
        assert_eq!(assign(&pods, 4, &[me, me], me), all, "duplicates");
        let acts = activators(2);
        let unlimited: Vec<_> = pods.iter().map(|p| (*p, 0)).collect();
        assert_eq!(assign(&pods, 0, &acts, acts[1]), unlimited);
        // Not named by the slice (yet): counted as one more activator, so it takes a share
        // instead of the whole Revision.
        let mine = assign(&pods, 4, &acts, me);
        assert_eq!(mine, vec![(pods[2], 4)], "the last of three slices");
        assert!(assign(&[], 4, &acts, me).is_empty());
    }
}
