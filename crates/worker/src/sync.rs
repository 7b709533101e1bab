//! The sync pager: reads one page of a sync run's current feed, enqueues one job per record
//! and target, moves the run on, and enqueues the next page.
//!
//! Safe to run twice on the same page (a redelivery after a crash): job rows are recorded
//! before publishing and keyed by idempotency key, so a record makes one job whichever
//! pager publishes it; only one pager moves the run past a page (compare-and-set on the
//! page number) and so only one enqueues the next.
use chrono::Utc;
use std::time::Duration;
use switchyard_broker::{Delivery, OutgoingMessage};
use switchyard_core::{
    Action, Direction, ENVELOPE_VERSION, Envelope, IntegrationStatus, RouteFilter, ids,
};
use switchyard_ops::sync::{SyncPage, publish_page};
use switchyard_providers::{ChangedPage, ListQuery};
use switchyard_resilience::{Admission, RetryDecision};
use switchyard_store::{Advance, StoreError, SyncRun};
use tracing::{Instrument, debug, info, info_span, warn};
use uuid::Uuid;

use crate::Shared;

/// Longest wait between two tries at listing a page.
const MAX_LIST_DELAY: Duration = Duration::from_secs(30);

pub(crate) async fn handle(shared: &Shared, d: Delivery) {
    let msg: SyncPage = match serde_json::from_slice(&d.body) {
        Ok(m) => m,
        Err(e) => {
            warn!(error = %e, "dropping a sync page message that cannot be read");
            let _ = d.ack().await;
            return;
        }
    };
    let span = info_span!("sync_page", run = %msg.run_id, page = msg.page);
    tracing::debug!(parent: &span, "reading a sync page");
    match page(shared, msg).instrument(span.clone()).await {
        Ok(()) => {
            if let Err(e) = d.ack().await {
                warn!(parent: &span, error = %e, "page done but not acknowledged; it will be read again (harmless)");
            }
        }
        Err(e) => {
            warn!(parent: &span, error = %e, "sync page not finished; returning it to the queue");
            tokio::time::sleep(Duration::from_millis(500)).await;
            let _ = d.requeue().await;
        }
    }
}

/// Errors after which the page is tried again (database or broker unavailable).
#[derive(Debug, thiserror::Error)]
enum PageError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Publish(#[from] switchyard_broker::PublishError),
    #[error("the worker is stopping")]
    Stopping,
    #[error("the run is not marked running yet")]
    NotStarted,
}

async fn page(shared: &Shared, msg: SyncPage) -> Result<(), PageError> {
    let store = &shared.store;
    let run = match store.sync_run(msg.run_id).await {
        Ok(r) => r,
        Err(StoreError::NotFound(_)) => {
            warn!("dropping a page of a sync run that does not exist");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
    if run.status == "pending" {
        // Its starter enqueued the page and is about to mark it running.
        return Err(PageError::NotStarted);
    }
    if run.status != "running" || run.paging_done {
        return Ok(());
    }
    if run.pages != msg.page {
        if run.pages > msg.page {
            // A redelivered page another pager has read; make sure the next one is queued
            // (the pager that read it may have died before enqueueing it).
            publish_page(&shared.broker, run.id, run.pages).await?;
        }
        return Ok(());
    }
    let Some(feed) = run.plan.get(run.feed as usize).cloned() else {
        store
            .fail_paging(run.id, "the run's plan has no such feed")
            .await?;
        return Ok(());
    };
    // A provider whose pages never end (a wrong total, a cursor that loops) stops here.
    let limit = shared.cfg.sync_max_pages;
    if u64::try_from(msg.page).unwrap_or(u64::MAX) >= limit {
        warn!(source = %feed.source_name, entity = %feed.entity, pages = limit,
            "sync stops: the source keeps giving more pages");
        store
            .fail_paging(
                run.id,
                &format!(
                    "stopped after {limit} pages of {} at `{}`: the provider keeps saying there is more (check the list's pagination settings; SWITCHYARD_WORKER__SYNC_MAX_PAGES raises the limit)",
                    feed.entity, feed.source_name
                ),
            )
            .await?;
        return Ok(());
    }
    let listed = match list(shared, &run, &feed.entity, feed.source).await? {
        Ok(p) => p,
        Err(why) => {
            warn!(source = %feed.source_name, entity = %feed.entity, error = %why, "sync stops: the source cannot be listed");
            store
                .fail_paging(
                    run.id,
                    &format!(
                        "listing {} records at `{}` failed: {why}",
                        feed.entity, feed.source_name
                    ),
                )
                .await?;
            return Ok(());
        }
    };
    let mut targets = Vec::with_capacity(feed.targets.len());
    for t in &feed.targets {
        match store.integration(*t).await {
            Ok(i)
                if matches!(
                    i.status,
                    IntegrationStatus::Active | IntegrationStatus::Testing
                ) =>
            {
                targets.push(i)
            }
            Ok(i) => {
                info!(target = %i.name, status = %i.status, "not syncing to a target that is not active")
            }
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Each target's route from this source: its filter and options apply to synced records
    // as to webhooks.
    let routes = store.route_targets(feed.source).await?;
    let route_of = |target: Uuid| {
        routes
            .iter()
            .find(|r| r.entity == feed.entity && r.target_id == target)
    };
    let received_at = Utc::now();
    let direction = if feed.source == run.integration_id {
        Direction::Import
    } else {
        Direction::Export
    };
    let mut jobs = Vec::with_capacity(listed.records.len() * targets.len());
    for r in &listed.records {
        // With a version, the same record version makes the same event in every run (so an
        // overlap between runs is not synced twice); without one, each run syncs it again.
        let event_id = match r.version {
            Some(v) => format!("sync:{}:{}:{}:{v}", feed.source, feed.entity, r.id),
            None => format!("sync:{}:{}:{}:{}", run.id, feed.source, feed.entity, r.id),
        };
        for t in &targets {
            let route = route_of(t.id);
            if let Some(rt) = route
                && let Ok(filter) = RouteFilter::parse(&rt.filter)
                && let Err(why) = filter.check(&r.payload)
            {
                debug!(record = %r.id, target = %t.name, %why, "not synced: the route's filter");
                continue;
            }
            let key = ids::idempotency_key(Some(feed.source), &event_id, t.id, Action::Upsert);
            jobs.push(Envelope {
                v: ENVELOPE_VERSION,
                id: ids::job_id(&key),
                idempotency_key: key,
                tenant: t.tenant.clone(),
                integration_id: t.id,
                provider: t.provider.clone(),
                source_integration_id: Some(feed.source),
                event_id: event_id.clone(),
                event: "sync".into(),
                entity: feed.entity.clone(),
                action: Action::Upsert,
                direction,
                internal_id: r.id.clone(),
                source_version: r.version,
                occurred_at: None,
                received_at,
                payload: r.payload.clone(),
                sync_run_id: Some(run.id),
                route: route.map(|rt| rt.options()).unwrap_or_default(),
                trace: None,
            });
        }
    }
    let Some(added) = store.record_page_jobs(run.id, msg.page, &jobs).await? else {
        return Ok(()); // cancelled meanwhile, or another pager read it
    };
    let messages: Vec<OutgoingMessage> = jobs.iter().map(OutgoingMessage::job).collect();
    for chunk in messages.chunks(500) {
        shared.broker.publish(chunk).await?;
    }
    info!(source = %feed.source_name, entity = %feed.entity, records = listed.records.len(),
        jobs = jobs.len(), new_jobs = added, more = listed.next.is_some(), "sync page read");
    match store
        .advance_run(run.id, msg.page, listed.next.as_deref())
        .await?
    {
        Advance::Next { page } => publish_page(&shared.broker, run.id, page).await?,
        Advance::Done => info!(pages = msg.page + 1, "sync run: every page read"),
        Advance::Stale => {}
    }
    Ok(())
}

/// List one page, retrying retryable failures on the source's retry schedule (at most five
/// tries). The inner `Err` says why the source cannot be listed.
async fn list(
    shared: &Shared,
    run: &SyncRun,
    entity: &str,
    source: Uuid,
) -> Result<Result<ChangedPage, String>, PageError> {
    let Some(src) = shared.connectors.get(source).await? else {
        return Ok(Err("the source integration was deleted".into()));
    };
    let connector = match &src.connector {
        Ok(c) => c.clone(),
        Err(why) => return Ok(Err(why.clone())),
    };
    let q = ListQuery {
        entity,
        since: run.watermark_from,
        cursor: run.cursor.as_deref(),
    };
    let max = src.retry.max_attempts.min(5);
    let account = source.to_string();
    let guard = &shared.cfg.guard;
    let mut attempt = 0;
    loop {
        // The source's rate limits and breaker apply to listing as to its jobs: a refusal
        // waits (bounded) without spending a try.
        match guard.admit(&account, &src.breaker, &src.limits).await {
            Admission::Go => {}
            Admission::Throttled(wait) | Admission::BreakerOpen(wait) => {
                info!(
                    wait_ms = wait.as_millis() as u64,
                    "listing held back by the source's rate limit or breaker"
                );
                tokio::select! {
                    _ = tokio::time::sleep(wait.min(MAX_LIST_DELAY)) => {}
                    _ = shared.stop.cancelled() => return Err(PageError::Stopping),
                }
                continue;
            }
        }
        attempt += 1;
        let clock = std::time::Instant::now();
        let listed = connector.list_changed(q).await;
        let failed = matches!(&listed, Err(e) if e.class == switchyard_core::ErrorClass::Transient);
        guard
            .record(
                &account,
                &src.breaker,
                src.breaker.outcome(failed, clock.elapsed()),
            )
            .await;
        match listed {
            Ok(p) => return Ok(Ok(p)),
            Err(e) if !e.class.is_retryable() => return Ok(Err(e.message)),
            Err(e) => {
                let policy = switchyard_resilience::RetryPolicy {
                    max_attempts: max,
                    ..src.retry.clone()
                };
                match policy.decide(attempt, Duration::ZERO, e.retry_after) {
                    RetryDecision::GiveUp => {
                        return Ok(Err(format!("{} (after {attempt} tries)", e.message)));
                    }
                    RetryDecision::RetryAfter(d) => {
                        warn!(attempt, error = %e.message, delay_ms = d.as_millis() as u64, "listing failed; trying again");
                        tokio::select! {
                            _ = tokio::time::sleep(d.min(MAX_LIST_DELAY)) => {}
                            _ = shared.stop.cancelled() => return Err(PageError::Stopping),
                        }
                    }
                }
            }
        }
    }
}
