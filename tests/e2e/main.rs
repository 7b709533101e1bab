//! End-to-end suite: real RabbitMQ and PostgreSQL, providers mocked with wiremock.
//! Needs the services running (`just services` starts any that are not).

#[path = "../support/mod.rs"]
mod support;

mod connectors;
mod dashboard;
mod failures;
mod identity;
mod ingest_errors;
mod manage;
mod messages;
mod oauth;
mod observe;
mod payments;
mod pipeline;
mod security;
mod sync;
