//! Group commit: requests that arrive together share one database round trip (ingest: one
//! duplicate check, one insert and its commit for many webhooks; the worker: one statement
//! and commit for many jobs' outcomes), while each request still waits for its own answer.
//!
//! A call carries the requests waiting when the batcher is free. A request that finds none
//! beside it waits a short window ([`GATHER`]) for others, and those that arrive within it
//! share its call; requests that queued up together go at once. Without the window,
//! requests that arrive apart (1,000 webhooks a second are a millisecond apart) each had a
//! call of their own, and a statement's fixed cost (its round trip, its planning, its
//! commit) was most of what it cost: in `just bench`, ingest at 1,000/s spent 329 µs of
//! PostgreSQL's CPU per webhook in two statements, against 70 at 64 connections where the
//! calls carried many (ARCHITECTURE.md, Performance). The worker's batchers, whose jobs no
//! one waits on at once, gather every call for a while ([`Batcher::spawn_gathering`],
//! [`GATHER_EVERY_CALL`]).
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot};

/// How long a request that found no other waiting waits for others to share its call
/// (unless the call fills first). Tokio's timers tick in milliseconds, so the wait is one to
/// two milliseconds.
pub const GATHER: Duration = Duration::from_millis(1);

/// How long every call of the worker's batchers (its claims, its outcomes) gathers requests
/// from its first one, unless it fills first ([`Batcher::spawn_gathering`]): two to three
/// milliseconds. A job is not answered by a sender waiting on it, and a call's fixed cost
/// (its round trip, its execution start-up, its commit) is shared by more jobs. In `just
/// bench`, four alternated runs of each against the window for a request alone: CPU per
/// webhook end to end at 1,000/s 1,640–1,704 µs (mean 1,676) against 1,699–1,813 (1,780),
/// per job in processing 494–521 (509) against 502–556 (527).
pub const GATHER_EVERY_CALL: Duration = Duration::from_millis(2);

type Waiter<I, O> = (Vec<I>, oneshot::Sender<O>);

/// Runs `f` on the items of every request waiting when it is free, up to `max` items a
/// call; every request of the call gets a clone of its result. A request that finds no other
/// waiting is joined by those that arrive within `gather` of it (a zero `gather`: none);
/// with [`Batcher::spawn_gathering`], every call waits its window.
pub struct Batcher<I, O> {
    tx: mpsc::Sender<Waiter<I, O>>,
}

impl<I: Send + 'static, O: Clone + Send + 'static> Batcher<I, O> {
    pub fn spawn<F, Fut>(max: usize, gather: Duration, f: F) -> Batcher<I, O>
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = O> + Send + 'static,
    {
        Self::spawn_with(max, gather, false, 1, f)
    }

    /// As [`Batcher::spawn`], but every call, not only a request alone, gathers the
    /// requests that arrive within `gather` of its first one (unless it fills first): for
    /// requests no one is waiting on at once (the worker's jobs), larger calls for a little
    /// latency.
    pub fn spawn_gathering<F, Fut>(max: usize, gather: Duration, f: F) -> Batcher<I, O>
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = O> + Send + 'static,
    {
        Self::spawn_with(max, gather, true, 1, f)
    }

    /// As [`Batcher::spawn_gathering`], with up to `calls` calls at once, but only full
    /// ones beside another: a call that is not full waits for the calls in flight to end,
    /// takes what arrived meanwhile (up to `max`) and goes then, as with one call at a
    /// time. When more than `max` requests wait (a backlog), a full call no longer waits
    /// for the one before it to end; when fewer do, calls are as large as one at a time
    /// makes them.
    pub fn spawn_overlapping<F, Fut>(
        max: usize,
        gather: Duration,
        calls: usize,
        f: F,
    ) -> Batcher<I, O>
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = O> + Send + 'static,
    {
        Self::spawn_with(max, gather, true, calls.max(1), f)
    }

    fn spawn_with<F, Fut>(
        max: usize,
        gather: Duration,
        every_call: bool,
        calls: usize,
        f: F,
    ) -> Batcher<I, O>
    where
        F: Fn(Vec<I>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = O> + Send + 'static,
    {
        let (tx, mut rx) = mpsc::channel::<Waiter<I, O>>(4096);
        let f = Arc::new(f);
        let in_flight = Arc::new(Semaphore::new(calls));
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut items = first.0;
                let mut waiters = vec![first.1];
                let until = tokio::time::Instant::now() + gather;
                let mut gathering = every_call;
                while items.len() < max {
                    let next = match rx.try_recv() {
                        Ok(next) => Some(next),
                        // A request that found no other waiting gathers others until the
                        // window ends; requests that were already waiting together go at
                        // once (unless every call gathers).
                        Err(_) if !gather.is_zero() && (gathering || waiters.len() == 1) => {
                            gathering = true;
                            // `None`: closed, or the window has passed.
                            tokio::time::timeout_at(until, rx.recv())
                                .await
                                .ok()
                                .flatten()
                        }
                        Err(_) => None,
                    };
                    let Some((more, w)) = next else { break };
                    items.extend(more);
                    waiters.push(w);
                }
                let Ok(permit) = in_flight.clone().acquire_owned().await else {
                    break;
                };
                if calls > 1 && items.len() < max {
                    // Not full: after the calls in flight, with what came meanwhile.
                    if let Ok(others) = in_flight.acquire_many(calls as u32 - 1).await {
                        drop(others);
                    }
                    while items.len() < max {
                        let Ok((more, w)) = rx.try_recv() else { break };
                        items.extend(more);
                        waiters.push(w);
                    }
                }
                let f = f.clone();
                let call = async move {
                    let out = f(items).await;
                    for w in waiters {
                        let _ = w.send(out.clone());
                    }
                    drop(permit);
                };
                if calls == 1 {
                    call.await;
                } else {
                    tokio::spawn(call);
                }
            }
        });
        Batcher { tx }
    }

    /// Submit items without waiting for the call that carries them (its function sees to
    /// their result); the items back if the batcher has stopped. Waits only while the
    /// batcher's queue is full.
    pub async fn submit(&self, items: Vec<I>) -> Result<(), Vec<I>> {
        let (tx, _) = oneshot::channel();
        self.tx.send((items, tx)).await.map_err(|e| e.0.0)
    }

    /// Submit items and wait for the result of the call that carried them; `None` if the
    /// batcher has stopped.
    pub async fn call(&self, items: Vec<I>) -> Option<O> {
        let (tx, rx) = oneshot::channel();
        self.tx.send((items, tx)).await.ok()?;
        rx.await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[tokio::test]
    async fn concurrent_requests_share_calls_and_each_gets_its_answer() {
        let calls = Arc::new(AtomicUsize::new(0));
        let c = calls.clone();
        let b = Arc::new(Batcher::spawn(
            1000,
            Duration::ZERO,
            move |items: Vec<u32>| {
                let c = c.clone();
                async move {
                    c.fetch_add(1, Ordering::SeqCst);
                    tokio::task::yield_now().await;
                    items.iter().sum::<u32>()
                }
            },
        ));
        let mut tasks = Vec::new();
        for i in 0..200u32 {
            let b = b.clone();
            tasks.push(tokio::spawn(
                async move { (i, b.call(vec![i]).await.unwrap()) },
            ));
        }
        let mut answered = 0;
        for t in tasks {
            let (i, sum) = t.await.unwrap();
            assert!(sum >= i, "a call's result covers the request's own items");
            answered += 1;
        }
        assert_eq!(answered, 200);
        assert!(calls.load(Ordering::SeqCst) <= 200);
    }

    /// Requests that arrive apart, within the window of the first, share its call; one
    /// that comes after the window has a call of its own. (Tokio's clock is paused: the
    /// test waits no real time.)
    #[tokio::test(start_paused = true)]
    async fn requests_within_the_window_share_a_call() {
        let calls = Arc::new(std::sync::Mutex::new(Vec::new()));
        let c = calls.clone();
        let b = Arc::new(Batcher::spawn(
            1000,
            Duration::from_millis(10),
            move |items: Vec<u32>| {
                c.lock().unwrap().push(items.clone());
                async move { items.len() }
            },
        ));
        let mut tasks = Vec::new();
        for (i, after_ms) in [(1u32, 0u64), (2, 3), (3, 6), (4, 30)] {
            let b = b.clone();
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(after_ms)).await;
                (i, b.call(vec![i]).await.unwrap())
            }));
        }
        let mut sizes = Vec::new();
        for t in tasks {
            sizes.push(t.await.unwrap());
        }
        assert_eq!(sizes, vec![(1, 3), (2, 3), (3, 3), (4, 1)]);
        assert_eq!(*calls.lock().unwrap(), vec![vec![1, 2, 3], vec![4]]);
    }

    /// A full call does not wait for the window.
    #[tokio::test(start_paused = true)]
    async fn a_full_call_runs_without_waiting_for_the_window() {
        let b = Batcher::spawn(2, Duration::from_secs(3600), |items: Vec<u32>| async move {
            items.len()
        });
        let started = tokio::time::Instant::now();
        let (x, y) = tokio::join!(b.call(vec![1]), b.call(vec![2]));
        assert_eq!((x, y), (Some(2), Some(2)));
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    /// Requests sent at the given times (ms from the start) to a batcher with a 10 ms
    /// window whose calls take 5 ms: when each call started (ms) and what it carried.
    async fn calls_of(gathering: bool, requests: &[(u32, u64)]) -> Vec<(u128, Vec<u32>)> {
        let starts = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = starts.clone();
        let zero = tokio::time::Instant::now();
        let f = move |items: Vec<u32>| {
            s.lock()
                .unwrap()
                .push((zero.elapsed().as_millis(), items.clone()));
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                items.len()
            }
        };
        let window = Duration::from_millis(10);
        let b = Arc::new(if gathering {
            Batcher::spawn_gathering(1000, window, f)
        } else {
            Batcher::spawn(1000, window, f)
        });
        send_at(b, requests).await;
        starts.lock().unwrap().clone()
    }

    /// Each request (its item, when it is sent in ms from now), each waiting for its call.
    async fn send_at(b: Arc<Batcher<u32, usize>>, requests: &[(u32, u64)]) {
        let mut tasks = Vec::new();
        for &(i, after_ms) in requests {
            let b = b.clone();
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(after_ms)).await;
                b.call(vec![i]).await.unwrap()
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }

    /// With `spawn_gathering`, requests already waiting together still wait the window
    /// for more, from the first one taken.
    #[tokio::test(start_paused = true)]
    async fn a_gathering_batcher_waits_its_window_on_every_call() {
        // The second call took 2 and 3 as the first ended (15 ms) and waited until 25 ms,
        // which brought 4; 5 came after its window.
        assert_eq!(
            calls_of(true, &[(1, 0), (2, 12), (3, 12), (4, 20), (5, 40)]).await,
            vec![(10, vec![1]), (25, vec![2, 3, 4]), (50, vec![5])]
        );
    }

    /// Requests that were already waiting together when the batcher came free go at once:
    /// the window is for a request alone.
    #[tokio::test(start_paused = true)]
    async fn requests_already_waiting_together_do_not_wait_for_the_window() {
        // The first, alone, waited its window (10 ms) and ran until 15 ms; the two that
        // came meanwhile ran as it ended, not a window later.
        assert_eq!(
            calls_of(false, &[(1, 0), (2, 12), (3, 12)]).await,
            vec![(10, vec![1]), (15, vec![2, 3])]
        );
    }

    /// With two calls at once, full calls go beside each other; a call that is not full
    /// waits for the one in flight and takes what came meanwhile.
    #[tokio::test(start_paused = true)]
    async fn overlapping_calls_go_beside_each_other_only_when_full() {
        let starts = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = starts.clone();
        let zero = tokio::time::Instant::now();
        let b = Arc::new(Batcher::spawn_overlapping(
            2,
            Duration::from_millis(3),
            2,
            move |items: Vec<u32>| {
                s.lock()
                    .unwrap()
                    .push((zero.elapsed().as_millis(), items.clone()));
                async move {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    items.len()
                }
            },
        ));
        send_at(b, &[(1, 0), (2, 0), (3, 0), (4, 0), (5, 1), (6, 7)]).await;
        // 1–4 were waiting: two full calls at once. 5 gathered its window until 4 ms,
        // alone, so it waited for a call to end (10 ms) and took 6, which came meanwhile.
        assert_eq!(
            starts.lock().unwrap().clone(),
            vec![(0, vec![1, 2]), (0, vec![3, 4]), (10, vec![5, 6])]
        );
    }

    /// Items submitted without waiting share calls like the rest, and a stopped batcher
    /// hands them back.
    #[tokio::test]
    async fn submitted_items_are_carried_by_a_call_no_one_waits_on() {
        let (seen, mut got) = mpsc::unbounded_channel();
        let b = Batcher::spawn(1000, Duration::ZERO, move |items: Vec<u32>| {
            let seen = seen.clone();
            async move {
                seen.send(items).unwrap();
            }
        });
        assert_eq!(b.submit(vec![1, 2]).await, Ok(()));
        assert_eq!(got.recv().await, Some(vec![1, 2]));

        let (tx, rx) = mpsc::channel(1);
        drop(rx);
        let stopped: Batcher<u32, ()> = Batcher { tx };
        assert_eq!(stopped.submit(vec![3]).await, Err(vec![3]));
    }
}
