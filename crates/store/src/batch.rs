//! Group commit: requests that arrive together share one database round trip (ingest: one
//! duplicate check, one insert and its commit for many webhooks; the worker: one statement
//! and commit for many jobs' outcomes), while each request still waits for its own answer.
use std::future::Future;
use tokio::sync::{mpsc, oneshot};

type Waiter<I, O> = (Vec<I>, oneshot::Sender<O>);

/// Runs `f` on the items of every request waiting when it is free, up to `max` items a call;
/// every request of the call gets a clone of its result.
pub struct Batcher<I, O> {
    tx: mpsc::Sender<Waiter<I, O>>,
}

impl<I: Send + 'static, O: Clone + Send + 'static> Batcher<I, O> {
    pub fn spawn<F, Fut>(max: usize, f: F) -> Batcher<I, O>
    where
        F: Fn(Vec<I>) -> Fut + Send + 'static,
        Fut: Future<Output = O> + Send,
    {
        let (tx, mut rx) = mpsc::channel::<Waiter<I, O>>(4096);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut items = first.0;
                let mut waiters = vec![first.1];
                while items.len() < max {
                    match rx.try_recv() {
                        Ok((more, w)) => {
                            items.extend(more);
                            waiters.push(w);
                        }
                        Err(_) => break,
                    }
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
        let b = Arc::new(Batcher::spawn(1000, move |items: Vec<u32>| {
            let c = c.clone();
            async move {
                c.fetch_add(1, Ordering::SeqCst);
                tokio::task::yield_now().await;
                items.iter().sum::<u32>()
            }
        }));
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
}
