//! Starting batch syncs, for the scheduler, the HTTP API and the CLI alike.
//!
//! A sync run reads *feeds*: an integration that can list its changed records of one entity
//! (its manifest's `list` endpoint), and the integrations those records go to.
//! - **import** on integration I: I's own changed records, to the targets of I's routes;
//! - **export** on integration T: the changed records of every source that routes into T,
//!   to T only;
//! - **bidirectional**: both.
//!
//! Starting a run creates its row (with the plan and the watermark) and enqueues its first
//! page on the sync queue; workers read the pages ([`SyncPage`]) and enqueue one job per
//! record and target.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use switchyard_broker::{Broker, Exchange, Headers, OutgoingMessage, PublishError, Topology};
use switchyard_core::schedule::Schedule;
use switchyard_core::{Direction, IntegrationStatus};
use switchyard_store::{Feed, Integration, NewRun, Store, StoreError, SyncRun};
use uuid::Uuid;

/// The body of a sync page message: read page `page` of run `run_id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncPage {
    pub v: u32,
    pub run_id: Uuid,
    pub page: i32,
}

impl SyncPage {
    pub fn new(run_id: Uuid, page: i32) -> SyncPage {
        SyncPage { v: 1, run_id, page }
    }

    pub fn message(&self) -> OutgoingMessage {
        OutgoingMessage {
            exchange: Exchange::Jobs,
            routing_key: Topology::SYNC_ROUTING_KEY.into(),
            message_id: format!("{}:{}", self.run_id, self.page),
            body: serde_json::to_vec(self).expect("a sync page serialises"),
            headers: Headers::default(),
        }
    }
}

/// Enqueue page `page` of a run.
pub async fn publish_page(broker: &Broker, run: Uuid, page: i32) -> Result<(), PublishError> {
    broker.publish(&[SyncPage::new(run, page).message()]).await
}

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// The integration cannot sync as it is (status, nothing to read); says what to change.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the sync run {run} was created but could not be enqueued: {error}; retry later")]
    Broker { run: Uuid, error: PublishError },
}

/// What a sync asks for.
#[derive(Debug, Clone)]
pub struct SyncRequest {
    /// `schedule` or `manual`.
    pub trigger: &'static str,
    /// For a scheduled run: (the slot, the slot after it).
    pub slot: Option<(DateTime<Utc>, Option<DateTime<Utc>>)>,
    pub started_by: String,
    /// Only these entities (default: the schedule's, else the integration's, else all).
    pub entities: Option<Vec<String>>,
    /// Read everything, not only what changed since the last successful run.
    pub full: bool,
    pub now: DateTime<Utc>,
}

/// The feeds a sync of `i` reads, for `entities` (`None`: every entity that has one).
pub async fn plan(
    store: &Store,
    i: &Integration,
    entities: Option<&[String]>,
) -> Result<Vec<Feed>, StoreError> {
    let wanted = |e: &str| entities.is_none_or(|list| list.iter().any(|x| x == e));
    let mut feeds: Vec<Feed> = Vec::new();
    if matches!(i.direction, Direction::Import | Direction::Bidirectional) {
        let targets = store.route_targets(i.id).await?;
        let by_entity: BTreeSet<&str> = targets.iter().map(|t| t.entity.as_str()).collect();
        for entity in by_entity {
            if !wanted(entity) || !switchyard_providers::can_list(&i.provider, &i.settings, entity)
            {
                continue;
            }
            let mut ids: Vec<Uuid> = targets
                .iter()
                .filter(|t| t.entity == entity)
                .map(|t| t.target_id)
                .collect();
            ids.sort();
            ids.dedup();
            feeds.push(Feed {
                source: i.id,
                source_name: i.name.clone(),
                entity: entity.to_owned(),
                targets: ids,
            });
        }
    }
    if matches!(i.direction, Direction::Export | Direction::Bidirectional) {
        for (source, entity) in store.route_sources(i.id).await? {
            if wanted(&entity)
                && switchyard_providers::can_list(&source.provider, &source.settings, &entity)
            {
                feeds.push(Feed {
                    source: source.id,
                    source_name: source.name.clone(),
                    entity,
                    targets: vec![i.id],
                });
            }
        }
    }
    Ok(feeds)
}

/// Why a plan is empty, for the operator.
fn nothing_to_read(i: &Integration) -> String {
    let what = match i.direction {
        Direction::Import => "no route from this integration for an entity its manifest can list",
        Direction::Export => {
            "no route into this integration from a source whose manifest can list the entity"
        }
        Direction::Bidirectional => {
            "no route from or into this integration for an entity a manifest can list"
        }
    };
    format!(
        "nothing to sync for `{}` ({} direction): {what}; give the entity a `list` endpoint in settings.entities.<entity>.list and a route",
        i.name, i.direction
    )
}

/// Start a sync of `i` now: create its run and enqueue its first page. `Ok(None)` when the
/// slot was already taken (another scheduler did it).
pub async fn start(
    store: &Store,
    broker: &Broker,
    i: &Integration,
    req: SyncRequest,
) -> Result<Option<SyncRun>, SyncError> {
    if req.trigger == "manual"
        && !matches!(
            i.status,
            IntegrationStatus::Active | IntegrationStatus::Testing
        )
    {
        return Err(SyncError::Refused(format!(
            "integration `{}` is {}; activate it (or test it) before syncing",
            i.name, i.status
        )));
    }
    let schedule = i
        .schedule
        .as_ref()
        .and_then(|s| Schedule::from_json(s).ok());
    let entities: Option<Vec<String>> = req
        .entities
        .clone()
        .or_else(|| schedule.and_then(|s| s.entities))
        .or_else(|| (!i.entities.is_empty()).then(|| i.entities.clone()));
    let feeds = plan(store, i, entities.as_deref()).await?;
    if feeds.is_empty() && req.trigger == "manual" {
        return Err(SyncError::Refused(nothing_to_read(i)));
    }
    let mut names: Vec<String> =
        entities.unwrap_or_else(|| feeds.iter().map(|f| f.entity.clone()).collect());
    names.sort();
    names.dedup();
    let new = NewRun {
        id: Uuid::now_v7(),
        integration_id: i.id,
        tenant: i.tenant.clone(),
        trigger: req.trigger,
        slot: req.slot.map(|(s, _)| s),
        started_by: req.started_by.clone(),
        direction: i.direction.as_str().to_owned(),
        entities: names,
        watermark_to: req.now,
        full: req.full,
        plan: feeds,
    };
    let Some(run) = store.create_run(&new, req.slot).await? else {
        return Ok(None);
    };
    if let Err(e) = launch(store, broker, &run).await {
        // A scheduled run stays pending and the scheduler launches it when the broker is
        // back; a manual one is called off, and its caller told to retry.
        if req.trigger == "manual"
            && let SyncError::Broker { error, .. } = &e
        {
            store.abandon_run(run.id, &error.to_string()).await?;
        }
        return Err(e);
    }
    Ok(Some(store.sync_run(run.id).await?))
}

/// Enqueue a pending run's first page and mark it running (or, with nothing to read, end
/// it as failed with why).
pub async fn launch(store: &Store, broker: &Broker, run: &SyncRun) -> Result<(), SyncError> {
    if !run.plan.is_empty()
        && let Err(error) = publish_page(broker, run.id, 0).await
    {
        return Err(SyncError::Broker { run: run.id, error });
    }
    store.mark_run_started(run.id).await?;
    if run.plan.is_empty() {
        let i = store.integration(run.integration_id).await?;
        store.fail_paging(run.id, &nothing_to_read(&i)).await?;
    }
    Ok(())
}

/// Cancel a run: no further page is read; its jobs not yet started are skipped.
pub async fn cancel(store: &Store, run: Uuid, actor: &str) -> Result<SyncRun, StoreError> {
    store.cancel_run(run, actor).await
}
