//! Failure suite: stops and starts the real broker. Runs alone (one test at a time, after the
//! other suites), since it takes RabbitMQ away from everyone.

#[path = "../support/mod.rs"]
mod support;

mod broker_restart;
mod faults;
mod redis_outage;
