use std::collections::HashMap;
use std::sync::Mutex as StdMutex;

use proptest::prelude::*;
use tokio::task::JoinHandle;

use super::*;

const LONG: Duration = Duration::from_secs(3600);

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn key(name: &str) -> RevisionKey {
    RevisionKey::new("default", name)
}

fn throttler(
    revision_queue: usize,
    global_queue: usize,
) -> (Throttler, mpsc::Receiver<RevisionKey>) {
    let (tx, rx) = mpsc::channel(16);
    let config = ThrottlerConfig {
        revision_queue,
        global_queue,
    };
    (Throttler::new(config, tx), rx)
}

fn spawn_acquire(
    t: &Throttler,
    k: &RevisionKey,
    timeout: Duration,
) -> JoinHandle<Result<Permit, Error>> {
    let (t, k) = (t.clone(), k.clone());
    tokio::spawn(async move { t.acquire(&k, timeout).await })
}

/// Lets spawned tasks run until they block (time is paused: no clock moves).
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

fn queued(t: &Throttler, k: &RevisionKey) -> usize {
    t.revision_stats(k).map_or(0, |s| s.queued)
}

#[tokio::test(start_paused = true)]
async fn unknown_revision_is_an_error() {
    let (t, _pokes) = throttler(10, 10);
    let err = t.acquire(&key("nope"), LONG).await.unwrap_err();
    assert!(matches!(err, Error::UnknownRevision(_)), "{err}");
    assert!(matches!(
        t.update_instances(&key("nope"), &[addr(1)]),
        Err(Error::UnknownRevision(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn admits_at_once_when_there_is_room_and_releases_on_drop() {
    let (t, _pokes) = throttler(10, 10);
    let k = key("a");
    t.set_revision(&k, 1);
    t.update_instances(&k, &[addr(1), addr(2)]).unwrap();
    let p1 = t.acquire(&k, LONG).await.unwrap();
    let p2 = t.acquire(&k, LONG).await.unwrap();
    assert_eq!(
        (p1.addr(), p2.addr()),
        (addr(1), addr(2)),
        "first available"
    );
    let s = t.revision_stats(&k).unwrap();
    assert_eq!(s.instances, vec![(addr(1), 1), (addr(2), 1)]);
    drop(p1);
    let s = t.revision_stats(&k).unwrap();
    assert_eq!(s.instances, vec![(addr(1), 0), (addr(2), 1)]);
    assert_eq!(t.stats().admitted, 2);
    assert_eq!(t.stats().waited, 0);
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_in_arrival_order_as_slots_free() {
    let (t, _pokes) = throttler(10, 10);
    let k = key("a");
    t.set_revision(&k, 1);
    t.update_instances(&k, &[addr(1)]).unwrap();
    let held = t.acquire(&k, LONG).await.unwrap();
    let order = Arc::new(StdMutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..3 {
        let (t, k, order) = (t.clone(), k.clone(), Arc::clone(&order));
        tasks.push(tokio::spawn(async move {
            let p = t.acquire(&k, LONG).await.unwrap();
            order.lock().unwrap().push(i);
            tokio::time::sleep(Duration::from_millis(10)).await;
            drop(p);
        }));
        settle().await; // fix the arrival order
    }
    assert_eq!(queued(&t, &k), 3);
    drop(held);
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), [0, 1, 2]);
    assert_eq!(t.stats().queued, 0);
    assert_eq!(t.stats().waited, 3);
    assert_eq!(t.revision_stats(&k).unwrap().instances, vec![(addr(1), 0)]);
}

#[tokio::test(start_paused = true)]
async fn at_zero_requests_wait_poke_once_and_complete_when_an_instance_arrives() {
    let (t, mut pokes) = throttler(100, 100);
    let k = key("zero");
    t.set_revision(&k, 0);
    let waiting: Vec<_> = (0..20).map(|_| spawn_acquire(&t, &k, LONG)).collect();
    settle().await;
    assert_eq!(queued(&t, &k), 20);
    assert_eq!(pokes.try_recv().unwrap(), k, "the first request pokes");
    assert!(pokes.try_recv().is_err(), "the others do not");
    assert_eq!(t.stats().pokes, 1);

    tokio::time::advance(Duration::from_secs(5)).await;
    t.update_instances(&k, &[addr(7)]).unwrap();
    for w in waiting {
        assert_eq!(w.await.unwrap().unwrap().addr(), addr(7));
    }
    assert_eq!(t.stats().queued, 0);
    assert!(pokes.try_recv().is_err());
}

#[tokio::test(start_paused = true)]
async fn a_new_episode_at_zero_pokes_again() {
    let (t, mut pokes) = throttler(100, 100);
    let k = key("zero");
    t.set_revision(&k, 0);
    let err = t.acquire(&k, Duration::from_secs(1)).await.unwrap_err();
    assert!(matches!(err, Error::NoCapacity { .. }));
    let _ = t.acquire(&k, Duration::from_secs(1)).await;
    assert_eq!(pokes.try_recv().unwrap(), k);
    assert_eq!(pokes.try_recv().unwrap(), k);
}

#[tokio::test(start_paused = true)]
async fn waiting_times_out_with_no_capacity_and_leaves_the_queue() {
    let (t, _pokes) = throttler(10, 10);
    let k = key("a");
    t.set_revision(&k, 0);
    let start = Instant::now();
    let err = t.acquire(&k, Duration::from_millis(250)).await.unwrap_err();
    match err {
        Error::NoCapacity { waited, .. } => assert_eq!(waited, Duration::from_millis(250)),
        other => panic!("{other}"),
    }
    assert_eq!(start.elapsed(), Duration::from_millis(250));
    assert_eq!(t.stats().queued, 0);
    assert_eq!(t.stats().timed_out, 1);
    assert_eq!(queued(&t, &k), 0);
}

#[tokio::test(start_paused = true)]
async fn a_full_revision_queue_rejects_at_once() {
    let (t, _pokes) = throttler(3, 100);
    let k = key("a");
    t.set_revision(&k, 0);
    let waiting: Vec<_> = (0..3).map(|_| spawn_acquire(&t, &k, LONG)).collect();
    settle().await;
    let start = Instant::now();
    let err = t.acquire(&k, LONG).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::QueueFull {
                scope: QueueScope::Revision,
                bound: 3,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(start.elapsed(), Duration::ZERO);
    // Another revision still has room.
    let other = key("b");
    t.set_revision(&other, 0);
    let w = spawn_acquire(&t, &other, LONG);
    settle().await;
    assert_eq!(t.stats().queued, 4);
    for h in waiting.into_iter().chain([w]) {
        h.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn the_global_bound_spans_revisions() {
    let (t, _pokes) = throttler(100, 4);
    let keys: Vec<_> = (0..4).map(|i| key(&format!("r{i}"))).collect();
    for k in &keys {
        t.set_revision(k, 0);
    }
    let waiting: Vec<_> = keys.iter().map(|k| spawn_acquire(&t, k, LONG)).collect();
    settle().await;
    let err = t.acquire(&keys[0], LONG).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::QueueFull {
                scope: QueueScope::Global,
                bound: 4,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(t.stats().rejected, 1);
    // One leaves: there is room again.
    waiting[0].abort();
    settle().await;
    assert_eq!(t.stats().queued, 3);
    let w = spawn_acquire(&t, &keys[3], LONG);
    settle().await;
    assert_eq!(t.stats().queued, 4);
    for h in waiting.into_iter().chain([w]) {
        h.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn a_flood_never_exceeds_the_bound_and_is_shed_at_once() {
    const BOUND: usize = 100;
    const FLOOD: usize = 20_000;
    let (t, _pokes) = throttler(BOUND, BOUND);
    let k = key("flood");
    t.set_revision(&k, 1);
    let mut tasks = Vec::with_capacity(FLOOD);
    for _ in 0..FLOOD {
        tasks.push(spawn_acquire(&t, &k, Duration::from_secs(10)));
    }
    // Let every task reach the throttler (each yield runs a scheduler batch).
    for _ in 0..FLOOD {
        let s = t.stats();
        if s.queued + s.rejected as usize == FLOOD {
            break;
        }
        tokio::task::yield_now().await;
    }
    let s = t.stats();
    assert_eq!(s.queued, BOUND);
    assert_eq!(
        s.rejected,
        (FLOOD - BOUND) as u64,
        "the rest shed without waiting"
    );
    // Rejections complete without any time passing.
    let mut rejected = 0;
    for h in &mut tasks {
        if h.is_finished() {
            assert!(matches!(h.await.unwrap(), Err(Error::QueueFull { .. })));
            rejected += 1;
        }
    }
    assert_eq!(rejected, FLOOD - BOUND);
    // An instance arrives: the queue drains one at a time at cc = 1.
    t.update_instances(&k, &[addr(1)]).unwrap();
    settle().await;
    let s = t.stats();
    assert_eq!(s.peak_queued, BOUND);
    assert_eq!(t.revision_stats(&k).unwrap().peak_queued, BOUND);
    assert!(s.queued < BOUND);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_waiter_leaves_and_its_turn_passes_on() {
    let (t, _pokes) = throttler(10, 10);
    let k = key("a");
    t.set_revision(&k, 1);
    t.update_instances(&k, &[addr(1)]).unwrap();
    let held = t.acquire(&k, LONG).await.unwrap();
    let first = spawn_acquire(&t, &k, LONG);
    settle().await;
    let second = spawn_acquire(&t, &k, LONG);
    settle().await;
    first.abort();
    settle().await;
    assert_eq!(queued(&t, &k), 1);
    assert_eq!(t.stats().queued, 1);
    drop(held);
    assert_eq!(second.await.unwrap().unwrap().addr(), addr(1));
}

#[tokio::test(start_paused = true)]
async fn removing_a_revision_fails_its_waiters() {
    let (t, _pokes) = throttler(10, 10);
    let k = key("a");
    t.set_revision(&k, 0);
    let w = spawn_acquire(&t, &k, LONG);
    settle().await;
    t.remove_revision(&k);
    assert!(matches!(w.await.unwrap(), Err(Error::RevisionRemoved(_))));
    assert_eq!(t.stats().queued, 0);
    assert!(!t.contains(&k));
    assert!(matches!(
        t.acquire(&k, LONG).await,
        Err(Error::UnknownRevision(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn a_removed_instance_keeps_its_count_until_its_requests_finish() {
    let (t, _pokes) = throttler(10, 10);
    let k = key("a");
    t.set_revision(&k, 1);
    t.update_instances(&k, &[addr(1)]).unwrap();
    let p = t.acquire(&k, LONG).await.unwrap();
    t.update_instances(&k, &[addr(2)]).unwrap();
    assert_eq!(t.revision_stats(&k).unwrap().draining_in_flight, 1);
    // Per instance: the one that left still holds its request, the new one none.
    assert_eq!(t.in_flight_on(&k, addr(1)), 1);
    assert_eq!(t.in_flight_on(&k, addr(2)), 0);
    assert_eq!(t.in_flight_on(&key("other"), addr(1)), 0);
    // It comes back while its request is still running: still full.
    t.update_instances(&k, &[addr(1), addr(2)]).unwrap();
    let q = t.acquire(&k, LONG).await.unwrap();
    assert_eq!(q.addr(), addr(2));
    let w = spawn_acquire(&t, &k, LONG);
    settle().await;
    assert_eq!(queued(&t, &k), 1);
    drop(p);
    let p1 = w.await.unwrap().unwrap();
    assert_eq!(p1.addr(), addr(1));
    // Removed for good while busy: the release does not leak into anything.
    t.update_instances(&k, &[]).unwrap();
    drop(q);
    let s = t.revision_stats(&k).unwrap();
    assert_eq!(
        s.draining_in_flight, 1,
        "addr(1) still has the waiter's request"
    );
    drop(p1);
    assert_eq!(t.revision_stats(&k).unwrap().draining_in_flight, 0);
    assert_eq!(t.in_flight_on(&k, addr(1)), 0);
}

#[tokio::test(start_paused = true)]
async fn raising_container_concurrency_admits_waiters() {
    let (t, _pokes) = throttler(10, 10);
    let k = key("a");
    t.set_revision(&k, 1);
    t.update_instances(&k, &[addr(1)]).unwrap();
    let _held = t.acquire(&k, LONG).await.unwrap();
    let w = spawn_acquire(&t, &k, LONG);
    settle().await;
    assert_eq!(queued(&t, &k), 1);
    t.set_revision(&k, 2);
    let p = w.await.unwrap().unwrap();
    assert_eq!(p.addr(), addr(1));
    assert_eq!(t.revision_stats(&k).unwrap().instances, vec![(addr(1), 2)]);
}

#[tokio::test(start_paused = true)]
async fn full_poke_channel_drops_and_counts() {
    let (tx, _rx) = mpsc::channel(1);
    let t = Throttler::new(ThrottlerConfig::default(), tx);
    let mut waiting = Vec::new();
    for i in 0..3 {
        let k = key(&format!("r{i}"));
        t.set_revision(&k, 0);
        waiting.push(spawn_acquire(&t, &k, LONG));
    }
    settle().await;
    let s = t.stats();
    assert_eq!((s.pokes, s.pokes_dropped), (1, 2));
    for w in waiting {
        w.abort();
    }
}

/// Many tasks with random hold times and timeouts against a changing set of
/// instances: no instance ever has more than cc permits out, the counts
/// return to zero, and the queue never exceeds its bound.
fn churn(seed: u64, cc: u32, bound: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move {
        let (t, _pokes) = throttler(bound, bound);
        let k = key("churn");
        t.set_revision(&k, cc);
        let live: Arc<StdMutex<HashMap<SocketAddr, u32>>> = Arc::default();
        let mut rng = seed;
        let mut next = move |n: u64| {
            rng = rng
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (rng >> 33) % n
        };
        let mut tasks = Vec::new();
        for step in 0..400u64 {
            if step % 25 == 0 {
                let n = next(4) as u16;
                let addrs: Vec<_> = (0..n).map(|i| addr(1 + (i + next(3) as u16) % 5)).collect();
                t.update_instances(&k, &addrs).unwrap();
            }
            let (t2, k2, live) = (t.clone(), k.clone(), Arc::clone(&live));
            let hold = Duration::from_millis(next(50));
            let timeout = Duration::from_millis(20 + next(200));
            tasks.push(tokio::spawn(async move {
                if let Ok(p) = t2.acquire(&k2, timeout).await {
                    let now = {
                        let mut m = live.lock().unwrap();
                        let c = m.entry(p.addr()).or_default();
                        *c += 1;
                        *c
                    };
                    assert!(cc == 0 || now <= cc, "{} has {now} > cc {cc}", p.addr());
                    tokio::time::sleep(hold).await;
                    *live.lock().unwrap().get_mut(&p.addr()).unwrap() -= 1;
                    drop(p);
                }
            }));
            tokio::time::sleep(Duration::from_millis(next(5))).await;
            assert!(t.stats().queued <= bound);
        }
        t.update_instances(&k, &[addr(1)]).unwrap();
        for task in tasks {
            task.await.unwrap();
        }
        let s = t.stats();
        assert_eq!(s.queued, 0);
        assert!(s.peak_queued <= bound);
        let r = t.revision_stats(&k).unwrap();
        assert!(r.instances.iter().all(|&(_, n)| n == 0), "{r:?}");
        assert_eq!(r.draining_in_flight, 0);
    });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]
    #[test]
    fn churn_keeps_every_invariant(seed in any::<u64>(), cc in 0u32..4, bound in 1usize..50) {
        churn(seed, cc, bound);
    }
}

#[tokio::test(start_paused = true)]
async fn a_share_caps_an_instance_below_container_concurrency() {
    let (t, _pokes) = throttler(10, 10);
    let k = key("shared");
    t.set_revision(&k, 4);
    t.set_shares(&k, HashMap::from([(addr(1), 1)])).unwrap();
    t.update_instances(&k, &[addr(1), addr(2)]).unwrap();
    // addr(1) holds one request (this activator's share), addr(2) the whole cc.
    let mut permits = Vec::new();
    for _ in 0..5 {
        permits.push(t.acquire(&k, LONG).await.unwrap());
    }
    let on = |a| permits.iter().filter(|p| p.addr() == a).count();
    assert_eq!((on(addr(1)), on(addr(2))), (1, 4));
    let waiting = spawn_acquire(&t, &k, LONG);
    settle().await;
    assert_eq!(queued(&t, &k), 1, "no room left");
    // A larger share admits the waiter.
    t.set_shares(&k, HashMap::from([(addr(1), 2)])).unwrap();
    settle().await;
    let admitted = waiting.await.unwrap().unwrap();
    assert_eq!(admitted.addr(), addr(1));
    // Raising cc does not lift a share.
    t.set_revision(&k, 8);
    assert_eq!(t.in_flight_on(&k, addr(1)), 2);
    assert!(
        tokio::time::timeout(Duration::from_millis(10), t.acquire(&k, LONG))
            .await
            .is_ok_and(|p| p.is_ok_and(|p| p.addr() == addr(2))),
        "the next goes to the pod with room"
    );
    drop((admitted, permits));
}
