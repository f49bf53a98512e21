//! Load balancing over a revision's instances, as upstream Knative's activator
//! chooses by `containerConcurrency` (`pickLBPolicy` in `lb_policy.go`):
//!
//! * cc = 0 (unlimited): power of two choices by in-flight count;
//! * cc 1–3: first available — pack the first instances, so with few slots
//!   per instance a request never waits behind a busy one while another is
//!   free, and idle instances stay idle for scale-down;
//! * cc > 3: round robin, skipping full instances.
//!
//! Every pick happens under the revision's lock together with the breaker
//! update, so unlike upstream (whose random-choice-2 reads and bumps weights
//! racily) the in-flight counts a pick sees are exact. The spread is tested
//! below: round robin is within one request of even, power of two choices
//! keeps the gap between the busiest and the idlest instance at a small
//! constant however many requests are in flight, first available never
//! exceeds cc and fills every slot at saturation.

use crate::breaker::Breaker;

/// How a revision picks an instance for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Two distinct random instances, the one with fewer requests in flight
    /// wins (ties broken at random).
    PowerOfTwoChoices,
    /// The first instance, in the order given, with a free slot.
    FirstAvailable,
    /// The next instance after the previous pick with a free slot.
    RoundRobin,
}

impl Policy {
    /// Upstream's default for a `containerConcurrency` value.
    pub fn for_container_concurrency(cc: u32) -> Self {
        match cc {
            0 => Self::PowerOfTwoChoices,
            1..=3 => Self::FirstAvailable,
            _ => Self::RoundRobin,
        }
    }
}

/// A balancer's state: the policy, the round-robin cursor and a small PRNG.
#[derive(Debug, Clone)]
pub struct Balancer {
    policy: Policy,
    next: usize,
    rng: SplitMix64,
}

impl Balancer {
    /// A balancer with `policy`, its random choices seeded by `seed` (tests
    /// pass a fixed seed; the throttler a per-revision random one).
    pub fn new(policy: Policy, seed: u64) -> Self {
        Self {
            policy,
            next: 0,
            rng: SplitMix64(seed),
        }
    }

    /// The current policy.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// Switches policy (when `containerConcurrency` changes).
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    /// Picks an instance with a free slot and admits the request on its
    /// breaker. Returns the instance's index, or `None` if every instance is
    /// full (or there are none).
    pub fn acquire<T: AsMut<Breaker>>(&mut self, instances: &mut [T]) -> Option<usize> {
        let picked = match self.policy {
            Policy::PowerOfTwoChoices => self.two_choices(instances),
            Policy::FirstAvailable => first_with_capacity(instances, 0),
            Policy::RoundRobin => {
                let start = if self.next >= instances.len() {
                    0
                } else {
                    self.next
                };
                let picked = first_with_capacity(instances, start);
                if let Some(i) = picked {
                    self.next = i + 1;
                }
                picked
            }
        }?;
        let admitted = instances.get_mut(picked)?.as_mut().try_acquire();
        admitted.then_some(picked)
    }

    fn two_choices<T: AsMut<Breaker>>(&mut self, instances: &mut [T]) -> Option<usize> {
        let len = instances.len();
        match len {
            0 => return None,
            1 => return first_with_capacity(instances, 0),
            _ => {}
        }
        let a = self.rng.below(len);
        // A second index distinct from the first: draw from len-1 and skip a.
        let mut b = self.rng.below(len - 1);
        if b >= a {
            b += 1;
        }
        let load = |i: usize, xs: &mut [T]| {
            let br = xs[i].as_mut();
            br.has_capacity().then_some(br.in_flight())
        };
        match (load(a, instances), load(b, instances)) {
            (Some(la), Some(lb)) => Some(match la.cmp(&lb) {
                std::cmp::Ordering::Less => a,
                std::cmp::Ordering::Greater => b,
                std::cmp::Ordering::Equal if self.rng.next() & 1 == 0 => a,
                std::cmp::Ordering::Equal => b,
            }),
            (Some(_), None) => Some(a),
            (None, Some(_)) => Some(b),
            // Both sampled instances are full (only possible with cc > 0):
            // any instance with a free slot still beats waiting.
            (None, None) => first_with_capacity(instances, a),
        }
    }
}

/// The first index at or after `start` (wrapping) whose breaker has a slot.
fn first_with_capacity<T: AsMut<Breaker>>(instances: &mut [T], start: usize) -> Option<usize> {
    let len = instances.len();
    (0..len)
        .map(|i| (start + i) % len)
        .find(|&i| instances[i].as_mut().has_capacity())
}

/// SplitMix64: tiny, fast, good enough to pick instances (not for secrets).
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0), by multiply-shift (Lemire, without the
    /// rejection step: the bias is below 2^-32 for any realistic n).
    fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next()) * n as u128) >> 64) as usize
    }
}

#[cfg(test)]
mod tests;
