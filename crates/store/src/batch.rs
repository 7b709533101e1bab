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
//! calls carried many (ARCHITECTURE.md, Performance).
use std::future::Future;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How long a request that found no other waiting waits for others to share its call
/// (unless the call fills first). Tokio's timers tick in milliseconds, so the wait is one to
/// two milliseconds.
pub const GATHER: Duration = Duration::from_millis(1);

type Waiter<I, O> = (Vec<I>, oneshot::Sender<O>);

/// Runs `f` on the items of every request waiting when it is free, up to `max` items a
/// call; every request of the call gets a clone of its result. A request that finds no other
/// waiting is joined by those that arrive within `gather` of it (a zero `gather`: none).
pub struct Batcher<I, O> {
    tx: mpsc::Sender<Waiter<I, O>>,
}

impl<I: Send + 'static, O: Clone + Send + 'static> Batcher<I, O> {
    pub fn spawn<F, Fut>(max: usize, gather: Duration, f: F) -> Batcher<I, O>
    where
        F: Fn(Vec<I>) -> Fut + Send + 'static,
        Fut: Future<Output = O> + Send,
    {
        let (tx, mut rx) = mpsc::channel::<Waiter<I, O>>(4096);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut items = first.0;
                let mut waiters = vec![first.1];
                let until = tokio::time::Instant::now() + gather;
                let mut gathering = false;
                while items.len() < max {
                    let next = match rx.try_recv() {
                        Ok(next) => Some(next),
                        // A request that found no other waiting gathers others until the
                        // window ends; requests that were already waiting together go at
                        // once.
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
                let out = f(items).await;
                for w in waiters {
                    let _ = w.send(out.clone());
                }
            }
        });
        Batcher { tx }
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

    /// Requests that were already waiting together when the batcher came free go at once:
    /// the window is for a request alone.
    #[tokio::test(start_paused = true)]
    async fn requests_already_waiting_together_do_not_wait_for_the_window() {
        let starts = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = starts.clone();
        let zero = tokio::time::Instant::now();
        let b = Arc::new(Batcher::spawn(
            1000,
            Duration::from_millis(10),
            move |items: Vec<u32>| {
                s.lock()
                    .unwrap()
                    .push((zero.elapsed().as_millis(), items.clone()));
                async move {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    items.len()
                }
            },
        ));
        let mut tasks = Vec::new();
        for (i, after_ms) in [(1u32, 0u64), (2, 12), (3, 12)] {
            let b = b.clone();
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(after_ms)).await;
                b.call(vec![i]).await.unwrap()
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // The first, alone, waited its window (10 ms) and ran until 15 ms; the two that
        // came meanwhile ran as it ended, not a window later.
        assert_eq!(
            *starts.lock().unwrap(),
            vec![(10, vec![1]), (15, vec![2, 3])]
        );
    }
}
