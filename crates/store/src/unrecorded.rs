//! Jobs that ingest has published (the broker confirmed them) and answered for, whose
//! `queued` rows are still being written.
//!
//! Ingest answers a webhook `202` once its jobs are durable in the broker, and writes their
//! `queued` rows after the answer, many webhooks' rows in one insert (the row is
//! bookkeeping: a worker's claim makes the row when it is missing). Until a row is
//! committed, its job is here, so that within the process the job is never missing:
//! - the duplicate check counts it as existing (a sender that re-sends the webhook at once
//!   is answered as a duplicate and nothing is published again), and
//! - [`crate::Store::job`] waits for its row rather than answer that it does not exist.
//!
//! A job leaves only after its insert has finished (committed or failed), so at every moment
//! a job ingest has answered for is here, or its row is in the database, or its insert
//! failed (then a worker makes the row when it claims the job). Reading this set *before*
//! the database keeps that true for a reader: a job that left between the two reads was
//! committed first.
//!
//! Another process (a second ingest replica) does not see this set: there, a job's row can
//! be missing for the moments its insert takes.
use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;
use uuid::Uuid;

/// The set, shared by every clone of a [`crate::Store`] and the stores made beside it.
#[derive(Debug, Default)]
pub struct Unrecorded {
    ids: Mutex<HashSet<Uuid>>,
    /// Woken whenever jobs leave.
    left: Notify,
}

impl Unrecorded {
    /// These jobs' rows are about to be written.
    pub fn add(&self, ids: impl IntoIterator<Item = Uuid>) {
        self.lock().extend(ids);
    }

    /// These jobs' insert has finished (committed or failed).
    pub fn remove<'a>(&self, ids: impl IntoIterator<Item = &'a Uuid>) {
        {
            let mut set = self.lock();
            for id in ids {
                set.remove(id);
            }
        }
        self.left.notify_waiters();
    }

    pub fn contains(&self, id: &Uuid) -> bool {
        self.lock().contains(id)
    }

    /// Which of these jobs are here.
    pub fn which(&self, ids: &[Uuid]) -> HashSet<Uuid> {
        let set = self.lock();
        ids.iter().filter(|id| set.contains(id)).copied().collect()
    }

    /// How many jobs are here.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Wait until `id` is not here (its insert has finished), for at most `within`; whether
    /// it left.
    pub async fn left(&self, id: &Uuid, within: Duration) -> bool {
        self.wait(|set| !set.contains(id), within).await
    }

    /// Wait until every insert has finished (a stopping ingest), for at most `within`;
    /// whether they all did.
    pub async fn drained(&self, within: Duration) -> bool {
        self.wait(HashSet::is_empty, within).await
    }

    async fn wait(&self, done: impl Fn(&HashSet<Uuid>) -> bool, within: Duration) -> bool {
        tokio::time::timeout(within, async {
            loop {
                // Registered before the check, so a departure between the two still wakes it.
                let left = self.left.notified();
                tokio::pin!(left);
                left.as_mut().enable();
                if done(&self.lock()) {
                    return;
                }
                left.await;
            }
        })
        .await
        .is_ok()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
        // The set is only ever left consistent (no code runs under the lock that can panic).
        self.ids.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn a_reader_waits_for_the_insert_and_no_longer() {
        let u = Arc::new(Unrecorded::default());
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        u.add([a, b]);
        assert_eq!(u.which(&[a, Uuid::nil()]), HashSet::from([a]));
        let waiting = tokio::spawn({
            let u = u.clone();
            async move { u.left(&a, Duration::from_secs(5)).await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "a's row is still being written");
        u.remove(&[b]);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "b left, not a");
        u.remove(&[a]);
        assert!(waiting.await.unwrap(), "a left");
        assert!(u.is_empty());
        assert!(u.drained(Duration::from_secs(1)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_ends_after_its_time_when_the_insert_does_not() {
        let u = Unrecorded::default();
        let a = Uuid::from_u128(1);
        u.add([a]);
        assert!(!u.left(&a, Duration::from_millis(50)).await);
        assert!(!u.drained(Duration::from_millis(50)).await);
        assert!(
            u.left(&Uuid::nil(), Duration::ZERO).await,
            "not here at all"
        );
    }
}
